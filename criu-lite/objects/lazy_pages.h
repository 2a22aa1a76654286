// Lazy restore of private memory: the tree runs before its pages are in
// place. Live migration uses it twice: post-copy (pages come from the
// source host while the container already runs on this one) and the last
// step of pre-copy (pages already received, but copying a whole address
// space into the task would be most of the downtime).
//
// restore_mm registers each task's private anonymous VMAs with a
// userfaultfd in MISSING mode and, instead of copying the pages, hands the
// descriptor to a LazyPager. The pager's fault thread answers every fault
// from a PageSource (UFFDIO_COPY, or the zero page for memory the image has
// no page for) while a filler copies every other page in the background.
// Once an address space is complete its userfaultfd is closed, which
// unregisters it; the task never knows.
//
// Non-cooperative events keep this right while the task runs: a fork gives
// the child's descriptor (its missing pages are the parent's), mremap moves
// where an image page now lives, munmap and MADV_DONTNEED drop pages that
// must then read as zero instead of the image's content.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "image/image_io.h"
#include "sys/fd.h"
#include "sys/uffd.h"

namespace ckpt {

constexpr uint64_t kLazyPage = 4096;

struct LazyRange {
  uint64_t start = 0, end = 0;
};

// Where lazily restored pages come from. Called from the pager's threads.
class PageSource {
 public:
  virtual ~PageSource() = default;
  // Copies npages pages of address space `id` at image address vaddr into
  // dst and returns true, or returns false if they are not here yet (a
  // remote source then asks for them, if `ask`, and calls
  // LazyPager::arrived when they come).
  virtual bool read(const std::string& id, uint64_t vaddr, uint64_t npages, uint8_t* dst,
                    bool ask) = 0;
};

// Pages of a checkpoint (with its parent chain), read where they lie.
class ImagePageSource : public PageSource {
 public:
  explicit ImagePageSource(std::shared_ptr<const image::ImageSource> src);
  ~ImagePageSource() override;
  bool read(const std::string& id, uint64_t vaddr, uint64_t npages, uint8_t* dst,
            bool ask) override;

 private:
  struct Reader;
  std::shared_ptr<const image::ImageSource> src_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Reader>> readers_;
};

struct LazyStats {
  uint64_t faults = 0;       // page faults served
  uint64_t zero_faults = 0;  // of them, with the zero page
  uint64_t waits = 0;        // faults that waited for a page to arrive
  uint64_t filled = 0;       // pages copied in the background
  uint64_t max_fault_us = 0;
};

class LazyPager {
 public:
  explicit LazyPager(PageSource& src);
  ~LazyPager();  // stops the threads, closes every descriptor
  LazyPager(const LazyPager&) = delete;
  LazyPager& operator=(const LazyPager&) = delete;

  // The features to ask UFFDIO_API for on a descriptor given to add().
  static uint64_t features();

  // A task's address space: uffd is registered (MISSING) over `registered`;
  // `pages` are where the image has pages there (elsewhere: zero). The
  // fault thread serves it from now on (the restore itself touches the
  // task's memory after this).
  void add(const std::string& id, pid_t pid, Uffd uffd, std::vector<LazyRange> registered,
           std::vector<LazyRange> pages);
  // Starts copying every page not faulted in yet (once the tree runs: the
  // faults of a starting task go first).
  void start_fill();
  // A remote source got pages: copied into every address space of that id
  // that still misses them, waking the faults that waited.
  void arrived(const std::string& id, uint64_t vaddr, uint64_t npages, const uint8_t* data);
  // A remote source says these pages were never written: they read as
  // zeros (faults get the zero page), and nothing is filled there.
  void arrived_zero(const std::string& id, uint64_t vaddr, uint64_t npages);
  // Waits until every address space is complete (true) or the pager failed
  // (its error is thrown). timeout_ms < 0: no limit; false on timeout.
  bool wait_done(int timeout_ms = -1);
  // Pages still missing in all address spaces (for a progress bar).
  uint64_t pages_left() const;
  uint64_t pages_total() const { return total_pages_; }
  LazyStats stats() const;
  // Stops serving: the threads end and the descriptors are closed. Tasks
  // that fault afterwards get SIGBUS (the caller kills the tree first).
  void stop();

  // Until every page is in: a child process holds a copy of every
  // descriptor and, should ckpt die first, kills the tree rooted at root
  // (it would otherwise read zeros where its pages were missing, once the
  // last descriptor closed). Ended by wait_done(); stop() with pages still
  // missing has it kill the tree. Processes
  // the tree forks meanwhile have descriptors the guard lacks: if ckpt
  // dies, they are killed with the tree, but may read zeros for a moment.
  void guard(pid_t root);

 private:
  struct Segment {  // [start, end) of the task now holds image [image, +len)
    uint64_t start, end, image;
  };
  struct Mm {
    std::string id;
    pid_t pid = 0;  // of the task first restored with it (0: a fork child)
    Uffd uffd;
    std::vector<Segment> segs;     // sorted by start, disjoint
    std::vector<LazyRange> pages;  // image addresses with content, sorted
    std::vector<LazyRange> todo;   // image addresses not filled yet
    bool complete = false;         // todo empty: only zero-page faults left
    bool gone = false;             // descriptor closed (or the process gone)
  };
  // Wakes the faults waiting on image pages [vaddr, end) of id, and the
  // threads that wait for arrivals (mu_ held).
  void wake_waiting(const std::string& id, uint64_t vaddr, uint64_t end);
  void fault_loop();
  void fill_loop();
  bool handle_msgs(Mm& mm);
  void serve_fault(Mm& mm, uint64_t addr);
  bool fill_range(Mm& mm, uint64_t image, uint64_t npages, const uint8_t* data);
  void drop(Mm& mm, uint64_t start, uint64_t end);
  void remap(Mm& mm, uint64_t from, uint64_t to, uint64_t len);
  void retire_done();
  void fail(std::exception_ptr e);

  PageSource& src_;
  mutable std::mutex mu_;  // the address spaces and their segments
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Mm>> mms_;
  struct Waiting {
    Mm* mm;
    uint64_t addr, image;
  };
  std::vector<Waiting> waiting_;  // faults waiting for a remote page
  UniqueFd wake_;                 // eventfd: poll set changed, or stop
  std::thread faults_, filler_;
  std::atomic<bool> stop_{false};
  bool filling_ = false;
  pid_t guard_ = 0;
  UniqueFd guard_fd_;  // its pipe: a byte says "all well, go"; EOF says ckpt died
  void unguard(bool all_in);
  std::exception_ptr error_;
  uint64_t total_pages_ = 0;
  LazyStats stats_;
};

}  // namespace ckpt
