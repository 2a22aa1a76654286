// ckpt job run: run a command under checkpoint protection, the way a batch
// system (Slurm) needs it.
//
//   1. If the checkpoint directory holds a restorable checkpoint, the newest
//      one is restored (its root becomes the supervisor's child); otherwise
//      CMD is started in a session of its own.
//   2. Every interval seconds a checkpoint is taken with the tree left
//      running (incremental with --incremental: dirty tracking kept between
//      checkpoints), published atomically, and old ones pruned.
//   3. On a checkpoint signal (SIGTERM by default: what Slurm sends when it
//      preempts or requeues a job) the tree is checkpointed and killed, and
//      the supervisor exits with kExitCheckpointed.
//   4. Other signals are forwarded to the job; when the job's root exits the
//      supervisor exits with its status (and, on success, removes the
//      checkpoints, which describe a run that is over).
//
// CMD starts with the checkpoint signals ignored (the disposition survives
// exec): Slurm signals every process of a job, and the job must still be
// there when the supervisor freezes it. A program that installs its own
// handler for them must be run with a signal only the supervisor gets (see
// scripts/slurm/README.md).
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace ckpt::job {

// The exit status of `ckpt job run` after it checkpointed the job on a
// signal and stopped it: the job should be requeued (Slurm: RequeueExit=85).
constexpr int kExitCheckpointed = 85;

struct JobOptions {
  std::string dir;
  std::vector<std::string> argv;
  int interval_s = 0;        // 0: no periodic checkpoints
  size_t keep = 3;           // complete checkpoints kept (plus their parents)
  std::vector<int> signals;  // checkpoint-and-stop signals
  bool incremental = false;
  int full_every = 8;  // with incremental: every Nth checkpoint is full
  int zstd_level = 0;
  std::function<void(const std::string&)> note;  // one line for the user
};

// Runs the job; returns the exit status the process should end with.
int run_job(const JobOptions& opts);

}  // namespace ckpt::job
