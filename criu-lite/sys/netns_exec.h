// Doing work inside another network namespace without moving the caller.
//
// setns(CLONE_NEWNET) changes only the calling thread, and ckpt has several
// threads at times, so run_in_netns() does the work on a short-lived thread
// that enters the namespace, runs f and ends; the caller never changes
// namespace. Netlink sockets opened there stay bound to that namespace;
// /proc/sys/net read or written there is that namespace's; programs started
// there (run_program) run in it.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "sys/fd.h"

namespace ckpt {

// Runs f on a new thread inside the network namespace netns_fd (an fd of
// /proc/PID/ns/net) and waits for it. An exception thrown by f is rethrown
// here.
void run_in_netns(int netns_fd, const std::function<void()>& f);

// A new, empty network namespace (made on a short-lived thread), held by
// the returned fd of its nsfs file: it lives as long as the fd.
UniqueFd new_netns();

// The network namespace of the calling thread.
UniqueFd current_netns();

struct ProgramResult {
  int status = 0;  // as waitpid reports it
  std::string out;
  std::string err;
  bool ok() const;               // exited with 0
  std::string describe() const;  // "exit 2: <first line of stderr>"
};

// Runs argv[0] (searched in PATH) with `input` on its stdin, collecting its
// stdout and stderr, in the calling thread's namespaces. Throws only if the
// program cannot be started (ENOENT when it is not installed).
ProgramResult run_program(const std::vector<std::string>& argv, const std::string& input = {});

// True if `name` is an executable in PATH (or /usr/sbin, /sbin).
bool have_program(const std::string& name);

}  // namespace ckpt
