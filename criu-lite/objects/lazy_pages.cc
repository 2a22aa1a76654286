#include "objects/lazy_pages.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "image/page_store.h"
#include "sys/error.h"
#include "sys/log.h"

namespace ckpt {

namespace {

constexpr uint64_t kPage = kLazyPage;
constexpr uint64_t kFaultPages = 16;  // read around a fault: the next ones are likely next
constexpr uint64_t kFillPages = 256;  // one filler step, the pager's lock held

using Clock = std::chrono::steady_clock;

// Removes [s, e) from a sorted list of disjoint ranges.
void subtract(std::vector<LazyRange>& v, uint64_t s, uint64_t e) {
  std::vector<LazyRange> out;
  out.reserve(v.size() + 1);
  for (const auto& r : v) {
    if (r.end <= s || r.start >= e) {
      out.push_back(r);
      continue;
    }
    if (r.start < s) out.push_back({r.start, s});
    if (r.end > e) out.push_back({e, r.end});
  }
  v.swap(out);
}

// The range of v holding a, or nullptr.
const LazyRange* find(const std::vector<LazyRange>& v, uint64_t a) {
  auto it = std::upper_bound(v.begin(), v.end(), a,
                             [](uint64_t x, const LazyRange& r) { return x < r.start; });
  if (it == v.begin()) return nullptr;
  --it;
  return a < it->end ? &*it : nullptr;
}

}  // namespace

LazyPager::LazyPager(PageSource& src) : src_(src) {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw_errno("eventfd");
  wake_.reset(fd);
  // Started now, before a restore pins ckpt to one CPU: faults are served
  // on any.
  faults_ = std::thread([this] { fault_loop(); });
}

LazyPager::~LazyPager() {
  stop();
}

uint64_t LazyPager::features() {
  return UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
         UFFD_FEATURE_EVENT_UNMAP;
}

void LazyPager::add(const std::string& id, pid_t pid, Uffd uffd, std::vector<LazyRange> registered,
                    std::vector<LazyRange> pages) {
  auto mm = std::make_unique<Mm>();
  mm->id = id;
  mm->pid = pid;
  mm->uffd = std::move(uffd);
  for (const auto& r : registered) mm->segs.push_back({r.start, r.end, r.start});
  std::sort(mm->segs.begin(), mm->segs.end(),
            [](const Segment& a, const Segment& b) { return a.start < b.start; });
  // Only pages inside a registered range are this pager's to fill.
  for (const auto& p : pages)
    for (const auto& s : mm->segs) {
      uint64_t a = std::max(p.start, s.start), b = std::min(p.end, s.end);
      if (a < b) mm->pages.push_back({a, b});
    }
  std::sort(mm->pages.begin(), mm->pages.end(),
            [](const LazyRange& a, const LazyRange& b) { return a.start < b.start; });
  mm->todo = mm->pages;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (const auto& p : mm->pages) total_pages_ += (p.end - p.start) / kPage;
    mms_.push_back(std::move(mm));
  }
  uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof one);
}

void LazyPager::start_fill() {
  std::lock_guard<std::mutex> lk(mu_);
  if (filling_) return;
  filling_ = true;
  filler_ = std::thread([this] { fill_loop(); });
}

void LazyPager::fail(std::exception_ptr e) {
  std::lock_guard<std::mutex> lk(mu_);
  if (!error_) error_ = e;
  cv_.notify_all();
}

// ---------------------------------------------------------------- faults

void LazyPager::fault_loop() {
  try {
    while (!stop_) {
      std::vector<pollfd> fds{{wake_.get(), POLLIN, 0}};
      std::vector<Mm*> by_fd{nullptr};
      {
        std::lock_guard<std::mutex> lk(mu_);
        for (auto& m : mms_)
          if (!m->gone) {
            fds.push_back({m->uffd.fd(), POLLIN, 0});
            by_fd.push_back(m.get());
          }
      }
      // A fault whose page could not be placed yet (an event is pending)
      // is retried soon; otherwise wait for work.
      int n = poll(fds.data(), fds.size(), 50);
      if (n < 0 && errno != EINTR) throw_errno("poll userfaultfds");
      if (fds[0].revents & POLLIN) {
        uint64_t v;
        (void)!read(wake_.get(), &v, sizeof v);
      }
      std::lock_guard<std::mutex> lk(mu_);
      for (size_t i = 1; i < fds.size(); i++)
        if (fds[i].revents & (POLLIN | POLLERR | POLLHUP)) handle_msgs(*by_fd[i]);
      retire_done();
    }
  } catch (...) {
    fail(std::current_exception());
  }
}

