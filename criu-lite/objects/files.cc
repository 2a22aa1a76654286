#include "objects/files.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "image/record_file.h"
#include "objects/pipes.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/proc.h"

namespace ckpt {

namespace {

bool same_description(int a, int b) {
  pid_t me = getpid();
  return syscall(SYS_kcmp, me, me, KCMP_FILE, a, b) == 0;
}

// Terminals need --shell-job or pty support, which is not here yet.
bool is_tty(dev_t rdev) {
  unsigned maj = major(rdev);
  return maj == 4 || maj == 5 || (maj >= 136 && maj <= 143);
}

}  // namespace

uint32_t FileDumper::find_or_add(pid_t pid, int fd, UniqueFd local) {
  struct stat st{};
  if (fstat(local.get(), &st) != 0) throw_errno("fstat");
  for (auto& d : descs_)
    if (d.dev == st.st_dev && d.ino == st.st_ino && same_description(d.local.get(), local.get()))
      return d.img.id();

  std::string link = read_link(strfmt("/proc/%d/fd/%d", pid, fd));
  proc::FdInfo info = proc::read_fdinfo(pid, fd);
  Desc d;
  d.dev = st.st_dev;
  d.ino = st.st_ino;
  d.owner = strfmt("pid %d fd %d", pid, fd);
  d.img.set_id(static_cast<uint32_t>(descs_.size() + 1));
  d.img.set_flags(info.flags & ~static_cast<uint32_t>(O_CLOEXEC));
  d.img.set_pos(info.pos);
  auto unsupported = [&](const char* what) {
    throw Error(strfmt("%s (%s): %s", d.owner.c_str(), link.c_str(), what));
  };
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
    if (st.st_nlink == 0 || link.size() > 10 && link.compare(link.size() - 10, 10, " (deleted)") == 0)
      unsupported("open deleted files are not supported yet");
    if (link.empty() || link[0] != '/') unsupported("file without a path");
    auto* r = d.img.mutable_reg();
    r->set_path(link);
    r->set_size(static_cast<uint64_t>(st.st_size));
    r->set_mode(st.st_mode);
    r->set_dev(st.st_dev);
    r->set_ino(st.st_ino);
  } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
    if (is_tty(st.st_rdev)) unsupported("terminals are not supported yet (use a tree without a tty)");
    if (link.empty() || link[0] != '/') unsupported("device without a path");
    auto* c = d.img.mutable_chr();
    c->set_path(link);
    c->set_rdev(static_cast<uint32_t>(st.st_rdev));
  } else if (S_ISFIFO(st.st_mode)) {
    if (link.rfind("pipe:", 0) == 0) {
      d.img.mutable_pipe()->set_pipe_id(st.st_ino);
    } else {
      auto* f = d.img.mutable_fifo();
      f->set_path(link);
      f->set_pipe_id(st.st_ino);
    }
  } else if (S_ISSOCK(st.st_mode)) {
    unsupported("sockets are not supported yet");
  } else if (link.rfind("anon_inode:", 0) == 0) {
    unsupported(("'" + link.substr(11) + "' files are not supported yet").c_str());
  } else {
    unsupported("this kind of file is not supported");
  }
  d.local = std::move(local);
  descs_.push_back(std::move(d));
  return descs_.back().img.id();
}

void FileDumper::dump_task(DumpContext& ctx, DumpTask& t) {
  img::FdTable table;
  table.set_pid(static_cast<uint32_t>(t.pid));
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, t.pid, 0));
  if (pidfd < 0) throw_errno("pidfd_open");
  UniqueFd pidfd_owner(pidfd);
  for (int fd : proc::list_fds(t.pid)) {
    in_context(strfmt("fd %d", fd), [&] {
      int local = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0));
      if (local < 0) throw_errno("pidfd_getfd");
      UniqueFd owner(local);
      int fdflags = 0;
      proc::FdInfo info = proc::read_fdinfo(t.pid, fd);
      fdflags = (info.flags & O_CLOEXEC) ? 1 : 0;
      auto* e = table.add_fds();
      e->set_fd(static_cast<uint32_t>(fd));
      e->set_desc_id(find_or_add(t.pid, fd, std::move(owner)));
      e->set_cloexec(fdflags != 0);
    });
  }
  image::save_message(*ctx.sink, fdtable_name(t.pid), image::Kind::FdTable, table);
}

void FileDumper::finish(DumpContext& ctx) {
  image::RecordWriter files(kFilesImage, image::Kind::Files);
  image::RecordWriter pipes(kPipeDataImage, image::Kind::PipeData);
  // pipe id -> (has read end, has write end, a description to read from)
  struct Ends {
    bool r = false, w = false;
    int read_fd = -1;
    std::string owner;
  };
  std::map<uint64_t, Ends> ends;
  for (auto& d : descs_) {
    files.add(d.img);
    uint64_t id = 0;
    if (d.img.has_pipe()) id = d.img.pipe().pipe_id();
    else if (d.img.has_fifo()) id = d.img.fifo().pipe_id();
    else continue;
    Ends& e = ends[id];
    uint32_t acc = d.img.flags() & O_ACCMODE;
    if (acc == O_RDONLY || acc == O_RDWR) {
      e.r = true;
      e.read_fd = d.local.get();
    }
    if (acc == O_WRONLY || acc == O_RDWR) e.w = true;
    if (e.owner.empty()) e.owner = d.owner;
  }
  for (auto& d : descs_) {
    if (!d.img.has_pipe()) continue;
    Ends& e = ends[d.img.pipe().pipe_id()];
    if (!e.r || !e.w)
      throw Error(strfmt("%s: pipe:[%llu] has its %s end outside the dumped tree; "
                         "dump the process at the other end too",
                         e.owner.c_str(), static_cast<unsigned long long>(d.img.pipe().pipe_id()),
                         e.r ? "write" : "read"));
  }
  for (auto& [id, e] : ends) {
    if (e.read_fd < 0) continue;
    img::PipeData pd = in_context(e.owner, [&] { return read_pipe_data(e.read_fd, id); });
    if (!pd.data().empty() || pd.capacity() != 65536) pipes.add(pd);
  }
  files.save(*ctx.sink);
  pipes.save(*ctx.sink);
}

