#include "objects/dirty_tracking.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "sys/error.h"
#include "sys/log.h"
#include "sys/uapi.h"

namespace ckpt {

namespace {

constexpr uint64_t kPage = 4096;

// Private anonymous memory: what tracking covers. File-backed and shared
// memory is saved in full each time (uffd write-protect on private file
// mappings is not offered by the kernel).
bool trackable(const proc::Vma& v) {
  if (v.shared) return false;
  const std::string& p = v.path;
  if (!(p.empty() || p == "[heap]" || p == "[stack]" || p.rfind("[anon:", 0) == 0)) return false;
  // A VMA the process registered with a userfaultfd of its own (missing or
  // minor mode) cannot be registered with ours.
  return !v.has_flag("um") && !v.has_flag("ui");
}

std::vector<PageRange> merged(std::vector<PageRange> v) {
  std::sort(v.begin(), v.end(),
            [](const PageRange& a, const PageRange& b) { return a.start < b.start; });
  std::vector<PageRange> out;
  for (const auto& r : v) {
    if (!out.empty() && r.start <= out.back().end)
      out.back().end = std::max(out.back().end, r.end);
    else
      out.push_back(r);
  }
  return out;
}

// The parts of [start, end) that ranges (sorted, disjoint) cover.
std::vector<PageRange> intersect(const std::vector<PageRange>& ranges, uint64_t start,
                                 uint64_t end) {
  std::vector<PageRange> out;
  auto it = std::upper_bound(ranges.begin(), ranges.end(), start,
                             [](uint64_t a, const PageRange& r) { return a < r.end; });
  for (; it != ranges.end() && it->start < end; ++it)
    out.push_back({std::max(start, it->start), std::min(end, it->end)});
  return out;
}

uint64_t covered_bytes(const std::vector<PageRange>& ranges, uint64_t start, uint64_t end) {
  uint64_t n = 0;
  for (const auto& r : intersect(ranges, start, end)) n += r.end - r.start;
  return n;
}

// Pages of [start, end) written since they were last protected; protects
// them again in the same walk. CHECK_WPASYNC makes the scan fail instead of
// skipping a VMA that is not in async write-protect mode.
void scan_written(int pagemap_fd, uint64_t start, uint64_t end, std::vector<PageRange>& out) {
  page_region regions[512];
  pm_scan_arg arg{};
  arg.size = sizeof arg;
  arg.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
  arg.start = start;
  arg.end = end;
  arg.vec = reinterpret_cast<uint64_t>(regions);
  arg.vec_len = 512;
  arg.category_mask = PAGE_IS_WRITTEN;
  arg.return_mask = PAGE_IS_WRITTEN;
  for (;;) {
    long n = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
    if (n < 0)
      throw_errno(strfmt("PAGEMAP_SCAN (written pages) %#llx-%#llx",
                         static_cast<unsigned long long>(start),
                         static_cast<unsigned long long>(end)));
    for (long i = 0; i < n; i++) {
      if (!out.empty() && out.back().end == regions[i].start)
        out.back().end = regions[i].end;
      else
        out.push_back({regions[i].start, regions[i].end});
    }
    // A full vector stops the walk early (and only what was reported got
    // protected): go on from where it stopped.
    if (arg.walk_end >= end || n == 0) break;
    arg.start = arg.walk_end;
  }
}

}  // namespace

uint64_t PageDelta::written_pages() const {
  uint64_t n = 0;
  for (const auto& r : written) n += (r.end - r.start) / kPage;
  return n;
}

std::unique_ptr<DirtyTracker> DirtyTracker::arm(RemoteThread& rt, pid_t pid,
                                                const std::vector<proc::Vma>& vmas) {
  std::unique_ptr<DirtyTracker> t(new DirtyTracker);
  t->pid_ = pid;
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) throw_errno(strfmt("pidfd_open %d", pid));
  t->pidfd_.reset(pidfd);
  // The userfaultfd must belong to the task's mm, so the task makes it. An
  // unprivileged task may only have one for its own faults (the sysctl
  // vm.unprivileged_userfaultfd is 0 by default): async write-protect never
  // delivers a fault, so that is enough.
  long fd = rt.call(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (fd == -EPERM) fd = rt.call(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
  if (fd < 0) throw Error("userfaultfd in the task", static_cast<int>(-fd));
  try {
    t->uffd_ = Uffd::adopt(pid, static_cast<int>(fd));
  } catch (...) {
    rt.call(__NR_close, static_cast<uint64_t>(fd));
    throw;
  }
  // The task must not find an extra fd when it runs again.
  rt.check("close the task's userfaultfd", __NR_close, static_cast<uint64_t>(fd));
  t->uffd_.api(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED);
  t->register_new(vmas);
  LOG_DEBUG("pid %d: dirty tracking armed on %llu KiB", pid,
            static_cast<unsigned long long>(t->tracked_bytes() / 1024));
  return t;
}

void DirtyTracker::register_new(const std::vector<proc::Vma>& vmas) {
  std::vector<PageRange> now;
  for (const auto& v : vmas) {
    if (!trackable(v)) continue;
    uint64_t ours = covered_bytes(registered_, v.start, v.end);
    // "uw" on a VMA we never registered: the process uses write-protect
    // itself. Leave it alone (saved in full every time).
    if (v.has_flag("uw") && ours == 0) continue;
    if (!(v.has_flag("uw") && ours == v.end - v.start)) {
      // New, or grown, or moved: (re-)register and protect all of it. Its
      // pages are all in the checkpoint being made, so protecting pages that
      // were written before is right.
      try {
        uffd_.register_wp(v.start, v.end - v.start);
        uffd_.write_protect(v.start, v.end - v.start);
      } catch (const Error& e) {
        LOG_DEBUG("pid %d: not tracking %llx-%llx: %s", pid_,
                  static_cast<unsigned long long>(v.start), static_cast<unsigned long long>(v.end),
                  e.what());
        continue;
      }
    }
    now.push_back({v.start, v.end});
  }
  registered_ = merged(std::move(now));
}

PageDelta DirtyTracker::collect(const std::vector<proc::Vma>& vmas) {
  if (!alive()) throw Error("the tracked process is gone");
  PageDelta d;
  for (const auto& v : vmas) {
    // A VMA without our registration (new, or moved by mremap, which drops
    // it) is dirty as a whole; so is the part of one outside what we
    // registered (a stack that grew).
    if (!trackable(v) || !v.has_flag("uw")) continue;
    for (const auto& r : intersect(registered_, v.start, v.end)) d.tracked.push_back(r);
  }
  d.tracked = merged(std::move(d.tracked));
  // Registering again what is registered with this userfaultfd changes
  // nothing; it fails if the range is someone else's (an exec'd process
  // whose new program uses write-protect itself), which would make its
  // write bits meaningless to us.
  for (const auto& r : d.tracked) uffd_.register_wp(r.start, r.end - r.start);
  UniqueFd pagemap = open_or_throw(strfmt("/proc/%d/pagemap", pid_), O_RDONLY);
  for (const auto& r : d.tracked) scan_written(pagemap.get(), r.start, r.end, d.written);
  d.written = merged(std::move(d.written));
  return d;
}

void DirtyTracker::rearm(const std::vector<proc::Vma>& vmas) {
  register_new(vmas);
}

bool DirtyTracker::alive() const {
  return syscall(SYS_pidfd_send_signal, pidfd_.get(), 0, nullptr, 0) == 0;
}

uint64_t DirtyTracker::tracked_bytes() const {
  uint64_t n = 0;
  for (const auto& r : registered_) n += r.end - r.start;
  return n;
}

void collect_dirty(DumpContext& ctx, DirtyTrackers& trackers) {
  std::map<pid_t, std::unique_ptr<DirtyTracker>> kept;
  for (auto& t : ctx.tasks) {
    auto it = trackers.by_pid.find(t->pid);
    if (it == trackers.by_pid.end()) continue;
    try {
      auto d = std::make_shared<PageDelta>(it->second->collect(t->vmas));
      LOG_DEBUG("pid %d: %llu pages written since the last checkpoint", t->pid,
                static_cast<unsigned long long>(d->written_pages()));
      ctx.deltas[t->pid] = std::move(d);
      kept[t->pid] = std::move(it->second);
    } catch (const Error& e) {
      LOG_INFO("pid %d: dirty tracking lost (%s): saved in full", t->pid, e.what());
    }
  }
  // Trackers of processes that left the tree go too.
  trackers.by_pid = std::move(kept);
}

void arm_dirty(DumpContext& ctx, DirtyTrackers& trackers) {
  for (auto& t : ctx.tasks) {
    auto& slot = trackers.by_pid[t->pid];
    try {
      in_context(strfmt("pid %d: dirty tracking", t->pid), [&] {
        if (slot)
          slot->rearm(t->vmas);
        else
          slot = DirtyTracker::arm(*t->remote, t->pid, t->vmas);
      });
    } catch (const Error& e) {
      LOG_WARN("%s: its next checkpoint is a full one", e.what());
      trackers.by_pid.erase(t->pid);
    }
  }
}

}  // namespace ckpt
