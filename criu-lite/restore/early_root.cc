#include "restore/early_root.h"

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>

#include "objects/mnt_ns.h"
#include "objects/namespaces.h"
#include "restore/stub_plan.h"
#include "restore/stubs.h"
#include "sys/error.h"
#include "sys/futex.h"
#include "sys/log.h"
#include "sys/ns_enter.h"

namespace ckpt {

namespace {

// The mounts of a root made ahead come from the preview, which holds no
// tmpfs (refuses() says so): nothing is read from images.
class NoImages : public image::ImageSource {
 public:
  std::shared_ptr<const image::Blob> open(const std::string& name) const override {
    throw Error(name + ": no such image (a root made ahead has none)");
  }
  bool exists(const std::string&) const override { return false; }
  std::string where() const override { return "the preview of the tree"; }
};

constexpr size_t align8(size_t v) {
  return (v + 7) & ~size_t{7};
}
// The early block: the header and the root's slot (stub_plan.h).
constexpr size_t kBlockSize = align8(sizeof(ckpt_stub_control)) + sizeof(ckpt_stub_slot);

// A mapping of the control block, for as long as the root is being made.
struct Block {
  explicit Block(int fd) {
    void* p = mmap(nullptr, kBlockSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) throw_errno("map the early root's control block");
    ctl = static_cast<ckpt_stub_control*>(p);
  }
  ~Block() { munmap(ctl, kBlockSize); }
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;
  ckpt_stub_slot& slot() const {
    return *reinterpret_cast<ckpt_stub_slot*>(reinterpret_cast<char*>(ctl) + ctl->slots_off);
  }
  ckpt_stub_control* ctl;
};

// The root, before its exec: in its new namespaces already.
[[noreturn]] void root_main(const Block& b, const img::TreePreview& p, int program, int ctl_fd,
                            int holder) {
  auto fail = [&](const char* what, int err) {
    snprintf(b.slot().error, sizeof b.slot().error, "%s", what);
    b.slot().err = err;
    futex_word(b.ctl->failed).store(1);
    futex_wake(&b.ctl->failed);
    _exit(1);
  };
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) fail("parent died", 0);
  // In the cgroup first (the controller's on_root).
  while (futex_word(b.ctl->root_go).load() == 0) futex_wait(&b.ctl->root_go, 0);
  if (futex_word(b.ctl->root_go).load() < 0) _exit(1);
  if (p.namespaces().mnt()) {
    try {
      restore_mntns(p.mnt(), NoImages());
    } catch (const Error& e) {
      fail(e.what(), 0);
    }
  }
  exec_freestanding_stub(program, ctl_fd, kBlockSize, holder);
  fail("execute the freestanding restore stub (execveat)", errno);
  _exit(1);
}

}  // namespace

std::string EarlyRoot::refuses(const img::TreePreview& p) {
  // Only an init can be made before the tree's pids are known to be free
  // here: in a pid namespace of its own, every pid is.
  if (!p.namespaces().pid()) return "the tree has no pid namespace of its own";
  if (p.namespaces().net() && !p.has_net()) return "its network namespace was not read";
  for (const img::Mount& m : p.mnt().mounts())
    if (m.kind() == img::MOUNT_NEW && m.fstype() == "tmpfs")
      return "a tmpfs at " + m.mount_point() + " (its files come with the images)";
  if (!exec_keeps_creds()) return "an exec would change ckpt's credentials";
  return "";
}

EarlyRoot::EarlyRoot(img::TreePreview p, int netns_fd, cgroup::Cgroup* cg) : p_(std::move(p)) {
  std::string why;
  UniqueFd program = freestanding_program(&why);
  if (!program) throw Error("the freestanding stub: " + why);
  ctl_fd_ =
      UniqueFd(static_cast<int>(syscall(SYS_memfd_create, "ckpt-restore-stubs", MFD_CLOEXEC)));
  if (!ctl_fd_) throw_errno("memfd for the early root's control block");
  if (ftruncate(ctl_fd_.get(), kBlockSize) != 0) throw_errno("size the early root's control block");
  Block b(ctl_fd_.get());
  b.ctl->early = 1;
  b.ctl->n_all = 1;
  b.ctl->slots_off = align8(sizeof(ckpt_stub_control));
  b.ctl->size = kBlockSize;
  holder_ = UniqueFd(static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0)));
  if (!holder_) throw_errno("pidfd_open of ckpt itself");
  // The new mount namespace is a copy of this one (restore.cc).
  if (p_.namespaces().mnt()) cgroup::settle_mount_namespace();

  uint64_t flags = namespace_clone_flags(p_.namespaces());
  if (netns_fd >= 0) flags &= ~static_cast<uint64_t>(CLONE_NEWNET);
  fflush(nullptr);
  pid_t r;
  {
    std::optional<NsEnter> in_netns;
    if (netns_fd >= 0) in_netns.emplace(netns_fd);
    r = clone_with_pid(static_cast<pid_t>(p_.root_pid()), SIGCHLD, flags);
    if (r == 0) root_main(b, p_, program.get(), ctl_fd_.get(), holder_.get());
  }
  if (r < 0) throw_errno(strfmt("create root pid %u (clone3 set_tid)", p_.root_pid()));
  pid_ = r;
  try {
    if (cg) {
      cg->attach(r);
      in_cgroup_ = true;
    }
    futex_word(b.ctl->root_go).store(1);
    futex_wake(&b.ctl->root_go);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (futex_word(b.ctl->early_parked).load() == 0) {
      if (futex_word(b.ctl->failed).load()) {
        const ckpt_stub_slot& s = b.slot();
        std::string msg(s.error, strnlen(s.error, sizeof s.error));
        if (s.err) msg += std::string(": ") + strerror(s.err);
        throw Error(msg);
      }
      int st;
      if (waitpid(r, &st, WNOHANG) == r) {
        pid_ = -1;
        throw Error("the root died before its exec");
      }
      if (std::chrono::steady_clock::now() > deadline)
        throw Error("the root did not park within 5 s");
      futex_wait(&b.ctl->early_parked, 0);
    }
    check_stub_creds(r);
  } catch (...) {
    futex_word(b.ctl->root_go).store(-1);
    futex_wake(&b.ctl->root_go);
    discard();
    throw;
  }
  LOG_DEBUG("root made ahead: pid %d here, %u in its namespace", r, p_.root_pid());
}

EarlyRoot::~EarlyRoot() {
  discard();
}

void EarlyRoot::discard() {
  if (pid_ <= 0) return;
  // The init of its own pid namespace, alone in it: it goes at once.
  kill(pid_, SIGKILL);
  while (waitpid(pid_, nullptr, __WALL) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

bool EarlyRoot::matches(const img::Namespaces& ns, pid_t root_pid, const img::MntNs* mnt,
                        bool netns_adopted, bool in_cgroup) const {
  if (pid_ <= 0) return false;
  if (ns.SerializeAsString() != p_.namespaces().SerializeAsString()) return false;
  if (root_pid != static_cast<pid_t>(p_.root_pid())) return false;
  if (netns_adopted != p_.namespaces().net() || in_cgroup != in_cgroup_) return false;
  if (ns.mnt() && (!mnt || mnt->SerializeAsString() != p_.mnt().SerializeAsString())) return false;
  return true;
}

UniqueFd EarlyRoot::take_control_block() {
  return std::move(ctl_fd_);
}

pid_t EarlyRoot::take() {
  pid_t r = pid_;
  pid_ = -1;
  holder_.reset();
  return r;
}

}  // namespace ckpt