namespace {
UniqueFd open_regular(const img::FileDesc& d) {
  uint32_t oflags = d.flags() & ~static_cast<uint32_t>(O_CREAT | O_EXCL | O_TRUNC | O_CLOEXEC);
  UniqueFd f = open_or_throw(d.reg().path(), static_cast<int>(oflags));
  struct stat st{};
  if (fstat(f.get(), &st) == 0 && S_ISREG(st.st_mode) &&
      static_cast<uint64_t>(st.st_size) != d.reg().size())
    LOG_DEBUG("%s: size %lld differs from %llu at dump", d.reg().path().c_str(),
              static_cast<long long>(st.st_size), static_cast<unsigned long long>(d.reg().size()));
  if (lseek(f.get(), static_cast<off_t>(d.pos()), SEEK_SET) < 0 && errno != ESPIPE &&
      errno != EINVAL)
    throw_errno("seek " + d.reg().path());
  return f;
}

// "/proc/1234/..." with 1234 a pid of the restored tree.
bool under_tree_proc(const std::string& path, const std::vector<pid_t>& pids) {
  if (path.rfind("/proc/", 0) != 0) return false;
  pid_t pid = static_cast<pid_t>(atoi(path.c_str() + 6));
  return std::find(pids.begin(), pids.end(), pid) != pids.end();
}
}  // namespace

void FileTable::open_all(const image::ImageSource& src, const std::vector<img::FdTable>& tables,
                         const std::vector<pid_t>& tree_pids) {
  std::map<uint64_t, img::PipeData> data;
  {
    image::RecordReader r(src, kPipeDataImage, image::Kind::PipeData);
    img::PipeData pd;
    while (r.next(pd)) data[pd.pipe_id()] = pd;
  }
  PipeSet pipes(std::move(data));
  int max_fd = 2;
  for (const auto& t : tables)
    for (const auto& e : t.fds()) max_fd = std::max(max_fd, static_cast<int>(e.fd()));
  base_ = max_fd + 1;

  std::vector<img::FileDesc> descs;
  {
    image::RecordReader r(src, kFilesImage, image::Kind::Files);
    img::FileDesc d;
    while (r.next(d)) descs.push_back(d);
  }
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rlim_t need = static_cast<rlim_t>(base_) + descs.size() + 64;
  if (rl.rlim_cur < need) {
    rl.rlim_cur = std::min(need, rl.rlim_max);
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  for (const auto& d : descs) {
    if (d.has_reg() && under_tree_proc(d.reg().path(), tree_pids)) {
      deferred_[d.id()] = d;
      continue;
    }
    UniqueFd fd = in_context(strfmt("file description %u", d.id()), [&] {
      uint32_t oflags = d.flags() & ~static_cast<uint32_t>(O_CREAT | O_EXCL | O_TRUNC | O_CLOEXEC);
      if (d.has_reg()) return open_regular(d);
      if (d.has_chr()) return open_or_throw(d.chr().path(), static_cast<int>(oflags));
      if (d.has_pipe()) return pipes.open_end(d.pipe().pipe_id(), oflags);
      if (d.has_fifo())
        return pipes.open_fifo(d.fifo().path(), d.fifo().pipe_id(), oflags, &helpers_);
      throw Error("unknown file kind in image");
    });
    int moved = fcntl(fd.get(), F_DUPFD_CLOEXEC, base_);
    if (moved < 0) throw_errno(strfmt("file description %u: move above fd %d", d.id(), base_));
    fds_[d.id()] = UniqueFd(moved);
  }
}

void FileTable::install(const img::FdTable& table) const {
  std::set<int> wanted;
  std::map<uint32_t, UniqueFd> late;  // deferred descriptions opened here
  for (const auto& e : table.fds()) {
    auto d = deferred_.find(e.desc_id());
    if (d != deferred_.end() && !late.count(e.desc_id())) {
      UniqueFd f = in_context(strfmt("fd %u", e.fd()), [&] { return open_regular(d->second); });
      int moved = fcntl(f.get(), F_DUPFD_CLOEXEC, base_);
      if (moved < 0) throw_errno(strfmt("fd %u: move above fd %d", e.fd(), base_));
      late[e.desc_id()] = UniqueFd(moved);
    }
    int src = -1;
    if (auto l = late.find(e.desc_id()); l != late.end()) src = l->second.get();
    if (auto f = fds_.find(e.desc_id()); f != fds_.end()) src = f->second.get();
    if (src < 0) throw Error(strfmt("fd %u: unknown file description %u", e.fd(), e.desc_id()));
    int fd = static_cast<int>(e.fd());
    if (dup3(src, fd, e.cloexec() ? O_CLOEXEC : 0) < 0)
      throw_errno(strfmt("fd %d: dup3", fd));
    wanted.insert(fd);
  }
  // Close everything else this stub inherited, table included.
  int next = 0;
  for (int fd : wanted) {
    if (fd > next) syscall(SYS_close_range, next, fd - 1, 0);
    next = fd + 1;
  }
  syscall(SYS_close_range, next, ~0U, 0);
}

}  // namespace ckpt
