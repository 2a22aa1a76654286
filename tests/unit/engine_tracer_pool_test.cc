// Remote syscalls with one ptrace stop per call (single stepping), and the
// restore's tracer threads, on live child processes.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <optional>
#include <set>
#include <thread>

#include "restore/tracer_pool.h"
#include "sys/cpu.h"
#include "sys/error.h"
#include "sys/remote.h"
#include "sys/tracee.h"

namespace ckpt {
namespace {

// A child parked in pause(); killed and reaped with the scope.
struct Parked {
  Parked() {
    pid = fork();
    if (pid == 0) {
      for (;;) pause();
    }
  }
  ~Parked() {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, __WALL);
  }
  pid_t pid = -1;
};

uint64_t vdso_syscall_ip() {
  // A fork shares ckpt's vDSO address.
  return reinterpret_cast<uint64_t>(cpu::vdso_text().data()) + cpu::vdso_syscall_offset();
}

// Runs a few syscalls in child, in the given mode; returns what it saw.
void exercise(pid_t child, bool single_step) {
  Tracee t = Tracee::seize(child, PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL);
  t.interrupt();
  t.wait_stopped();
  t.set_sigmask(~0ULL);  // as the restore has its stubs
  Regs before = t.get_regs();
  {
    RemoteThread rt(t, vdso_syscall_ip());
    rt.set_single_step(single_step);
    for (int i = 0; i < 20; i++) EXPECT_EQ(rt.call(__NR_getpid), child);
    EXPECT_EQ(rt.call(__NR_getppid), getpid());
    uint64_t addr = rt.check("mmap", __NR_mmap, 0, 8192, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, static_cast<uint64_t>(-1), 0);
    uint64_t word = 0x1234;
    remote_write(child, addr, &word, sizeof word);
    EXPECT_EQ(rt.call(__NR_munmap, addr, 8192), 0);
    EXPECT_EQ(rt.call(__NR_close, 12345), -EBADF);  // errors come back as -errno
    EXPECT_THROW(rt.check("close", __NR_close, 12345), Error);
    rt.restore();
  }
  Regs after = t.get_regs();
  EXPECT_EQ(after.rip, before.rip);
  t.detach();
}

TEST(RemoteSyscall, SingleStepGivesTheSameResultsAsSyscallStops) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (ptrace)";
  Parked child;
  exercise(child.pid, false);
  exercise(child.pid, true);
  exercise(child.pid, false);  // and a thread stepped before still works the usual way
  // The child is still alive and parked.
  EXPECT_EQ(kill(child.pid, 0), 0);
}

TEST(TracerPool, RunsEveryWorkerOnItsOwnThreadAndCpu) {
  TracerPool pool;
  ASSERT_GE(pool.size(), 1u);
  std::vector<std::thread::id> ids(pool.size());
  std::vector<int> cpus(pool.size(), -1);
  pool.run([&](size_t w) {
    ids[w] = std::this_thread::get_id();
    cpus[w] = sched_getcpu();
  });
  std::set<std::thread::id> distinct(ids.begin(), ids.end());
  EXPECT_EQ(distinct.size(), pool.size());
  EXPECT_EQ(distinct.count(std::this_thread::get_id()), 0u);
  std::set<int> distinct_cpus(cpus.begin(), cpus.end());
  EXPECT_EQ(distinct_cpus.size(), pool.size());  // one CPU each
  // The same worker runs every job of its index.
  pool.run([&](size_t w) { EXPECT_EQ(ids[w], std::this_thread::get_id()); });
}

TEST(TracerPool, RethrowsAWorkersErrorAfterAllFinished) {
  TracerPool pool;
  std::atomic<int> done{0};
  EXPECT_THROW(pool.run([&](size_t w) {
    if (w == 0) throw Error("worker 0 failed");
    done++;
  }),
               Error);
  EXPECT_EQ(done.load(), static_cast<int>(pool.size()) - 1);
  // Usable again afterwards.
  pool.run([&](size_t) { done++; });
  EXPECT_EQ(done.load(), 2 * static_cast<int>(pool.size()) - 1);
}

TEST(TracerPool, AWorkerKeepsDrivingWhatItSeized) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (ptrace)";
  TracerPool pool;
  std::vector<std::unique_ptr<Parked>> kids;
  for (size_t w = 0; w < pool.size(); w++) kids.push_back(std::make_unique<Parked>());
  std::vector<std::optional<Tracee>> tracees(pool.size());
  pool.run([&](size_t w) {
    pool.pin(w, kids[w]->pid);
    tracees[w] = Tracee::seize(kids[w]->pid, PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL);
    tracees[w]->interrupt();
    tracees[w]->wait_stopped();
  });
  // ptrace only answers the thread that attached: each worker calls into
  // its own child, in a later run.
  pool.run([&](size_t w) {
    RemoteThread rt(*tracees[w], vdso_syscall_ip());
    rt.set_single_step(true);
    EXPECT_EQ(rt.call(__NR_getpid), kids[w]->pid);
    rt.restore();
    tracees[w]->detach();
  });
}

}  // namespace
}  // namespace ckpt
