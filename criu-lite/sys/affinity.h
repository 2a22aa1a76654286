// CPU affinity of threads, as the kernel's raw masks (sched_getaffinity's
// bytes, however many CPUs the machine has), and pinning the caller.
#pragma once

#include <sys/types.h>

#include <string>

namespace ckpt::affinity {

// tid 0: the calling thread. Throws Error naming the thread.
std::string get(pid_t tid);
// False if the kernel refuses the mask (none of its CPUs allowed here, or
// outside the thread's cpuset); throws on other errors.
bool set(pid_t tid, const std::string& mask);
// A mask of CPU cpu alone.
std::string only(int cpu);
// mask without CPU cpu; "" if that leaves none.
std::string without(std::string mask, int cpu);

// Keeps the calling thread on the CPU it runs on while it lives, and puts
// its mask back after. cpu() is -1 if that was not possible.
class PinHere {
 public:
  PinHere();
  ~PinHere();
  PinHere(const PinHere&) = delete;
  PinHere& operator=(const PinHere&) = delete;
  int cpu() const { return cpu_; }

 private:
  std::string old_;
  int cpu_ = -1;
};

}  // namespace ckpt::affinity
