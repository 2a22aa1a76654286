// VMA flags without smaps (objects/vma_flags.h): the BPF iterator's view of
// a stopped process must be what smaps says, mapping for mapping.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include <gtest/gtest.h>

#include "objects/vma_flags.h"
#include "sys/proc.h"

namespace ckpt {
namespace {

TEST(VmaFlags, CodesOfBits) {
  auto c = vma_flags::codes(0x1 | 0x20 | 0x20000 | 0x4000000 | (1ULL << 41));
  EXPECT_EQ(c, (std::vector<std::string>{"rd", "mw", "dc", "dd", "ui"}));
  EXPECT_TRUE(vma_flags::codes(0).empty());
}

// A child with one mapping per flag ckpt reads, file and shared ones,
// stopped while the test compares.
pid_t stopped_child() {
  pid_t pid = fork();
  if (pid == 0) {
    size_t pg = 4096;
    char* m = static_cast<char*>(
        mmap(nullptr, 32 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    int adv[] = {MADV_DONTFORK, MADV_DONTDUMP, MADV_WIPEONFORK, MADV_SEQUENTIAL,
                 MADV_RANDOM,   MADV_HUGEPAGE, MADV_NOHUGEPAGE};
    for (size_t i = 0; i < sizeof adv / sizeof adv[0]; i++)
      madvise(m + (2 * i + 1) * pg, pg, adv[i]);
    m[0] = 1;
    mlock(m + 20 * pg, pg);
    mprotect(m + 22 * pg, pg, PROT_READ);
    mmap(nullptr, pg, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    mmap(nullptr, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN, -1, 0);
    int fd = open("/proc/self/exe", O_RDONLY);
    mmap(nullptr, pg, PROT_READ, MAP_SHARED, fd, 0);
    raise(SIGSTOP);
    _exit(0);
  }
  int st;
  waitpid(pid, &st, WUNTRACED);
  return pid;
}

TEST(VmaFlags, SameAsSmaps) {
  if (!vma_flags::prepare()) GTEST_SKIP() << "no BPF task-VMA iterator here";
  pid_t pid = stopped_child();
  ASSERT_GT(pid, 0);
  auto bpf = vma_flags::read(pid);
  auto smaps = proc::read_smaps(pid);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  ASSERT_TRUE(bpf.has_value());
  ASSERT_EQ(bpf->size(), smaps.size());
  std::set<std::string> known;
  for (const auto& c : vma_flags::codes(~0ULL)) known.insert(c);
  std::set<std::string> seen;
  for (size_t i = 0; i < smaps.size(); i++) {
    const proc::Vma &a = (*bpf)[i], &b = smaps[i];
    SCOPED_TRACE(b.path + " at " + std::to_string(b.start));
    EXPECT_EQ(a.start, b.start);
    EXPECT_EQ(a.end, b.end);
    EXPECT_EQ(a.path, b.path);
    EXPECT_EQ(a.inode, b.inode);
    EXPECT_EQ(a.pgoff, b.pgoff);
    EXPECT_EQ(a.r, b.r);
    EXPECT_EQ(a.w, b.w);
    EXPECT_EQ(a.shared, b.shared);
    std::set<std::string> want, got(a.vm_flags.begin(), a.vm_flags.end());
    for (const auto& f : b.vm_flags)
      if (known.count(f)) want.insert(f);
    EXPECT_EQ(got, want);
    seen.insert(want.begin(), want.end());
  }
  for (const char* f : {"dc", "dd", "wf", "sr", "rr", "lo", "gd", "sh", "mw"})
    EXPECT_TRUE(seen.count(f)) << "no mapping with " << f;
}

TEST(VmaFlags, GoneProcessThrows) {
  if (!vma_flags::prepare()) GTEST_SKIP() << "no BPF task-VMA iterator here";
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  waitpid(pid, nullptr, 0);
  EXPECT_ANY_THROW(vma_flags::read(pid));
}

}  // namespace
}  // namespace ckpt
