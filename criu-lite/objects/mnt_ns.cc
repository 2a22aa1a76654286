#include "objects/mnt_ns.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include "image/record_file.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/mountinfo.h"
#include "sys/mounts.h"

namespace ckpt {

namespace {

using mountinfo::Entry;
using mountinfo::path_join;
using mountinfo::path_rel;
using mountinfo::path_under;

// Filesystems whose new instance carries no files of its own: a fresh
// mount of the same type (in the restored namespaces) is the same thing.
bool is_pseudo(const std::string& fstype) {
  return fstype == "proc" || fstype == "sysfs" || fstype == "devpts" || fstype == "mqueue" ||
         fstype == "cgroup2";
}

std::string describe(const Entry& m) {
  return "mount at " + m.mount_point + " (" + m.fstype + ", dev " + mountinfo::dev_string(m) + ")";
}

// Parents before children, mountinfo order otherwise (a subtree moved under
// a newer mount lists the child first).
std::vector<Entry> parents_first(const std::vector<Entry>& in) {
  std::set<int> ids;
  for (const Entry& e : in) ids.insert(e.mnt_id);
  std::vector<Entry> out;
  std::set<int> placed;
  std::vector<bool> done(in.size());
  while (out.size() < in.size()) {
    size_t before = out.size();
    for (size_t i = 0; i < in.size(); i++) {
      if (done[i]) continue;
      const Entry& e = in[i];
      if (ids.count(e.parent_id) && !placed.count(e.parent_id) && e.parent_id != e.mnt_id) continue;
      out.push_back(e);
      placed.insert(e.mnt_id);
      done[i] = true;
    }
    if (out.size() == before) throw Error("mountinfo: mounts form a cycle");
  }
  return out;
}

// The host's mount table (ckpt's own namespace), to find host paths.
class HostView {
 public:
  explicit HostView(std::vector<Entry> mounts) : mounts_(std::move(mounts)) {
    for (const Entry& e : mounts_)
      if (e.prop.shared) groups_.insert(e.prop.shared);
  }
  const std::vector<Entry>& mounts() const { return mounts_; }
  bool is_host_group(uint32_t g) const { return g && groups_.count(g); }

  // A path in the host's namespace that shows the directory (or file) m
  // shows: the same filesystem, mounted at a root that contains m's root,
  // and not hidden under another mount. "" if none.
  std::string find_path(const Entry& m) const {
    std::string best;
    size_t best_root = 0;
    for (size_t i = 0; i < mounts_.size(); i++) {
      const Entry& h = mounts_[i];
      if (!h.same_dev(m) || !path_under(m.root, h.root) || covered(i)) continue;
      std::string p = path_join(h.mount_point, path_rel(m.root, h.root));
      if (deepest(p) != i) continue;
      if (best.empty() || h.root.size() > best_root) {
        best = p;
        best_root = h.root.size();
      }
    }
    return best;
  }

 private:
  // Another mount sits right on top of mounts_[i].
  bool covered(size_t i) const {
    for (size_t j = 0; j < mounts_.size(); j++)
      if (j != i && mounts_[j].parent_id == mounts_[i].mnt_id &&
          mounts_[j].mount_point == mounts_[i].mount_point)
        return true;
    return false;
  }
  // The index of the mount a lookup of path ends in.
  size_t deepest(const std::string& path) const {
    size_t best = mounts_.size();
    for (size_t i = 0; i < mounts_.size(); i++) {
      if (!path_under(path, mounts_[i].mount_point) || covered(i)) continue;
      if (best == mounts_.size() ||
          mounts_[i].mount_point.size() >= mounts_[best].mount_point.size())
        best = i;
    }
    return best;
  }