// Reads and acts on every message waiting on mm's descriptor (mu_ held).
bool LazyPager::handle_msgs(Mm& mm) {
  bool any = false;
  for (;;) {
    uffd_msg msgs[32];
    ssize_t n = read(mm.uffd.fd(), msgs, sizeof msgs);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      // The process is gone (its address space with it).
      mm.gone = true;
      break;
    }
    if (n == 0) {
      mm.gone = true;
      break;
    }
    any = true;
    for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); i++) {
      const uffd_msg& m = msgs[i];
      switch (m.event) {
        case UFFD_EVENT_PAGEFAULT:
          serve_fault(mm, m.arg.pagefault.address);
          break;
        case UFFD_EVENT_FORK: {
          // The child starts with the parent's layout and misses what the
          // parent misses now (filling the parent waits for this read).
          auto c = std::make_unique<Mm>();
          c->id = mm.id;
          c->uffd = Uffd::own(UniqueFd(static_cast<int>(m.arg.fork.ufd)));
          c->segs = mm.segs;
          c->pages = mm.pages;
          c->todo = mm.todo;
          LOG_DEBUG("lazy pages: %s forked (%zu ranges to fill)", mm.id.c_str(), c->todo.size());
          mms_.push_back(std::move(c));
          break;
        }
        case UFFD_EVENT_REMAP:
          remap(mm, m.arg.remap.from, m.arg.remap.to, m.arg.remap.len);
          break;
        case UFFD_EVENT_REMOVE:
        case UFFD_EVENT_UNMAP:
          drop(mm, m.arg.remove.start, m.arg.remove.end);
          break;
        default:
          break;
      }
    }
  }
  return any;
}

void LazyPager::serve_fault(Mm& mm, uint64_t addr) {
  auto t0 = Clock::now();
  uint64_t page = addr & ~(kPage - 1);
  stats_.faults++;
  const Segment* seg = nullptr;
  for (const auto& s : mm.segs)
    if (page >= s.start && page < s.end) seg = &s;
  uint64_t image = seg ? seg->image + (page - seg->start) : 0;
  const LazyRange* have = seg ? find(mm.pages, image) : nullptr;
  const LazyRange* todo = have ? find(mm.todo, image) : nullptr;
  Uffd::Fill r;
  if (!todo) {
    // No content in the image (or dropped since): fresh memory reads as
    // zeros. A page filled meanwhile makes this a wake-up.
    stats_.zero_faults++;
    r = mm.uffd.zero(page, kPage);
  } else {
    uint64_t n = std::min({kFaultPages, (todo->end - image) / kPage, (seg->end - page) / kPage});
    uint8_t buf[kFaultPages * kPage];
    if (!src_.read(mm.id, image, n, buf, true)) {
      stats_.waits++;
      waiting_.push_back({&mm, page, image});
      return;
    }
    uint64_t done = 0;
    r = mm.uffd.fill(page, buf, n * kPage, &done);
    if (r == Uffd::Fill::kDone) subtract(mm.todo, image, image + n * kPage);
    mm.uffd.wake(page, kPage);
  }
  if (r == Uffd::Fill::kGone)
    LOG_DEBUG("lazy pages: %s fault at %#lx: range gone", mm.id.c_str(), page);
  // kRetry: an event is pending; the thread faults again once it is read.
  if (r == Uffd::Fill::kRetry) mm.uffd.wake(page, kPage);
  auto us = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
  stats_.max_fault_us = std::max(stats_.max_fault_us, us);
}

