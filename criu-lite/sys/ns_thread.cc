#include "sys/ns_thread.h"

#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <exception>
#include <thread>

#include "sys/error.h"

namespace ckpt {

void run_in_namespace(int ns_fd, int nstype, const std::function<void()>& fn) {
  std::exception_ptr err;
  std::thread t([&] {
    try {
      if (setns(ns_fd, nstype) != 0) throw_errno("setns");
      fn();
    } catch (...) {
      err = std::current_exception();
    }
  });
  t.join();
  if (err) std::rethrow_exception(err);
}

ThreadIdsAs::ThreadIdsAs(uid_t uid, gid_t gid) {
  if (uid == 0 && gid == 0) return;
  // Group first, while the thread still has CAP_SETGID.
  if (syscall(SYS_setresgid, gid, gid, 0) != 0) throw_errno(strfmt("setresgid %u", gid));
  if (syscall(SYS_setresuid, uid, uid, 0) != 0) {
    int e = errno;
    syscall(SYS_setresgid, 0, 0, 0);
    throw_errno(e, strfmt("setresuid %u", uid));
  }
  changed_ = true;
}

ThreadIdsAs::~ThreadIdsAs() {
  if (!changed_) return;
  // The saved uid is 0, so this is allowed and brings the capabilities back.
  syscall(SYS_setresuid, 0, 0, 0);
  syscall(SYS_setresgid, 0, 0, 0);
}

}  // namespace ckpt
