#include "objects/files.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "image/record_file.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/proc.h"

namespace ckpt {

namespace {

// kcmp orders file descriptions (by their kernel address): 0 same, 1 less,
// 2 greater. Used as a comparator, it finds a description among those of
// one inode in O(log n) kcmp calls; a thousand fds on /dev/null would
// otherwise cost half a million.
// An int socket option of our duplicate; -1 if it cannot be read.
int sock_opt(int fd, int opt) {
  int v = -1;
  socklen_t len = sizeof(v);
  if (getsockopt(fd, SOL_SOCKET, opt, &v, &len) != 0) return -1;
  return v;
}

int kcmp_files(int a, int b) {
  static const pid_t me = getpid();
  long r = syscall(SYS_kcmp, me, me, KCMP_FILE, a, b);
  if (r < 0) throw_errno("kcmp");
  return static_cast<int>(r);
}

}  // namespace

FileDumper::FileDumper() : kinds_(make_fd_kinds()) {}

uint32_t FileDumper::find_or_add(DumpContext& ctx, DumpTask& t, int fd, UniqueFd local,
                                 const proc::FdInfo& info) {
  struct stat st {};
  if (fstat(local.get(), &st) != 0) throw_errno("fstat");
  // Descriptions of this inode, kept in kcmp order.
  std::vector<size_t>& same_inode = by_inode_[{st.st_dev, st.st_ino}];
  auto pos = std::lower_bound(
      same_inode.begin(), same_inode.end(), local.get(),
      [&](size_t i, int fd) { return kcmp_files(descs_[i].local.get(), fd) == 1; });
  if (pos != same_inode.end() && kcmp_files(descs_[*pos].local.get(), local.get()) == 0)
    return descs_[*pos].img.id();
  same_inode.insert(pos, descs_.size());

  std::string link = read_link(strfmt("/proc/%d/fd/%d", t.pid, fd));
  Desc d;
  d.dev = st.st_dev;
  d.ino = st.st_ino;
  d.img.set_id(static_cast<uint32_t>(descs_.size() + 1));
  d.img.set_flags(info.flags & ~static_cast<uint32_t>(O_CLOEXEC));
  d.img.set_pos(info.pos);
  FdProbe probe{st, link};
  if (S_ISSOCK(st.st_mode)) {
    probe.sock_family = sock_opt(local.get(), SO_DOMAIN);
    probe.sock_type = sock_opt(local.get(), SO_TYPE);
    probe.sock_protocol = sock_opt(local.get(), SO_PROTOCOL);
  }
  FdKind* kind = nullptr;
  for (auto& k : kinds_)
    if (k->matches(probe)) {
      kind = k.get();
      break;
    }
  in_context(link, [&] {
    if (!kind) {
      if (S_ISSOCK(st.st_mode)) throw Error("this kind of socket is not supported yet");
      if (link.rfind("anon_inode:", 0) == 0)
        throw Error("'" + link.substr(11) + "' files are not supported yet");
      throw Error("this kind of file is not supported");
    }
    kind->dump(FdDumpArgs{ctx, t, fd, local.get(), st, link, info}, &d.img);
  });
  d.local = std::move(local);
  descs_.push_back(std::move(d));
  return descs_.back().img.id();
}

void FileDumper::dump_task(DumpContext& ctx, DumpTask& t) {
  img::FdTable table;
  table.set_pid(static_cast<uint32_t>(t.vpid));
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, t.pid, 0));
  if (pidfd < 0) throw_errno("pidfd_open");
  UniqueFd pidfd_owner(pidfd);
  for (int fd : proc::list_fds(t.pid)) {
    in_context(strfmt("fd %d", fd), [&] {
      int local = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0));
      if (local < 0) throw_errno("pidfd_getfd");
      UniqueFd owner(local);
      proc::FdInfo info = proc::read_fdinfo(t.pid, fd);
      auto* e = table.add_fds();
      e->set_fd(static_cast<uint32_t>(fd));
      e->set_desc_id(find_or_add(ctx, t, fd, std::move(owner), info));
      e->set_cloexec((info.flags & O_CLOEXEC) != 0);
    });
  }
  image::save_message(*ctx.sink, fdtable_name(t.vpid), image::Kind::FdTable, table);
}

void FileDumper::finish(DumpContext& ctx) {
  std::vector<std::pair<const img::FileDesc*, int>> all;
  for (auto& d : descs_) all.emplace_back(&d.img, d.local.get());
  for (auto& k : kinds_) in_context(k->name(), [&] { k->finish_dump(ctx, all); });
  image::RecordWriter files(kFilesImage, image::Kind::Files);
  for (auto& d : descs_) files.add(d.img);
  files.save(*ctx.sink);
}

FileTable::FileTable() : kinds_(make_fd_kinds()) {}

FileTable::~FileTable() {
  if (slots_) munmap(slots_, slots_size_);
}

const FdKind& FileTable::kind_of(const img::FileDesc& d) const {
  for (auto& k : kinds_)
    if (k->owns(d)) return *k;
  throw Error(strfmt("file description %u: unknown kind in image", d.id()));
}

int FileTable::slot_of(uint32_t id) const {
  auto it = slot_index_.find(id);
  return it == slot_index_.end() ? kNotOpen : slots_[it->second];
}