  std::vector<Entry> mounts_;
  std::set<uint32_t> groups_;
};

// The bottom mount at "/" (its parent is not in the table).
const Entry* root_mount(const std::vector<Entry>& ms) {
  std::set<int> ids;
  for (const Entry& e : ms) ids.insert(e.mnt_id);
  for (const Entry& e : ms)
    if (e.mount_point == "/" && !ids.count(e.parent_id)) return &e;
  for (const Entry& e : ms)
    if (e.mount_point == "/") return &e;
  return nullptr;
}

void set_propagation_fields(const Entry& e, const HostView& host, img::Mount* m) {
  m->set_shared(e.prop.shared);
  m->set_master(e.prop.master);
  m->set_master_is_host(host.is_host_group(e.prop.master));
  m->set_shared_with_host(host.is_host_group(e.prop.shared));
  m->set_unbindable(e.prop.unbindable);
}

img::Mount classify(const Entry& e, const std::vector<const Entry*>& earlier,
                    const HostView& host) {
  img::Mount m;
  m.set_id(static_cast<uint32_t>(e.mnt_id));
  m.set_parent_id(static_cast<uint32_t>(e.parent_id));
  m.set_mount_point(e.mount_point);
  m.set_fstype(e.fstype);
  m.set_source(e.source);
  m.set_root(e.root);
  m.set_dev(mountinfo::dev_string(e));
  m.set_attrs(e.attrs);
  m.set_sb_readonly(e.sb_readonly);
  m.set_sb_data(e.sb_data);
  set_propagation_fields(e, host, &m);
  if (!e.unknown_options.empty())
    throw Error(describe(e) + ": per-mount option '" + e.unknown_options[0] + "' is not supported");

  // Part of a filesystem the container already has mounted: bind it from
  // there, so a new instance is made once (the widest mount of it).
  const Entry* from = nullptr;
  for (const Entry* c : earlier)
    if (c->same_dev(e) && path_under(e.root, c->root) &&
        (!from || c->root.size() < from->root.size()))
      from = c;
  if (from) {
    m.set_kind(img::MOUNT_BIND);
    m.set_bind_of(static_cast<uint32_t>(from->mnt_id));
    m.set_bind_path(path_rel(e.root, from->root));
    return m;
  }
  if (is_pseudo(e.fstype)) {
    if (e.root != "/")
      throw Error(describe(e) + ": a bind of " + e.root + " of a " + e.fstype +
                  " not mounted whole in the container is not supported");
    m.set_kind(img::MOUNT_NEW);
    return m;
  }
  std::string hp = host.find_path(e);
  if (!hp.empty()) {
    m.set_kind(img::MOUNT_BIND_HOST);
    m.set_host_path(hp);
    return m;
  }
  if (e.fstype == "tmpfs") {
    if (e.root != "/")
      throw Error(describe(e) + ": a bind of " + e.root +
                  " of a tmpfs not mounted whole in the container is not supported");
    m.set_kind(img::MOUNT_NEW);
    return m;
  }
  throw Error(describe(e) + ": fs type " + e.fstype +
              " is not supported (only tmpfs, proc, sysfs, devpts, mqueue, cgroup2 and binds of "
              "paths the host has mounted)");
}

// Host-root containers: which of the container's mounts came with the copy
// of the host's namespace. A container mount matches a host mount with the
// same mount point, filesystem and root, each host mount at most once.
std::vector<bool> inherited_from_host(const std::vector<Entry>& ct, const HostView& host) {
  std::vector<bool> used(host.mounts().size()), out(ct.size());
  for (size_t i = 0; i < ct.size(); i++) {
    for (size_t j = 0; j < host.mounts().size(); j++) {
      const Entry& h = host.mounts()[j];
      if (!used[j] && h.mount_point == ct[i].mount_point && h.same_dev(ct[i]) &&
          h.root == ct[i].root) {
        used[j] = true;
        out[i] = true;
        break;
      }
    }
  }
  return out;
}

// Kills and reaps a helper child unless it has been waited for.
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid) : pid_(pid) {}
  ChildGuard(const ChildGuard&) = delete;
  ~ChildGuard() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      retry_eintr([&] { return waitpid(pid_, nullptr, 0); });
    }
  }
  int wait() {
    int st = 0;
    if (retry_eintr([&] { return waitpid(pid_, &st, 0); }) < 0) throw_errno("waitpid");
    pid_ = -1;
    return st;
  }

 private:
  pid_t pid_;
};

