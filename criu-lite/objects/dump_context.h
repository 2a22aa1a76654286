// What the dump pipeline knows about the tree while it saves it. The
// pipeline (dump/) fills the tasks; each object kind (objects/*.cc) reads
// them and writes its images.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "image/image_io.h"
#include "inventory.pb.h"
#include "sys/proc.h"
#include "sys/remote.h"
#include "sys/tracee.h"

namespace ckpt {

struct DumpOptions {
  int zstd_level = 0;  // --compress
  bool leave_running = false;
  bool shell_job = false;
  bool progress = false;  // draw a progress bar (stderr is a terminal)
  // Established TCP connections: saved with TCP repair (--tcp-established),
  // saved as closed (--tcp-close), or else the dump stops naming them.
  bool tcp_established = false;
  bool tcp_close = false;
  // Post-copy migration: private anonymous pages are recorded, not saved
  // (lazy runs); the caller sends them from the stopped tree later.
  bool lazy_pages = false;
  // Pre-copy round of a migration: dirty tracking is (re)armed with the
  // tree stopped, which then runs on while its private pages are copied;
  // nothing but pages and the inventory is saved.
  bool pages_only = false;
};

// One process of the tree, stopped: every thread seized and interrupted.
struct DumpTask {
  pid_t pid = 0;                // as ckpt sees it: for ptrace and /proc
  pid_t ppid = 0;               // parent inside the tree, 0 for the root
  std::vector<Tracee> threads;  // leader first
  // Ids as the tree sees them, which is what the images hold: the same as
  // pid and the threads' tids unless the tree has a pid namespace of its own.
  pid_t vpid = 0;
  std::vector<pid_t> vtids;
  std::vector<bool> group_stopped;
  proc::Stat stat;
  proc::Status status;
  std::vector<proc::Vma> vmas;  // from smaps, read once
  // The leader executes remote syscalls through this; scratch is a small
  // mapping in the task for syscall arguments, unmapped before detaching.
  std::unique_ptr<RemoteThread> remote;
  RemoteScratch scratch;
  uint64_t vdso_base = 0;
  // Saved registers of every thread before any remote syscall, normalized
  // so that an interrupted syscall is re-run (see thread.cc).
  std::vector<Regs> regs;
  std::vector<uint64_t> sigmasks;  // as found, restored on --leave-running
  // Each thread's CPU affinity before the dump pinned it to ckpt's CPU
  // ("" if not pinned); put back on --leave-running.
  std::vector<std::string> affinities;
};

// Pages of one address space or shared memory object, counted for the
// summary and the progress bar.
struct DumpStats {
  uint32_t tasks = 0, threads = 0, vmas = 0;
  uint64_t pages = 0, page_bytes = 0;
  uint64_t parent_pages = 0;  // left in the parent checkpoint
  uint64_t lazy_pages = 0;    // to be sent later (post-copy)
};

class Progress;
class GhostDumper;
class NetLock;
class RepairedSockets;
struct PageDelta;

// An exited child its parent has not reaped: only its ids and status.
struct DumpZombie {
  pid_t pid = 0, ppid = 0, pgid = 0, sid = 0;
  int exit_status = 0;  // wait status
};

struct DumpContext {
  image::ImageSink* sink = nullptr;
  DumpOptions opts;
  std::vector<std::unique_ptr<DumpTask>> tasks;  // parents before children
  std::vector<DumpZombie> zombies;
  DumpStats stats;
  Progress* progress = nullptr;
  GhostDumper* ghosts = nullptr;  // deleted files and memfds, saved once
  // Connections whose packets are dropped while the tree is away, and the
  // sockets in TCP repair mode (objects/net_lock.h, inet_sockets.h).
  NetLock* net_lock = nullptr;
  RepairedSockets* repaired = nullptr;
  // Shared anonymous memory objects already saved (by inode).
  std::set<uint64_t> shmem_done;
  // Pages to copy in total (for the progress bar), estimated from smaps.
  uint64_t pages_estimate = 0;
  // Incremental dump (--prev-images-dir, ckpt job run --incremental): the
  // parent checkpoint, and per pid the pages written since it as dirty
  // tracking saw them. A process without a delta is compared with the
  // parent's pages instead; one the parent lacks is saved in full.
  std::shared_ptr<const image::ImageSource> parent;
  // The parent checkpoint is a migration round already sent (see dump.h).
  bool parent_elsewhere = false;
  std::function<bool(pid_t vpid, uint64_t vaddr, uint64_t npages)> parent_covers;
  std::map<pid_t, std::shared_ptr<const PageDelta>> deltas;

  // The root is the init of a pid namespace of its own: the images hold
  // pids inside it (vpid), and restore recreates the namespace.
  bool own_pidns = false;
  std::map<pid_t, pid_t> vpids;  // ckpt's pid -> the tree's, tasks and zombies
  // A pid of the tree (or a group or session id) as the tree sees it.
  pid_t vpid(pid_t pid) const {
    if (!own_pidns) return pid;
    auto it = vpids.find(pid);
    return it == vpids.end() ? 0 : it->second;
  }

  DumpTask* find(pid_t pid) const {
    for (auto& t : tasks)
      if (t->pid == pid) return t.get();
    return nullptr;
  }
};

}  // namespace ckpt
