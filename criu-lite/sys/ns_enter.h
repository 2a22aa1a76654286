// Enters a task's namespaces for a scope, and comes back at its end.
//
// The restore controller opens the tree's files (sockets, paths) from inside
// the tree's network and mount namespaces. setns into a mount namespace needs
// a process that shares its fs context with no other thread: ckpt is single-
// threaded while it opens files. Coming back restores root and cwd too,
// which setns into a mount namespace resets.
#pragma once

#include <sys/types.h>

#include <vector>

#include "sys/fd.h"

namespace ckpt {

class NsEnter {
 public:
  // kinds: CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS.
  NsEnter(pid_t pid, int kinds);
  // The network namespace of an nsfs fd (this thread only).
  explicit NsEnter(int netns_fd);
  ~NsEnter();
  NsEnter(const NsEnter&) = delete;
  NsEnter& operator=(const NsEnter&) = delete;

 private:
  void leave();
  struct Saved {
    int kind;
    UniqueFd own;
  };
  std::vector<Saved> saved_;
  UniqueFd root_, cwd_;
};

}  // namespace ckpt