// Pages of [start, end) (task addresses) left the address space, or were
// discarded: they must read as zeros now, not as the image's content.
void LazyPager::drop(Mm& mm, uint64_t start, uint64_t end) {
  std::vector<Segment> out;
  for (const auto& s : mm.segs) {
    if (s.end <= start || s.start >= end) {
      out.push_back(s);
      continue;
    }
    uint64_t a = std::max(s.start, start), b = std::min(s.end, end);
    subtract(mm.todo, s.image + (a - s.start), s.image + (b - s.start));
    if (s.start < a) out.push_back({s.start, a, s.image});
    if (b < s.end) out.push_back({b, s.end, s.image + (b - s.start)});
  }
  mm.segs.swap(out);
}

void LazyPager::remap(Mm& mm, uint64_t from, uint64_t to, uint64_t len) {
  std::vector<Segment> moved, out;
  for (const auto& s : mm.segs) {
    uint64_t a = std::max(s.start, from), b = std::min(s.end, from + len);
    if (a >= b) {
      out.push_back(s);
      continue;
    }
    if (s.start < a) out.push_back({s.start, a, s.image});
    if (b < s.end) out.push_back({b, s.end, s.image + (b - s.start)});
    moved.push_back({to + (a - from), to + (b - from), s.image + (a - s.start)});
  }
  // Whatever was at the destination before is replaced.
  std::vector<Segment> kept;
  for (const auto& s : out) {
    uint64_t a = std::max(s.start, to), b = std::min(s.end, to + len);
    if (a >= b) {
      kept.push_back(s);
      continue;
    }
    subtract(mm.todo, s.image + (a - s.start), s.image + (b - s.start));
    if (s.start < a) kept.push_back({s.start, a, s.image});
    if (b < s.end) kept.push_back({b, s.end, s.image + (b - s.start)});
  }
  kept.insert(kept.end(), moved.begin(), moved.end());
  std::sort(kept.begin(), kept.end(),
            [](const Segment& x, const Segment& y) { return x.start < y.start; });
  mm.segs.swap(kept);
}

// Copies image pages [image, +npages) wherever mm holds them now (mu_
// held). False: retry later (the address space is changing).
bool LazyPager::fill_range(Mm& mm, uint64_t image, uint64_t npages, const uint8_t* data) {
  uint64_t iend = image + npages * kPage;
  for (const auto& s : mm.segs) {
    uint64_t slen = s.end - s.start;
    uint64_t a = std::max(image, s.image), b = std::min(iend, s.image + slen);
    if (a >= b) continue;
    uint64_t done = 0;
    auto r = mm.uffd.fill(s.start + (a - s.image), data + (a - image), b - a, &done);
    if (r == Uffd::Fill::kRetry) return false;
    if (r == Uffd::Fill::kGone) LOG_DEBUG("lazy pages: %s: range %#lx gone", mm.id.c_str(), a);
  }
  subtract(mm.todo, image, iend);
  return true;
}

// ---------------------------------------------------------------- filling

void LazyPager::fill_loop() {
  try {
    std::vector<uint8_t> buf(kFillPages * kPage);
    while (!stop_) {
      // The next piece of the first address space with work left.
      Mm* mm = nullptr;
      LazyRange piece{};
      {
        std::unique_lock<std::mutex> lk(mu_);
        for (auto& m : mms_) {
          if (m->gone || m->complete) continue;
          for (const auto& t : m->todo) {
            // A remote source fills on arrival; take only what is here.
            piece = {t.start, std::min(t.end, t.start + kFillPages * kPage)};
            mm = m.get();
            break;
          }
          if (mm) break;
        }
        if (!mm) {
          // Nothing to do until a fork adds an address space.
          cv_.wait_for(lk, std::chrono::milliseconds(20));
          continue;
        }
      }
      uint64_t n = (piece.end - piece.start) / kPage;
      if (!src_.read(mm->id, piece.start, n, buf.data(), false)) {
        // Not here yet (a remote source pushes it, and arrived() fills
        // it): look again once something arrives.
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait_for(lk, std::chrono::milliseconds(20));
        continue;
      }
      std::lock_guard<std::mutex> lk(mu_);
      if (mm->gone || !find(mm->todo, piece.start)) continue;
      if (fill_range(*mm, piece.start, n, buf.data())) {
        stats_.filled += n;
      }
      uint64_t one = 1;
      (void)!write(wake_.get(), &one, sizeof one);  // let the fault thread retire it
    }
  } catch (...) {
    fail(std::current_exception());
  }
}

