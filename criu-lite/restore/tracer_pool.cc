#include "restore/tracer_pool.h"

#include <sched.h>

#include <utility>

#include "sys/log.h"

namespace ckpt {

namespace {
bool pin_to(pid_t tid, int cpu) {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  return sched_setaffinity(tid, sizeof one, &one) == 0;
}
}  // namespace

TracerPool::TracerPool(size_t max_workers) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0)
    for (int c = 0; c < CPU_SETSIZE; c++)
      if (CPU_ISSET(c, &allowed)) cpus_.push_back(c);
  if (cpus_.empty()) cpus_.push_back(-1);
  if (max_workers && cpus_.size() > max_workers) cpus_.resize(max_workers);
  for (size_t w = 0; w < cpus_.size(); w++) workers_.emplace_back([this, w] { loop(w); });
}

TracerPool::~TracerPool() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void TracerPool::pin(size_t w, pid_t pid) const {
  if (cpus_[w] >= 0) pin_to(pid, cpus_[w]);
}

void TracerPool::loop(size_t w) {
  if (cpus_[w] >= 0 && !pin_to(0, cpus_[w])) cpus_[w] = -1;
  unsigned seen = 0;
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    cv_.wait(l, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    const auto* job = job_;
    l.unlock();
    std::exception_ptr err;
    try {
      (*job)(w);
    } catch (...) {
      err = std::current_exception();
    }
    l.lock();
    if (err && !error_) error_ = err;
    if (--running_ == 0) cv_.notify_all();
  }
}

void TracerPool::run(const std::function<void(size_t)>& fn) {
  std::unique_lock<std::mutex> l(mu_);
  job_ = &fn;
  error_ = nullptr;
  running_ = workers_.size();
  generation_++;
  cv_.notify_all();
  cv_.wait(l, [&] { return running_ == 0; });
  job_ = nullptr;
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

}  // namespace ckpt
