// Regular files, directories and devices, reopened by path (terminals, which
// are devices too, are tty.cc's).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include "objects/fd_kind.h"
#include "objects/ghosts.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/proc.h"

namespace ckpt {

namespace {

constexpr long kMqueueMagic = 0x19800202;  // MQUEUE_MAGIC

uint32_t open_flags(const img::FileDesc& d) {
  return d.flags() & ~static_cast<uint32_t>(O_CREAT | O_EXCL | O_TRUNC | O_CLOEXEC);
}

UniqueFd open_regular(const img::FileDesc& d, const GhostTable* ghosts) {
  UniqueFd f = d.reg().ghost_id()
                   ? ghosts->open(d.reg().ghost_id(), static_cast<int>(open_flags(d)))
                   : open_or_throw(d.reg().path(), static_cast<int>(open_flags(d)));
  struct stat st {};
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
  auto pid = static_cast<pid_t>(atoi(path.c_str() + 6));
  return std::find(pids.begin(), pids.end(), pid) != pids.end();
}

std::set<int> mount_ids(const std::string& mountinfo) {
  std::set<int> ids;
  for (const auto& m : proc::parse_mountinfo(mountinfo)) ids.insert(m.mnt_id);
  return ids;
}

class RegularFileKind : public FdKind {
  // Is mount mnt_id missing from the task's mount namespace but in ckpt's?
  // (Mount ids are unique across namespaces.) Cached per task.
  bool outside_tree_mounts(pid_t pid, int mnt_id) {
    if (mnt_id < 0) return false;
    auto it = task_mounts_.find(pid);
    if (it == task_mounts_.end()) {
      std::string text;
      std::set<int> ids;
      if (try_read_file(strfmt("/proc/%d/mountinfo", pid), &text)) ids = mount_ids(text);
      it = task_mounts_.emplace(pid, std::move(ids)).first;
    }
    if (it->second.empty() || it->second.count(mnt_id)) return false;
    if (own_mounts_.empty()) own_mounts_ = mount_ids(read_file("/proc/self/mountinfo"));
    return own_mounts_.count(mnt_id) != 0;
  }
  std::map<pid_t, std::set<int>> task_mounts_;
  std::set<int> own_mounts_;

 public:
  const char* name() const override { return "regular file"; }
  bool matches(const FdProbe& p) const override {
    return S_ISREG(p.st.st_mode) || S_ISDIR(p.st.st_mode);
  }
  void dump(const FdDumpArgs& a, img::FileDesc* d) override {
    if (a.link.empty() || a.link[0] != '/') throw Error("file without a path");
    // A POSIX message queue descriptor (mq_open) looks like a regular file;
    // reopening it by its path would open something else.
    struct statfs sf {};
    if (fstatfs(a.local, &sf) == 0 && sf.f_type == kMqueueMagic)
      throw Error("POSIX message queue descriptors are not supported yet");
    auto* r = d->mutable_reg();
    if (is_memfd_link(a.link) || (S_ISREG(a.st.st_mode) && a.st.st_nlink == 0) ||
        is_deleted_link(a.link)) {
      // Its content goes with the images; its name is gone.
      r->set_ghost_id(a.ctx.ghosts->add(a.ctx, a.local, a.link));
      r->set_path(a.link.substr(0, a.link.size() - (is_deleted_link(a.link) ? 10 : 0)));
    } else {
      r->set_path(a.link);
      r->set_outside(outside_tree_mounts(a.task.pid, a.info.mnt_id));
    }
    r->set_size(static_cast<uint64_t>(a.st.st_size));
    r->set_mode(a.st.st_mode);
    r->set_dev(a.st.st_dev);
    r->set_ino(a.st.st_ino);
  }
  bool owns(const img::FileDesc& d) const override { return d.has_reg(); }
  UniqueFd open(const img::FileDesc& d, FdRestoreState& st) override {
    // The process's own /proc files exist only once the process does.
    if (!d.reg().ghost_id() && under_tree_proc(d.reg().path(), st.tree_pids)) return UniqueFd();
    return open_regular(d, st.ghosts);
  }
  UniqueFd open_in_stub(const img::FileDesc& d, const FdRestoreState& st) const override {
    return open_regular(d, st.ghosts);
  }
  bool runs_in_stub(const img::FileDesc& d, const std::vector<pid_t>& pids) const override {
    return !d.reg().ghost_id() && under_tree_proc(d.reg().path(), pids);
  }
};

class DeviceKind : public FdKind {
 public:
  const char* name() const override { return "device"; }
  bool matches(const FdProbe& p) const override {
    return S_ISCHR(p.st.st_mode) || S_ISBLK(p.st.st_mode);
  }
  void dump(const FdDumpArgs& a, img::FileDesc* d) override {
    if (a.link.empty() || a.link[0] != '/') throw Error("device without a path");
    auto* c = d->mutable_chr();
    c->set_path(a.link);
    c->set_rdev(static_cast<uint32_t>(a.st.st_rdev));
  }
  bool owns(const img::FileDesc& d) const override { return d.has_chr(); }
  UniqueFd open(const img::FileDesc& d, FdRestoreState&) override {
    return open_or_throw(d.chr().path(), static_cast<int>(open_flags(d)));
  }
};

}  // namespace

std::unique_ptr<FdKind> make_regular_file_kind() {
  return std::make_unique<RegularFileKind>();
}
std::unique_ptr<FdKind> make_device_kind() {
  return std::make_unique<DeviceKind>();
}

}  // namespace ckpt
