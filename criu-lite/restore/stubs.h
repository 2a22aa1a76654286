// Restore stubs: the processes that become the restored tree.
//
// The controller forks the root with clone3(set_tid) and each stub forks its
// own children the same way, so every process gets its old pid and parent.
// Stubs are copies of ckpt and run ordinary code for what ordinary code can
// do from the inside: sessions, process groups, the fd table, umask, cwd.
// Then they park in pause(); the controller seizes them and rebuilds each
// address space through remote syscalls (restore.cc).
//
// Stubs and controller meet in a shared anonymous mapping (StubControl):
// phase numbers the controller raises, counters the stubs bump, and one slot
// per task where a stub that fails writes why.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <string>

#include "objects/files.h"
#include "objects/tty.h"
#include "restore/plan.h"

namespace ckpt {

class StubTree {
 public:
  StubTree(const RestorePlan& plan, const FileTable& files);
  StubTree(const StubTree&) = delete;
  ~StubTree();  // kills and reaps every stub unless released

  // Forks the whole tree and waits until every stub is parked; throws with
  // the failing stub's reason.
  void create(int timeout_ms);
  pid_t root_pid() const;
  // Controlling terminals and foreground groups (objects/tty.h); optional.
  void set_ttys(const TtyRestore* ttys) { ttys_ = ttys; }
  // The tree now belongs to the restored program.
  void release() { released_ = true; }
  // Kills every stub (used on failure) and waits for the pids to be free.
  void kill_all();

 private:
  struct Control;
  [[noreturn]] void stub_main(int idx);
  [[noreturn]] void zombie_main(int z);
  void wait_counter(std::atomic<int>& c, int want, int timeout_ms, const char* what);
  void raise_phase(int p);

  const RestorePlan& plan_;
  const FileTable& files_;
  const TtyRestore* ttys_ = nullptr;
  Control* ctl_ = nullptr;
  size_t ctl_size_ = 0;
  pid_t root_ = -1;
  bool released_ = false;
};

}  // namespace ckpt
