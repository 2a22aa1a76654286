#include "sys/affinity.h"

#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "sys/error.h"

namespace ckpt::affinity {

std::string get(pid_t tid) {
  for (size_t len = 128;; len *= 2) {
    std::string mask(len, '\0');
    long n = syscall(SYS_sched_getaffinity, tid, len, mask.data());
    if (n < 0 && errno == EINVAL && len < (1u << 20)) continue;  // more CPUs than bits
    if (n < 0) throw_errno(strfmt("sched_getaffinity of tid %d", tid));
    mask.resize(static_cast<size_t>(n));
    return mask;
  }
}

bool set(pid_t tid, const std::string& mask) {
  if (syscall(SYS_sched_setaffinity, tid, mask.size(), mask.data()) == 0) return true;
  if (errno == EINVAL) return false;
  throw_errno(strfmt("sched_setaffinity of tid %d", tid));
}

std::string only(int cpu) {
  std::string mask(static_cast<size_t>(cpu / 64 + 1) * 8, '\0');
  mask[static_cast<size_t>(cpu / 8)] = static_cast<char>(1u << (cpu % 8));
  return mask;
}

std::string without(std::string mask, int cpu) {
  auto byte = static_cast<size_t>(cpu / 8);
  if (byte < mask.size()) mask[byte] = static_cast<char>(mask[byte] & ~(1u << (cpu % 8)));
  for (char c : mask)
    if (c) return mask;
  return {};
}

PinHere::PinHere() {
  int cpu = sched_getcpu();
  if (cpu < 0) return;
  try {
    old_ = get(0);
    if (set(0, only(cpu))) cpu_ = cpu;
  } catch (const Error&) {
  }
}

PinHere::~PinHere() {
  if (cpu_ < 0) return;
  try {
    set(0, old_);
  } catch (const Error&) {
  }
}

}  // namespace ckpt::affinity
