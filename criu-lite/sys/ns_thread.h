// Work inside another task's namespace without moving ckpt there.
//
// setns() of an ipc, uts or net namespace changes only the calling thread,
// and /proc/sys/kernel/*, /proc/sysvipc/* and the SysV/POSIX IPC syscalls
// follow the namespace of the calling thread. run_in_namespace() runs a
// function in a short-lived thread that joins the namespace first: the
// caller's threads never change namespace, and the thread ends with the work.
#pragma once

#include <sys/types.h>

#include <functional>

namespace ckpt {

// Runs fn in a new thread that has done setns(ns_fd, nstype) (CLONE_NEWIPC,
// CLONE_NEWUTS, ...). An exception escaping fn is rethrown in the caller.
void run_in_namespace(int ns_fd, int nstype, const std::function<void()>& fn);

// Inside such a thread: sets the thread's real and effective uid/gid (raw
// syscalls: glibc would change every thread of ckpt) so that what it creates
// is owned and accounted as made by that user; the saved ids stay 0, so the
// destructor can return to root and its capabilities.
class ThreadIdsAs {
 public:
  ThreadIdsAs(uid_t uid, gid_t gid);
  ~ThreadIdsAs();
  ThreadIdsAs(const ThreadIdsAs&) = delete;
  ThreadIdsAs& operator=(const ThreadIdsAs&) = delete;

 private:
  bool changed_ = false;
};

}  // namespace ckpt