// Detached clones of the given mounts of pid's namespace, each without the
// mounts inside it, so the files under a mount point can be read too. A
// helper child enters the namespace (setns needs a single-threaded process)
// and hands the clones back over a socket.
std::vector<UniqueFd> clone_mounts(pid_t pid, const std::vector<const img::Mount*>& ms) {
  UniqueFd ns = open_or_throw(strfmt("/proc/%d/ns/mnt", pid), O_RDONLY);
  UniqueFd root = open_or_throw(strfmt("/proc/%d/root", pid), O_PATH | O_DIRECTORY);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) throw_errno("socketpair");
  UniqueFd ours(sv[0]), theirs(sv[1]);
  std::vector<std::string> paths;
  for (const img::Mount* m : ms) paths.push_back(m->mount_point());
  pid_t child = fork();
  if (child < 0) throw_errno("fork");
  if (child == 0) {
    // Syscalls only, and nothing may unwind into the parent's frames: this
    // is a fork of a possibly threaded process.
    ours.reset();
    try {
      int32_t st = 0;
      if (setns(ns.get(), CLONE_NEWNS) != 0 || fchdir(root.get()) != 0 || chroot(".") != 0)
        st = errno;
      for (size_t i = 0; i < paths.size(); i++) {
        if (st) {
          sysmnt::send_fd(theirs.get(), -1, st);
          continue;
        }
        struct statx stx {};
        if (statx(AT_FDCWD, paths[i].c_str(), 0, STATX_MNT_ID, &stx) != 0) {
          sysmnt::send_fd(theirs.get(), -1, errno);
          continue;
        }
        if (stx.stx_mnt_id != ms[i]->id()) {
          sysmnt::send_fd(theirs.get(), -1, -1);  // covered by another mount
          continue;
        }
        int fd = open_tree(AT_FDCWD, paths[i].c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        sysmnt::send_fd(theirs.get(), fd, fd < 0 ? errno : 0);
        if (fd >= 0) close(fd);
      }
      _exit(st ? 1 : 0);
    } catch (...) {
      _exit(1);
    }
  }
  ChildGuard guard(child);
  theirs.reset();
  std::vector<UniqueFd> out;
  for (size_t i = 0; i < ms.size(); i++) {
    int32_t st = 0;
    UniqueFd fd = sysmnt::recv_fd(ours.get(), &st);
    std::string what = "mount at " + paths[i] + " (" + ms[i]->fstype() + ")";
    if (st == -1) throw Error(what + ": another mount covers it, its files cannot be read");
    if (st) throw Error(what + ": clone it in the container's namespace", st);
    out.push_back(std::move(fd));
  }
  guard.wait();
  return out;
}

// sink null: the mounts only, no tmpfs contents read.
img::MntNs read_mntns(pid_t pid, image::ImageSink* sink, int zstd_level) {
  return in_context(strfmt("mount namespace of pid %d", pid), [&] {
    HostView host(mountinfo::read_self());
    std::vector<Entry> ct = parents_first(mountinfo::read(pid));
    const Entry* croot = root_mount(ct);
    const Entry* hroot = root_mount(host.mounts());
    if (!croot || !hroot) throw Error("no mount at /");

    img::MntNs ns;
    ns.set_host_root(croot->same_dev(*hroot) && croot->root == hroot->root);
    std::vector<bool> inherited(ct.size());
    if (ns.host_root()) inherited = inherited_from_host(ct, host);
    std::vector<const Entry*> mine;
    for (size_t i = 0; i < ct.size(); i++) {
      const Entry& e = ct[i];
      if (inherited[i]) {
        img::InheritedMount* im = ns.add_inherited();
        im->set_mount_point(e.mount_point);
        im->set_root(e.root);
        im->set_shared(e.prop.shared);
        im->set_master(e.prop.master);
        im->set_master_is_host(host.is_host_group(e.prop.master));
        im->set_shared_with_host(host.is_host_group(e.prop.shared));
        im->set_unbindable(e.prop.unbindable);
        continue;
      }
      *ns.add_mounts() = classify(e, mine, host);
      mine.push_back(&e);
    }
    if (!ns.host_root()) {
      const img::Mount& r = ns.mounts(0);
      if (r.mount_point() != "/") throw Error("the first mount is not the root");
      ns.set_root_host_path(r.host_path());
    }

    // The files of every new tmpfs.
    std::vector<const img::Mount*> tmpfs;
    uint32_t next_id = 1;
    for (img::Mount& m : *ns.mutable_mounts())
      if (m.kind() == img::MOUNT_NEW && m.fstype() == "tmpfs") {
        m.set_tmpfs_id(next_id++);
        tmpfs.push_back(&m);
      }
    if (!tmpfs.empty() && sink) {
      std::vector<UniqueFd> roots = clone_mounts(pid, tmpfs);
      for (size_t i = 0; i < tmpfs.size(); i++) {
        std::string where = "tmpfs at " + tmpfs[i]->mount_point();
        in_context(where, [&] {
          dump_tmpfs(roots[i].get(), tmpfs[i]->tmpfs_id(), *sink, zstd_level, where);
        });
      }
    }
    LOG_DEBUG("mount namespace of %d: %s, %d mounts saved, %d inherited", pid,
              ns.host_root() ? "host root" : "rootfs", ns.mounts_size(), ns.inherited_size());
    return ns;
  });
}
}  // namespace