void LazyPager::arrived(const std::string& id, uint64_t vaddr, uint64_t npages,
                        const uint8_t* data) {
  std::lock_guard<std::mutex> lk(mu_);
  uint64_t end = vaddr + npages * kPage;
  for (auto& m : mms_) {
    if (m->gone || m->id != id) continue;
    // Only the pages still missing: the rest may have been written since.
    std::vector<LazyRange> want;
    for (const auto& t : m->todo) {
      uint64_t a = std::max(t.start, vaddr), b = std::min(t.end, end);
      if (a < b) want.push_back({a, b});
    }
    for (const auto& w : want)
      if (fill_range(*m, w.start, (w.end - w.start) / kPage, data + (w.start - vaddr)))
        stats_.filled += (w.end - w.start) / kPage;
  }
  // Faults that waited for these pages: their page is in now (the copy
  // woke them) or they fault again and are served then.
  wake_waiting(id, vaddr, end);
}

void LazyPager::arrived_zero(const std::string& id, uint64_t vaddr, uint64_t npages) {
  std::lock_guard<std::mutex> lk(mu_);
  uint64_t end = vaddr + npages * kPage;
  for (auto& m : mms_) {
    if (m->gone || m->id != id) continue;
    subtract(m->todo, vaddr, end);
    subtract(m->pages, vaddr, end);
  }
  // Faults that waited there fault again and get the zero page.
  wake_waiting(id, vaddr, end);
}

void LazyPager::wake_waiting(const std::string& id, uint64_t vaddr, uint64_t end) {
  std::vector<Waiting> still;
  for (const auto& w : waiting_) {
    if (w.mm->id == id && w.image >= vaddr && w.image < end)
      w.mm->uffd.wake(w.addr, kPage);
    else
      still.push_back(w);
  }
  waiting_.swap(still);
  cv_.notify_all();
  uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof one);
}

// Address spaces with nothing left to fill are complete: still served
// (faults on fresh memory) until every one is, when wait_done() closes
// them all (mu_ held, fault thread only).
void LazyPager::retire_done() {
  bool all = true;
  for (auto& m : mms_) {
    if (!m->gone && !m->complete && m->todo.empty() &&
        std::none_of(waiting_.begin(), waiting_.end(),
                     [&](const Waiting& w) { return w.mm == m.get(); }))
      m->complete = true;
    if (m->gone) m->todo.clear();
    all = all && (m->gone || m->complete);
  }
  if (all) cv_.notify_all();
}

namespace {

// The guard's whole life, after fork(): async-signal-safe calls only (the
// parent has threads). It waits on a pipe: a byte from ckpt means all is
// well; end of file means ckpt is gone (every thread of it: a signal on
// parent death comes when the forking thread dies, which may be before the
// rest), and then it stops and kills every process of the tree.
[[noreturn]] void guard_main(int told, pid_t root) {
  char c;
  ssize_t r;
  do r = read(told, &c, 1);
  while (r < 0 && errno == EINTR);
  if (r == 1) _exit(0);
  // ckpt died with pages missing: the tree must not run on without them.
  pid_t all[4096];
  size_t n = 0, i = 0;
  all[n++] = root;
  for (; i < n; i++) {
    kill(all[i], SIGSTOP);
    char full[96], buf[4096];
    size_t k = 0;
    auto put = [&](const char* t) {
      while (*t && k < sizeof full - 1) full[k++] = *t++;
    };
    auto put_num = [&](pid_t v) {
      char d[16];
      int m = 0;
      do {
        d[m++] = static_cast<char>('0' + v % 10);
        v /= 10;
      } while (v > 0 && m < 15);
      while (m > 0 && k < sizeof full - 1) full[k++] = d[--m];
    };
    put("/proc/");
    put_num(all[i]);
    put("/task/");
    put_num(all[i]);
    put("/children");
    full[k] = 0;
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got <= 0) continue;
    pid_t v = 0;
    for (ssize_t j = 0; j < got && n < 4096; j++) {
      if (buf[j] >= '0' && buf[j] <= '9') {
        v = v * 10 + (buf[j] - '0');
      } else if (v) {
        all[n++] = v;
        v = 0;
      }
    }
  }
  for (i = 0; i < n; i++) kill(all[i], SIGKILL);
  _exit(1);
}

}  // namespace