void FileTable::load(const image::ImageSource& src) {
  st_.src = &src;
  {
    image::RecordReader r(src, kFilesImage, image::Kind::Files);
    img::FileDesc d;
    while (r.next(d)) st_.descs[d.id()] = d;
  }
  for (auto& k : kinds_) in_context(k->name(), [&] { k->load(src); });
  for (const auto& [id, d] : st_.descs) kind_of(d);  // every one known, before opening any
  slots_size_ = std::max<size_t>(1, st_.descs.size()) * sizeof(int);
  void* p = mmap(nullptr, slots_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw_errno("map the file description table");
  slots_ = static_cast<int*>(p);
  int i = 0;
  for (const auto& [id, d] : st_.descs) {
    slot_index_[id] = i;
    slots_[i++] = kNotOpen;
  }
}

int FileTable::holder_fd_number(const img::FdTable& table) {
  int max_fd = 2;
  for (const auto& e : table.fds()) max_fd = std::max(max_fd, static_cast<int>(e.fd()));
  return max_fd + 1;
}

std::string FileTable::runs_in_stub(const img::FdTable& table,
                                    const std::vector<pid_t>& tree_pids) const {
  for (const auto& e : table.fds()) {
    auto it = st_.descs.find(e.desc_id());
    if (it == st_.descs.end()) continue;  // install names it
    const FdKind& k = kind_of(it->second);
    if (k.runs_in_stub(it->second, tree_pids)) return strfmt("fd %u: %s", e.fd(), k.name());
  }
  return "";
}

void FileTable::reserve(const std::vector<img::FdTable>& tables) {
  int max_fd = 2;
  for (const auto& t : tables)
    for (const auto& e : t.fds()) max_fd = std::max(max_fd, static_cast<int>(e.fd()));
  base_ = max_fd + 1;
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rlim_t need = static_cast<rlim_t>(base_) + st_.descs.size() + 64;
  if (rl.rlim_cur < need) {
    rl.rlim_cur = std::min(need, rl.rlim_max);
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

void FileTable::open_all(const std::vector<img::FdTable>& tables,
                         const std::vector<pid_t>& tree_pids, const GhostTable* ghosts) {
  st_.tree_pids = tree_pids;
  st_.ghosts = ghosts;
  if (!base_) reserve(tables);
  for (const auto& [id, d] : st_.descs)
    if (slots_[slot_index_.at(id)] == kNotOpen) open_one(id, d);
}

std::map<uint32_t, int> FileTable::open_early(
    const std::function<bool(const img::FileDesc&)>& pick) {
  std::map<uint32_t, int> out;
  for (const auto& [id, d] : st_.descs) {
    if (!pick(d)) continue;
    if (slots_[slot_index_.at(id)] == kNotOpen) open_one(id, d);
    auto it = fds_.find(id);
    if (it == fds_.end()) throw Error(strfmt("file description %u is opened by its process", id));
    out[id] = it->second.get();
  }
  return out;
}

void FileTable::open_one(uint32_t id, const img::FileDesc& d) {
  const FdKind& kind = kind_of(d);
  UniqueFd fd = in_context(strfmt("file description %u (%s)", id, kind.name()),
                           [&] { return const_cast<FdKind&>(kind).open(d, st_); });
  if (!fd) {
    slots_[slot_index_.at(id)] = kDeferred;
    return;
  }
  slots_[slot_index_.at(id)] = fd.get();
  fds_[id] = std::move(fd);
}

void FileTable::before_resume() {
  for (auto& k : kinds_) in_context(k->name(), [&] { k->before_resume(); });
}

void FileTable::install(const img::FdTable& table, int holder_pidfd) const {
  // Everything this stub inherited goes first, except the holder's pidfd,
  // moved above every number the table uses. From then on the lowest free
  // number is never above the fd being installed (ascending order), so a
  // temporary fd can never land on one already in place.
  int holder = holder_fd_number(table);
  if (holder_pidfd != holder && dup3(holder_pidfd, holder, O_CLOEXEC) < 0)
    throw_errno("move the holder's pidfd");
  syscall(SYS_close_range, 0, holder - 1, 0);
  syscall(SYS_close_range, holder + 1, ~0U, 0);

  std::vector<const img::FdEntry*> order;
  for (const auto& e : table.fds()) order.push_back(&e);
  std::sort(order.begin(), order.end(),
            [](const img::FdEntry* a, const img::FdEntry* b) { return a->fd() < b->fd(); });
  std::map<uint32_t, int> placed;  // description id -> first fd installed with it
  for (const img::FdEntry* e : order) {
    uint32_t id = e->desc_id();
    int fd = static_cast<int>(e->fd());
    in_context(strfmt("fd %d", fd), [&] {
      int tmp;
      if (auto p = placed.find(id); p != placed.end()) {
        tmp = fcntl(p->second, F_DUPFD_CLOEXEC, 0);
        if (tmp < 0) throw_errno("dup");
      } else if (int slot = slot_of(id); slot >= 0) {
        tmp = static_cast<int>(syscall(SYS_pidfd_getfd, holder, slot, 0));
        if (tmp < 0) throw_errno(strfmt("take file description %u (pidfd_getfd)", id));
      } else if (slot == kDeferred) {
        const img::FileDesc& d = st_.descs.at(id);
        tmp = kind_of(d).open_in_stub(d, st_).release();
      } else {
        throw Error(strfmt("unknown file description %u", id));
      }
      int flags = e->cloexec() ? O_CLOEXEC : 0;
      if (tmp != fd) {
        if (dup3(tmp, fd, flags) < 0) {
          int err = errno;
          close(tmp);
          throw Error("dup3", err);
        }
        close(tmp);
      } else if (fcntl(fd, F_SETFD, e->cloexec() ? FD_CLOEXEC : 0) != 0) {
        throw_errno("set close-on-exec");
      }
      placed.emplace(id, fd);
    });
  }
  for (auto& k : kinds_) in_context(k->name(), [&] { k->after_install(table, st_); });
}

}  // namespace ckpt
