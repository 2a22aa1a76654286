// Threads that each drive a share of the restore stubs, so that several
// address spaces are rebuilt at once.
//
// ptrace accepts requests for a tracee only from the thread that attached
// it, so a stub belongs to one worker from its seize to its detach: every
// step that touches stubs runs as run(fn), fn being called on each worker
// with its index. One worker per CPU ckpt may use, each pinned to its CPU
// together with its stubs: a remote syscall costs 13-19 us when tracer and
// tracee share a CPU and 57-92 us across two here.
//
// Call order:
//   TracerPool pool;                      // threads start, pinned
//   pool.run([&](size_t w) { ... });      // any number of times
//   ~TracerPool                           // threads end (their tracees are
//                                         // detached or dead by then)
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ckpt {

class TracerPool {
 public:
  // At most max_workers (0: one per CPU ckpt may use).
  explicit TracerPool(size_t max_workers = 0);
  ~TracerPool();
  TracerPool(const TracerPool&) = delete;
  TracerPool& operator=(const TracerPool&) = delete;

  size_t size() const { return workers_.size(); }
  // Calls fn(w) on every worker w at once and waits for all of them; then
  // rethrows the first error any of them threw.
  void run(const std::function<void(size_t)>& fn);
  // Puts pid on worker w's CPU (from any thread). Restored tasks get their
  // own affinity back later (task_attrs).
  void pin(size_t w, pid_t pid) const;

 private:
  void loop(size_t w);

  std::vector<int> cpus_;  // worker w's CPU, -1: not pinned
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  const std::function<void(size_t)>* job_ = nullptr;
  unsigned generation_ = 0;
  size_t running_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace ckpt