img::MntNs dump_mntns(pid_t pid, image::ImageSink& sink, int zstd_level) {
  return read_mntns(pid, &sink, zstd_level);
}

img::MntNs mntns_layout(pid_t pid) {
  return read_mntns(pid, nullptr, 0);
}

void save_mntns(image::ImageSink& sink, const img::MntNs& ns) {
  image::save_message(sink, kMntNsImage, image::Kind::MntNs, ns);
}

img::MntNs load_mntns(const image::ImageSource& src) {
  img::MntNs ns;
  image::load_message(src, kMntNsImage, image::Kind::MntNs, ns);
  return ns;
}

void check_mntns_images(const img::MntNs& ns, const image::ImageSource& src) {
  std::set<uint32_t> ids;
  for (const img::Mount& m : ns.mounts()) {
    if (m.kind() == img::MOUNT_BIND && !ids.count(m.bind_of()))
      throw Error("mntns.img: mount at " + m.mount_point() +
                  " binds a mount not restored before it");
    ids.insert(m.id());
    if (m.kind() == img::MOUNT_NEW && m.fstype() == "tmpfs")
      in_context("tmpfs at " + m.mount_point(), [&] { check_tmpfs_images(m.tmpfs_id(), src); });
  }
  if (!ns.host_root() && (ns.mounts_size() == 0 || ns.mounts(0).mount_point() != "/"))
    throw Error("mntns.img: no root mount");
}

// ---- restore -----------------------------------------------------------------

namespace {

// Removes the staging directory (and what is mounted on it) unless the
// restore got as far as pivot_root.
class Stage {
 public:
  Stage() {
    const char* tmp = getenv("TMPDIR");
    parent_ = tmp && *tmp ? tmp : "/tmp";
    parent_fd_ = open_or_throw(parent_, O_PATH | O_DIRECTORY);
    std::string templ = path_join(parent_, ".ckpt-mntns-XXXXXX");
    if (!mkdtemp(templ.data())) throw_errno("mkdtemp " + templ);
    path_ = templ;
    name_ = path_rel(path_, parent_);
  }
  Stage(const Stage&) = delete;
  ~Stage() {
    // Everything stacked on the staging directory, when the restore failed
    // before pivot_root moved the root away from it.
    for (int i = 0; !pivoted_ && i < 64 && umount2(path_.c_str(), MNT_DETACH) == 0; i++) {
    }
    if (unlinkat(parent_fd_.get(), name_.c_str(), AT_REMOVEDIR) != 0)
      LOG_WARN("remove staging directory %s: %s", path_.c_str(), strerror(errno));
  }
  const std::string& path() const { return path_; }
  void pivoted() { pivoted_ = true; }

 private:
  std::string parent_, path_, name_;
  UniqueFd parent_fd_;
  bool pivoted_ = false;
};

unsigned long sb_flags(const img::Mount& m) {
  // MS_NOSUID etc. are per-mount and set with mount_setattr afterwards.
  return m.sb_readonly() && m.fstype() != "tmpfs" ? MS_RDONLY : 0;
}

struct Built {
  const img::Mount* m;
  UniqueFd fd;  // O_PATH on the mount's root: names it even once covered
  std::string what;
};

class Builder {
 public:
  Builder(const img::MntNs& ns, const image::ImageSource& src) : ns_(ns), src_(src) {}

  void run() {
    // Nothing we do may reach the host: every mount of the copy becomes a
    // slave (receives from the host, sends nothing).
    sysmnt::mount_or_throw("none", "/", "", MS_REC | MS_SLAVE, "");
    plan_groups();
    if (ns_.host_root()) {
      open_inherited();
      for (const img::Mount& m : ns_.mounts()) build(m, m.mount_point());
      set_groups();
      if (chdir("/") != 0) throw_errno("chdir /");
      return;
    }
    Stage stage;
    for (const img::Mount& m : ns_.mounts()) build(m, path_join(stage.path(), m.mount_point()));
    in_context("pivot_root into " + stage.path(), [&] {
      if (fchdir(built_.at(ns_.mounts(0).id()).fd.get()) != 0) throw_errno("chdir");
      if (syscall(SYS_pivot_root, ".", ".") != 0) throw_errno("pivot_root");
      stage.pivoted();
      // The old root now sits on top of the new one: drop it and everything under it.
      if (umount2(".", MNT_DETACH) != 0) throw_errno("detach the old root");
      if (chdir("/") != 0) throw_errno("chdir /");
    });
    set_groups();
  }

