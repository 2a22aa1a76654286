// Futex words shared with other processes (restore/stub_plan.h): plain
// FUTEX_WAIT/FUTEX_WAKE, not the private ones, since the word lives in a
// shared mapping of a memfd.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>

namespace ckpt {

inline std::atomic_ref<int32_t> futex_word(int32_t& w) {
  return std::atomic_ref<int32_t>(w);
}

// Sleeps while *addr == val, at most 50 ms: callers loop and check what
// else may have happened (a stub died).
inline void futex_wait(int32_t* addr, int val) {
  timespec ts{0, 50 * 1000 * 1000};
  syscall(SYS_futex, addr, FUTEX_WAIT, val, &ts, nullptr, 0);
}

inline void futex_wake(int32_t* addr) {
  syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace ckpt
