#include "sys/ns_enter.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cstring>

#include "sys/error.h"
#include "sys/log.h"

namespace ckpt {

namespace {
struct NsKind {
  int flag;
  const char* name;
};
constexpr NsKind kKinds[] = {
    {CLONE_NEWNET, "net"}, {CLONE_NEWIPC, "ipc"}, {CLONE_NEWUTS, "uts"}, {CLONE_NEWNS, "mnt"}};
}  // namespace

NsEnter::NsEnter(pid_t pid, int kinds) {
  host_proc_dir();  // opened while "/proc" is still ckpt's own
  if (kinds & CLONE_NEWNS) {
    root_ = open_or_throw("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cwd_ = open_or_throw(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    // Entering a mount namespace changes root and working directory, which
    // threads share: the kernel refuses it (EINVAL) while another thread
    // shares them. This thread takes a copy of its own (the same values).
    if (unshare(CLONE_FS) != 0) throw_errno("unshare(CLONE_FS) to enter a mount namespace");
  }
  try {
    for (const NsKind& k : kKinds) {
      if (!(kinds & k.flag)) continue;
      UniqueFd own = open_or_throw(strfmt("/proc/self/ns/%s", k.name), O_RDONLY | O_CLOEXEC);
      UniqueFd target = open_or_throw(strfmt("/proc/%d/ns/%s", pid, k.name), O_RDONLY | O_CLOEXEC);
      if (setns(target.get(), k.flag) != 0)
        throw_errno(strfmt("enter the %s namespace of pid %d", k.name, pid));
      saved_.push_back({k.flag, std::move(own)});
    }
  } catch (...) {
    leave();
    throw;
  }
}

NsEnter::NsEnter(int netns_fd) {
  UniqueFd own = open_or_throw("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (setns(netns_fd, CLONE_NEWNET) != 0) throw_errno("enter a network namespace");
  saved_.push_back({CLONE_NEWNET, std::move(own)});
}

NsEnter::~NsEnter() {
  leave();
}

void NsEnter::leave() {
  // Back in reverse order; a failure here leaves ckpt in the tree's
  // namespaces, which nothing after can be trusted with.
  for (auto it = saved_.rbegin(); it != saved_.rend(); ++it)
    if (setns(it->own.get(), it->kind) != 0) {
      LOG_ERROR("cannot return to ckpt's own namespaces: %s", strerror(errno));
      _exit(70);
    }
  saved_.clear();
  if (root_) {
    if (fchdir(root_.get()) != 0 || chroot(".") != 0 || fchdir(cwd_.get()) != 0) {
      LOG_ERROR("cannot return to ckpt's root and working directory: %s", strerror(errno));
      _exit(70);
    }
    root_.reset();
    cwd_.reset();
  }
}

}  // namespace ckpt
