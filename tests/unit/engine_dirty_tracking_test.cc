// Dirty tracking on a live child process: armed through remote syscalls,
// the child writes some pages, maps and moves memory, and collect() must
// report exactly what changed. Needs root (ptrace); skipped otherwise.
#include "objects/dirty_tracking.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <tuple>

#include "objects/thread.h"
#include "sys/cpu.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/proc.h"
#include "sys/remote.h"
#include "sys/tracee.h"

namespace ckpt {
namespace {

constexpr uint64_t kPage = 4096;
constexpr size_t kPages = 64;

struct Cmd {
  char op;  // 'w' write page a, 'm' mmap+fill a pages at b, 'r' mremap page a.. to b, 'q' quit
  uint64_t a, b;
};

// A child that obeys commands from a pipe and acks each.
class Child {
 public:
  explicit Child(char* mem) {
    int c[2], k[2];
    EXPECT_EQ(pipe(c), 0);
    EXPECT_EQ(pipe(k), 0);
    pid = fork();
    if (pid == 0) {
      close(c[1]);
      close(k[0]);
      Cmd cmd;
      while (read(c[0], &cmd, sizeof cmd) == sizeof cmd) {
        if (cmd.op == 'w') {
          mem[cmd.a * kPage] ^= 1;
        } else if (cmd.op == 'm') {
          void* p = mmap(reinterpret_cast<void*>(cmd.b), cmd.a * kPage, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
          if (p != MAP_FAILED) memset(p, 7, cmd.a * kPage);
        } else if (cmd.op == 'r') {
          mremap(mem + cmd.a * kPage, 8 * kPage, 8 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED,
                 reinterpret_cast<void*>(cmd.b));
        } else {
          _exit(0);
        }
        char ok = 1;
        if (write(k[1], &ok, 1) != 1) _exit(1);
      }
      _exit(0);
    }
    close(c[0]);
    close(k[1]);
    cmd_w = c[1];
    ack_r = k[0];
  }
  ~Child() {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    close(cmd_w);
    close(ack_r);
  }
  void send(char op, uint64_t a = 0, uint64_t b = 0) {
    Cmd c{op, a, b};
    ASSERT_EQ(write(cmd_w, &c, sizeof c), static_cast<ssize_t>(sizeof c));
    if (op == 'q') return;  // it exits without an ack
    char ok;
    if (read(ack_r, &ok, 1) != 1) {
      int st = 0;
      waitpid(pid, &st, 0);
      FAIL() << "the child died running '" << op << "': wait status " << std::hex << st;
    }
  }
  pid_t pid = 0;
  int cmd_w = -1, ack_r = -1;
};

// The child stopped under ptrace, as the dump has it, for the scope.
class Stopped {
 public:
  explicit Stopped(pid_t pid) : t_(Tracee::seize(pid, PTRACE_O_TRACESYSGOOD)) {
    t_.interrupt();
    t_.wait_stopped();
    regs_ = normalize_regs(t_.get_regs());
    uint64_t vdso = 0;
    for (const auto& v : proc::read_maps(pid))
      if (v.path == "[vdso]") vdso = v.start;
    rt_ = std::make_unique<RemoteThread>(t_, vdso + cpu::vdso_syscall_offset());
  }
  ~Stopped() {
    t_.set_regs(regs_);
    t_.detach();
  }
  RemoteThread& rt() { return *rt_; }

 private:
  Tracee t_;
  Regs regs_;
  std::unique_ptr<RemoteThread> rt_;
};

// Pages of [start, start + n pages) that d calls dirty.
std::vector<size_t> dirty_pages(const PageDelta& d, uint64_t start, size_t n) {
  std::vector<size_t> out;
  d.split(start, n, [&](uint64_t s, uint64_t k, bool dirty) {
    if (dirty)
      for (uint64_t i = 0; i < k; i++) out.push_back((s - start) / kPage + i);
  });
  return out;
}

TEST(DirtyTracking, SeesExactlyWhatTheProcessWrote) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (ptrace)";
  auto* mem = static_cast<char*>(
      mmap(nullptr, kPages * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(mem, MAP_FAILED);
  memset(mem, 1, kPages * kPage);
  auto base = reinterpret_cast<uint64_t>(mem);
  Child child(mem);

  std::unique_ptr<DirtyTracker> tr;
  {
    Stopped s(child.pid);
    tr = DirtyTracker::arm(s.rt(), child.pid, proc::read_smaps(child.pid));
  }
  // The child holds no userfaultfd of ours.
  for (int fd : proc::list_fds(child.pid))
    EXPECT_EQ(read_link(strfmt("/proc/%d/fd/%d", child.pid, fd)).find("userfaultfd"),
              std::string::npos);

  child.send('w', 5);
  child.send('w', 40);
  child.send('w', 40);
  {
    Stopped s(child.pid);
    PageDelta d = tr->collect(proc::read_smaps(child.pid));
    EXPECT_EQ(dirty_pages(d, base, kPages), (std::vector<size_t>{5, 40}));
    tr->rearm(proc::read_smaps(child.pid));
  }
  // Collected pages are protected again: nothing new is dirty.
  child.send('w', 7);
  {
    Stopped s(child.pid);
    PageDelta d = tr->collect(proc::read_smaps(child.pid));
    EXPECT_EQ(dirty_pages(d, base, kPages), std::vector<size_t>{7});
    tr->rearm(proc::read_smaps(child.pid));
  }
  // New memory is dirty as a whole; memory moved by mremap too, at its new
  // place, and its old place is gone.
  uint64_t fresh = base + 0x40000000, moved = base + 0x80000000;
  child.send('m', 4, fresh);
  child.send('r', 16, moved);
  {
    Stopped s(child.pid);
    PageDelta d = tr->collect(proc::read_smaps(child.pid));
    EXPECT_EQ(dirty_pages(d, fresh, 4).size(), 4u);
    EXPECT_EQ(dirty_pages(d, moved, 8).size(), 8u);
    EXPECT_EQ(dirty_pages(d, base, 16), std::vector<size_t>{});
    tr->rearm(proc::read_smaps(child.pid));
  }
  // Once re-armed, both are tracked like the rest.
  child.send('w', 2);
  {
    Stopped s(child.pid);
    PageDelta d = tr->collect(proc::read_smaps(child.pid));
    EXPECT_EQ(dirty_pages(d, fresh, 4), std::vector<size_t>{});
    EXPECT_EQ(dirty_pages(d, moved, 8), std::vector<size_t>{});
    EXPECT_EQ(dirty_pages(d, base, 16), std::vector<size_t>{2});
  }
  EXPECT_TRUE(tr->alive());
  child.send('q');
  waitpid(child.pid, nullptr, 0);
  EXPECT_FALSE(tr->alive());
  munmap(mem, kPages * kPage);
}

TEST(DirtyTracking, SplitCutsRunsAtTrackedAndWrittenEdges) {
  PageDelta d;
  d.tracked = {{0x10000, 0x20000}};
  d.written = {{0x12000, 0x13000}};
  std::vector<std::tuple<uint64_t, uint64_t, bool>> got;
  d.split(0xe000, 20, [&](uint64_t s, uint64_t n, bool dirty) { got.emplace_back(s, n, dirty); });
  std::vector<std::tuple<uint64_t, uint64_t, bool>> want = {{0xe000, 2, true},
                                                            {0x10000, 2, false},
                                                            {0x12000, 1, true},
                                                            {0x13000, 13, false},
                                                            {0x20000, 2, true}};
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace ckpt