 private:
  // Mounts that join a container peer group get the group from its first
  // member (the one with the widest root), so they start private.
  void plan_groups() {
    for (const img::Mount& m : ns_.mounts())
      if (m.shared() && !m.shared_with_host()) {
        auto& rep = group_rep_[m.shared()];
        if (!rep.m || m.root().size() < rep.m->root().size()) rep.m = &m;
      }
  }

  void build(const img::Mount& m, const std::string& target) {
    std::string what = "mount at " + m.mount_point() + " (" + m.fstype() + ")";
    in_context(what, [&] {
      switch (m.kind()) {
        case img::MOUNT_NEW:
          sysmnt::mount_or_throw(m.source(), target, m.fstype(), sb_flags(m), m.sb_data());
          break;
        case img::MOUNT_BIND_HOST: {
          struct stat st {};
          if (stat(m.host_path().c_str(), &st) != 0)
            throw_errno("bind source " + m.host_path() + " on this host");
          sysmnt::mount_or_throw(m.host_path(), target, "", MS_BIND, "");
          break;
        }
        case img::MOUNT_BIND: {
          auto it = built_.find(m.bind_of());
          if (it == built_.end()) throw Error("binds a mount not restored before it");
          std::string rel = m.bind_path().empty() ? "" : m.bind_path();
          UniqueFd tree =
              sysmnt::open_tree(it->second.fd.get(), rel, OPEN_TREE_CLONE | AT_EMPTY_PATH,
                                it->second.what + " path " + (rel.empty() ? "/" : rel));
          sysmnt::move_mount(tree.get(), "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH,
                             "onto " + target);
          break;
        }
        default:
          throw Error("unknown mount kind");
      }
      UniqueFd fd = open_or_throw(target, O_PATH);
      if (m.kind() == img::MOUNT_NEW && m.fstype() == "tmpfs") {
        UniqueFd dir = openat_or_throw(fd.get(), ".", O_RDONLY | O_DIRECTORY);
        fill_tmpfs(dir.get(), m.tmpfs_id(), src_, "tmpfs at " + m.mount_point());
        if (m.sb_readonly())
          sysmnt::mount_or_throw("none", target, "", MS_REMOUNT | MS_RDONLY, m.sb_data());
      }
      // Slaves of the host stay slaves (a bind of a slave is one); the rest
      // is private until the container's groups are rebuilt.
      auto rep = group_rep_.find(m.shared());
      bool joins_later = rep != group_rep_.end() && rep->second.m != &m;
      if (!joins_later && (m.master_is_host() || m.shared_with_host()))
        sysmnt::set_propagation(fd.get(), MS_SLAVE, what);
      else
        sysmnt::set_propagation(fd.get(), MS_PRIVATE, what);
      sysmnt::set_attrs(fd.get(), m.attrs(), what);
      built_[m.id()] = Built{&m, std::move(fd), what};
    });
  }

  // host_root: the propagation the container had on the host's mounts.
  void open_inherited() {
    std::vector<Entry> cur = mountinfo::read_self();
    std::vector<bool> used(cur.size());
    for (const img::InheritedMount& im : ns_.inherited()) {
      size_t j = 0;
      for (; j < cur.size(); j++)
        if (!used[j] && cur[j].mount_point == im.mount_point()) break;
      if (j == cur.size()) {
        LOG_WARN("mount namespace: %s, inherited from the host at dump, is not on this host",
                 im.mount_point().c_str());
        continue;
      }
      used[j] = true;
      if (im.master_is_host() || im.shared_with_host()) continue;  // a slave already
      std::string what = "host mount at " + im.mount_point();
      UniqueFd fd = open_or_throw(im.mount_point(), O_PATH);
      if (sysmnt::mount_id(fd.get(), "", AT_EMPTY_PATH) != cur[j].mnt_id) {
        // Under another mount at the same place: no path reaches it. It is
        // private or a slave of the host already, which only matters if the
        // container had other plans for it.
        if (!im.shared() && !im.master() && !im.unbindable() && !cur[j].prop.is_private())
          LOG_WARN("mount namespace: %s is covered: it stays a slave of the host's mount",
                   what.c_str());
        else if (im.shared() || im.master() || im.unbindable())
          LOG_WARN("mount namespace: %s is covered, its propagation is not restored", what.c_str());
        continue;
      }
      sysmnt::set_propagation(fd.get(), MS_PRIVATE, what);
      if (im.shared() || im.master() || im.unbindable()) {
        img::Mount& m = inherited_.emplace_back();
        m.set_id(0x80000000u + static_cast<uint32_t>(inherited_.size()));
        m.set_mount_point(im.mount_point());
        m.set_root(im.root());
        m.set_shared(im.shared());
        m.set_master(im.master());
        m.set_unbindable(im.unbindable());
        inherited_fds_.push_back(std::move(fd));
      }
    }
    for (size_t i = 0; i < inherited_.size(); i++) {
      const img::Mount& m = inherited_[i];
      if (m.shared()) {
        auto& rep = group_rep_[m.shared()];
        if (!rep.m || m.root().size() < rep.m->root().size()) rep.m = &m;
      }
      built_[m.id()] = Built{&m, std::move(inherited_fds_[i]), "host mount at " + m.mount_point()};
    }
  }