void LazyPager::guard(pid_t root) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    LOG_WARN("lazy pages: no guard process (pipe: %s)", strerror(errno));
    return;
  }
  pid_t g = fork();
  if (g < 0) {
    LOG_WARN(
        "lazy pages: no guard process (fork: %s): if ckpt dies now, the tree reads "
        "zeros where its pages were missing",
        strerror(errno));
    close(p[0]);
    close(p[1]);
    return;
  }
  if (g == 0) {
    close(p[1]);
    guard_main(p[0], root);
  }
  close(p[0]);
  guard_ = g;
  guard_fd_.reset(p[1]);
}

void LazyPager::unguard(bool all_in) {
  if (guard_ <= 0) return;
  if (all_in) (void)!write(guard_fd_.get(), "d", 1);
  guard_fd_.reset();
  waitpid(guard_, nullptr, 0);
  guard_ = 0;
}

bool LazyPager::wait_done(int timeout_ms) {
  std::unique_lock<std::mutex> lk(mu_);
  auto done = [&] {
    return error_ || std::all_of(mms_.begin(), mms_.end(),
                                 [](const auto& m) { return m->gone || m->complete; });
  };
  if (timeout_ms < 0)
    cv_.wait(lk, done);
  else if (!cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), done))
    return false;
  if (error_) std::rethrow_exception(error_);
  // Every page is in: closing the descriptors (ours, then the guard's)
  // unregisters the memory; the tree never knew.
  for (auto& m : mms_) {
    m->gone = true;
    m->uffd = Uffd();
  }
  lk.unlock();
  unguard(true);
  return true;
}

uint64_t LazyPager::pages_left() const {
  std::lock_guard<std::mutex> lk(mu_);
  uint64_t n = 0;
  for (const auto& m : mms_)
    if (!m->gone && m->pid != 0)
      for (const auto& t : m->todo) n += (t.end - t.start) / kPage;
  return n;
}

LazyStats LazyPager::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void LazyPager::stop() {
  // Stopped with pages still missing (the pager failed, or its caller
  // gave up): the tree cannot run on without them, and the guard, let go
  // without an "all in", kills it.
  bool missing = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (const auto& m : mms_) missing = missing || (!m->gone && !m->complete);
  }
  unguard(!missing);
  stop_ = true;
  uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof one);
  cv_.notify_all();
  if (faults_.joinable()) faults_.join();
  if (filler_.joinable()) filler_.join();
  std::lock_guard<std::mutex> lk(mu_);
  for (auto& m : mms_) {
    m->gone = true;
    m->uffd = Uffd();
  }
}

// ---------------------------------------------------------------- sources

struct ImagePageSource::Reader {
  image::PageReader reader;
  std::unique_ptr<image::PageReader::Cursor> cursor;
  uint64_t last = 0;
  Reader(const image::ImageSource& src, const std::string& id) : reader(src, id) {}
};

ImagePageSource::ImagePageSource(std::shared_ptr<const image::ImageSource> src)
    : src_(std::move(src)) {}
ImagePageSource::~ImagePageSource() = default;

bool ImagePageSource::read(const std::string& id, uint64_t vaddr, uint64_t npages, uint8_t* dst,
                           bool) {
  std::lock_guard<std::mutex> lk(mu_);
  auto& r = readers_[id];
  // A cursor is cheap going forward; a fault behind it starts a new one.
  if (!r) r = std::make_unique<Reader>(*src_, id);
  if (!r->cursor || vaddr < r->last)
    r->cursor = std::make_unique<image::PageReader::Cursor>(r->reader);
  r->last = vaddr;
  uint64_t got = 0;
  r->cursor->read(vaddr, npages, [&](uint64_t at, const uint8_t* data, size_t n) {
    std::memcpy(dst + (at - vaddr), data, n * kPage);
    got += n;
  });
  if (got != npages)
    throw Error(strfmt("%s: pages of %s at %#lx: %lu of %lu in the images", src_->where().c_str(),
                       id.c_str(), vaddr, got, npages));
  return true;
}

}  // namespace ckpt
