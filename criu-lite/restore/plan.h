// Everything a restore needs, read and validated from the images before
// anything is created.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "core.pb.h"
#include "files.pb.h"
#include "image/image_io.h"
#include "inventory.pb.h"
#include "mm.pb.h"
#include "pstree.pb.h"

namespace ckpt {

struct PlannedTask {
  img::PstreeEntry entry;
  img::TaskCore core;
  img::MmCore mm;
  img::FdTable fds;
  int parent = -1;            // index in RestorePlan::tasks, -1 for the root
  std::vector<int> children;  // indexes
  std::vector<int> zombies;   // indexes in RestorePlan::zombies
  // The pid the tree sees (in the images); in a recreated pid namespace
  // ckpt sees the process under another one, host, found once it exists.
  pid_t host = 0;
  pid_t pid() const { return static_cast<pid_t>(entry.pid()); }
  pid_t hpid() const { return host ? host : pid(); }
};

// An exited child not reaped at dump time: recreated as a process that
// exits at once with the same status, and stays a zombie until its parent
// (restored) reaps it.
struct PlannedZombie {
  img::PstreeEntry entry;
  int parent = -1;  // index in RestorePlan::tasks
  pid_t host = 0;   // as for PlannedTask
  pid_t pid() const { return static_cast<pid_t>(entry.pid()); }
  pid_t hpid() const { return host ? host : pid(); }
};

struct RestorePlan {
  img::Inventory inv;
  // The root was the init of a pid namespace of its own: the tree is
  // restored into a new one, where the root is 1 again.
  bool new_pidns() const { return inv.namespaces().pid(); }
  std::vector<PlannedTask> tasks;  // parents before children; [0] is the root
  std::vector<PlannedZombie> zombies;
};

// Reads every record image and checks it fits this machine: format version,
// architecture, XSAVE features, the vDSO. Throws naming the image.
RestorePlan load_plan(const image::ImageSource& src);

// Every pid and tid the plan needs must be free; pids just freed by a dump
// can stay taken for a moment (orphans are reaped late), so this waits up to
// timeout_ms before naming the process that holds one.
void wait_pids_free(const RestorePlan& plan, int timeout_ms);

}  // namespace ckpt