  // The container's own peer groups and slaves, rebuilt on private mounts:
  // a group's widest member is made shared, the others join it with
  // MOVE_MOUNT_SET_GROUP; a slave joins its master's group, then leaves it
  // with MS_SLAVE.
  void set_groups() {
    for (auto& [id, b] : built_) {
      const img::Mount& m = *b.m;
      if (m.shared() && !m.shared_with_host())
        setup_group(m.shared());
      else if (m.master() && !m.master_is_host())
        make_slave(b, m.master());
    }
    for (auto& [id, b] : built_)
      if (b.m->unbindable()) sysmnt::set_propagation(b.fd.get(), MS_UNBINDABLE, b.what);
  }

  Built& rep_of(uint32_t group) {
    auto it = group_rep_.find(group);
    if (it == group_rep_.end() || !it->second.m)
      throw Error(strfmt("peer group %u is not restored", group));
    return built_.at(it->second.m->id());
  }

  void setup_group(uint32_t group) {
    auto& rep_state = group_rep_.at(group);
    if (rep_state.done) return;
    rep_state.done = true;
    Built& rep = rep_of(group);
    in_context(rep.what, [&] {
      if (rep.m->master() && !rep.m->master_is_host()) make_slave(rep, rep.m->master());
      sysmnt::set_propagation(rep.fd.get(), MS_SHARED, rep.what);
    });
    for (auto& [id, b] : built_) {
      if (&b == &rep || b.m->shared() != group) continue;
      in_context(b.what, [&] {
        if (!path_under(b.m->root(), rep.m->root()))
          throw Error("its peer group spans roots " + rep.m->root() + " and " + b.m->root() +
                      ": not supported");
        sysmnt::move_mount(rep.fd.get(), "", b.fd.get(), "",
                           MOVE_MOUNT_SET_GROUP | MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
                           "join the peer group of " + rep.what);
      });
    }
  }

  void make_slave(Built& b, uint32_t master) {
    in_context(b.what, [&] {
      if (!group_rep_.count(master)) {
        LOG_WARN(
            "mount namespace: %s was a slave of peer group %u, which is not restored; it "
            "comes back private",
            b.what.c_str(), master);
        return;
      }
      setup_group(master);
      Built& from = rep_of(master);
      if (!path_under(b.m->root(), from.m->root()))
        throw Error("slave of a peer group whose mounts show " + from.m->root() +
                    ", not a parent of " + b.m->root() + ": not supported");
      sysmnt::move_mount(from.fd.get(), "", b.fd.get(), "",
                         MOVE_MOUNT_SET_GROUP | MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
                         "join the peer group of " + from.what);
      sysmnt::set_propagation(b.fd.get(), MS_SLAVE, b.what);
    });
  }

  struct GroupRep {
    const img::Mount* m = nullptr;
    bool done = false;
  };
  const img::MntNs& ns_;
  const image::ImageSource& src_;
  std::map<uint32_t, Built> built_;  // by dump-time mount id
  std::map<uint32_t, GroupRep> group_rep_;
  std::vector<img::Mount> inherited_;  // host_root: host mounts in container groups
  std::vector<UniqueFd> inherited_fds_;
};

}  // namespace

void restore_mntns(const img::MntNs& ns, const image::ImageSource& src) {
  in_context("restore mount namespace", [&] {
    check_mntns_images(ns, src);
    Builder(ns, src).run();
  });
}

}  // namespace ckpt
