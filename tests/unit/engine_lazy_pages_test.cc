// LazyPager on memory of this very process: a userfaultfd over an anonymous
// mapping, faults taken by the test thread, served by the pager's thread
// from a fake source; then the events a running tree causes (fork,
// mremap, MADV_DONTNEED) while pages are still missing.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/userfaultfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>

#include <atomic>
#include <cstring>
#include <mutex>

#include "objects/lazy_pages.h"
#include "sys/error.h"

namespace ckpt {
namespace {

constexpr uint64_t kPage = 4096;

uint64_t pattern(uint64_t image_addr, size_t word) {
  return image_addr * 31 + word + 1;
}

// Pages of "address space" `id`: every word a function of its address in
// the image; counts what it was asked for.
class FakeSource : public PageSource {
 public:
  bool read(const std::string&, uint64_t vaddr, uint64_t npages, uint8_t* dst, bool) override {
    reads++;
    for (uint64_t p = 0; p < npages; p++) {
      auto* w = reinterpret_cast<uint64_t*>(dst + p * kPage);
      for (size_t i = 0; i < kPage / 8; i++) w[i] = pattern(vaddr + p * kPage, i);
    }
    return true;
  }
  std::atomic<int> reads{0};
};

bool page_is(const char* at, uint64_t image_addr) {
  auto* w = reinterpret_cast<const uint64_t*>(at);
  for (size_t i = 0; i < kPage / 8; i += 37)
    if (w[i] != pattern(image_addr, i)) return false;
  return true;
}

bool page_is_zero(const char* at) {
  for (size_t i = 0; i < kPage; i++)
    if (at[i]) return false;
  return true;
}

class LazyPagesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    if (fd < 0) GTEST_SKIP() << "userfaultfd: " << strerror(errno);
    uffd_ = Uffd::own(UniqueFd(fd));
    uffd_.api(LazyPager::features());
    mem_ = static_cast<char*>(
        mmap(nullptr, kPages * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(mem_, MAP_FAILED);
    base_ = reinterpret_cast<uint64_t>(mem_);
    uffd_.register_missing(base_, kPages * kPage);
  }
  void TearDown() override {
    if (mem_ && mem_ != MAP_FAILED) munmap(mem_, kPages * kPage);
  }
  // The image has content for pages [0, 48); 48..63 are holes (zero).
  void add(LazyPager& pager) {
    pager.add("1", getpid(), std::move(uffd_), {{base_, base_ + kPages * kPage}},
              {{base_, base_ + 48 * kPage}});
  }
  static constexpr uint64_t kPages = 64;
  Uffd uffd_;
  char* mem_ = nullptr;
  uint64_t base_ = 0;
};

TEST_F(LazyPagesTest, FaultsAreServedAndTheRestIsFilled) {
  FakeSource src;
  LazyPager pager(src);
  add(pager);
  // Touched before any filling: served by the fault thread.
  EXPECT_TRUE(page_is(mem_ + 5 * kPage, base_ + 5 * kPage));
  EXPECT_TRUE(page_is_zero(mem_ + 50 * kPage));  // a hole of the image
  mem_[7 * kPage] = 1;                           // a write fault gets the page first
  EXPECT_EQ(mem_[7 * kPage + 8], static_cast<char>(pattern(base_ + 7 * kPage, 1)));
  EXPECT_GE(pager.stats().faults, 2u);
  pager.start_fill();
  ASSERT_TRUE(pager.wait_done(10000));
  for (uint64_t p = 0; p < 48; p++) {
    if (p != 7) {
      EXPECT_TRUE(page_is(mem_ + p * kPage, base_ + p * kPage)) << "page " << p;
    }
  }
  EXPECT_EQ(mem_[7 * kPage], 1) << "the fill overwrote a page written since";
  EXPECT_EQ(pager.pages_left(), 0u);
}

TEST_F(LazyPagesTest, DiscardedPagesReadAsZeroAndMovedPagesFollow) {
  FakeSource src;
  LazyPager pager(src);
  add(pager);
  // Pages 10..11 discarded before they were ever filled: zeros, not the
  // image's content.
  ASSERT_EQ(madvise(mem_ + 10 * kPage, 2 * kPage, MADV_DONTNEED), 0);
  // Pages 20..27 moved elsewhere before they were filled: their content
  // follows them.
  void* to = mmap(nullptr, 8 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(to, MAP_FAILED);
  char* moved = static_cast<char*>(
      mremap(mem_ + 20 * kPage, 8 * kPage, 8 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED, to));
  ASSERT_NE(moved, MAP_FAILED);
  EXPECT_TRUE(page_is_zero(mem_ + 10 * kPage));
  EXPECT_TRUE(page_is(moved + 3 * kPage, base_ + 23 * kPage));
  pager.start_fill();
  ASSERT_TRUE(pager.wait_done(10000));
  EXPECT_TRUE(page_is_zero(mem_ + 11 * kPage));
  for (uint64_t p = 0; p < 8; p++)
    EXPECT_TRUE(page_is(moved + p * kPage, base_ + (20 + p) * kPage)) << "moved page " << p;
  EXPECT_TRUE(page_is(mem_ + 30 * kPage, base_ + 30 * kPage));
  munmap(moved, 8 * kPage);
}

TEST_F(LazyPagesTest, AChildForkedBeforeTheFillGetsItsPages) {
  FakeSource src;
  LazyPager pager(src);
  add(pager);
  EXPECT_TRUE(page_is(mem_ + 1 * kPage, base_ + 1 * kPage));
  // A raw clone, not fork(): glibc's fork holds the malloc locks across
  // the syscall, which waits for the pager to read the fork event, and the
  // pager allocates to handle it. (A restored task is another process:
  // no such lock is shared there.)
  pid_t child = static_cast<pid_t>(syscall(SYS_clone, SIGCHLD, nullptr, nullptr, nullptr, 0));
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Missing here too: served through the child's own descriptor.
    bool ok = page_is(mem_ + 1 * kPage, base_ + 1 * kPage);
    for (uint64_t p = 2; p < 48; p++) ok = ok && page_is(mem_ + p * kPage, base_ + p * kPage);
    ok = ok && page_is_zero(mem_ + 60 * kPage);
    _exit(ok ? 0 : 1);
  }
  int st = 0;
  ASSERT_EQ(waitpid(child, &st, 0), child);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "child saw wrong memory: " << st;
  pager.start_fill();
  ASSERT_TRUE(pager.wait_done(10000));
  EXPECT_TRUE(page_is(mem_ + 40 * kPage, base_ + 40 * kPage));
}

// Has nothing itself, like a post-copy source: pages come through
// arrived() and arrived_zero(). Records what it was asked for.
class RemoteLikeSource : public PageSource {
 public:
  bool read(const std::string&, uint64_t vaddr, uint64_t, uint8_t*, bool ask) override {
    std::lock_guard<std::mutex> l(mu);
    if (ask) asked.push_back(vaddr);
    return false;
  }
  std::mutex mu;
  std::vector<uint64_t> asked;
};

TEST_F(LazyPagesTest, PagesTheSourceNeverWroteReadAsZero) {
  RemoteLikeSource src;
  LazyPager pager(src);
  add(pager);
  // The source says 16..31 were never written: a fault there gets the zero
  // page at once, without asking.
  pager.arrived_zero("1", base_ + 16 * kPage, 16);
  EXPECT_TRUE(page_is_zero(mem_ + 20 * kPage));
  std::vector<uint8_t> data(16 * kPage);
  for (uint64_t first : {0, 32}) {
    for (uint64_t p = 0; p < 16; p++) {
      auto* w = reinterpret_cast<uint64_t*>(data.data() + p * kPage);
      for (size_t i = 0; i < kPage / 8; i++) w[i] = pattern(base_ + (first + p) * kPage, i);
    }
    pager.arrived("1", base_ + first * kPage, 16, data.data());
  }
  pager.start_fill();
  ASSERT_TRUE(pager.wait_done(10000)) << "the fill waited for pages said to be zero";
  for (uint64_t p = 0; p < 48; p++) {
    bool zero = p >= 16 && p < 32;
    EXPECT_TRUE(zero ? page_is_zero(mem_ + p * kPage)
                     : page_is(mem_ + p * kPage, base_ + p * kPage))
        << "page " << p;
  }
  std::lock_guard<std::mutex> l(src.mu);
  for (uint64_t a : src.asked) {
    EXPECT_FALSE(a >= base_ + 16 * kPage && a < base_ + 32 * kPage) << "asked for zero page " << a;
  }
}

}  // namespace
}  // namespace ckpt
