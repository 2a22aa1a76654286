// Dirty-page tracking without soft-dirty: which pages of a process were
// written since the last checkpoint, for incremental checkpoints now and the
// pre-copy rounds of live migration later.
//
// A userfaultfd is created inside the stopped task (a remote syscall) with
// UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, taken out with
// pidfd_getfd and closed in the task, so the task never sees it. Its private
// anonymous VMAs are registered in write-protect mode and every page (holes
// too) is write-protected. A write then clears the protection of its page in
// the kernel, without a message or a stop (async mode). PAGEMAP_SCAN with
// PM_SCAN_WP_MATCHING on /proc/PID/pagemap later lists the written pages and
// protects them again in the same call. The registration lasts as long as
// the tracker holds the fd.
//
// Call order (every call while the task is stopped):
//   auto t = DirtyTracker::arm(rt, pid, vmas);  // after a full checkpoint's pages
//   ... the task runs ...
//   PageDelta d = t->collect(vmas);             // next checkpoint, before its pages
//   ... save d's written pages, refer to the parent for the other tracked ones ...
//   t->rearm(vmas);                             // after them: new VMAs tracked too
//
// What is not a tracked page is dirty: memory mapped since (its VMA has no
// registration, "uw" in smaps VmFlags), the part of a VMA that grew (a
// stack), anything mremap()ed (the kernel drops the registration of a moved
// VMA), file-backed and shared memory. Tracking is lost, and collect()
// throws, if the process is gone or a scan meets a VMA not in async
// write-protect mode; the caller then saves that process in full.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "objects/dump_context.h"
#include "sys/fd.h"
#include "sys/proc.h"
#include "sys/remote.h"
#include "sys/uffd.h"

namespace ckpt {

struct PageRange {
  uint64_t start = 0, end = 0;
};

// What changed in one address space since its tracker was (re)armed.
struct PageDelta {
  std::vector<PageRange> tracked;  // sorted, disjoint
  std::vector<PageRange> written;  // sorted, disjoint, inside tracked
  uint64_t written_pages() const;

  // Cuts [start, start + npages pages) into pieces fn(start, npages, dirty):
  // dirty unless tracked and not written.
  template <class F>
  void split(uint64_t start, uint64_t npages, F&& fn) const;
};

class DirtyTracker {
 public:
  // Starts tracking the stopped process pid, driven through rt (its leader).
  static std::unique_ptr<DirtyTracker> arm(RemoteThread& rt, pid_t pid,
                                           const std::vector<proc::Vma>& vmas);
  // Pages written since arm() or the last collect()/rearm(), protected again.
  PageDelta collect(const std::vector<proc::Vma>& vmas);
  // Registers and protects what is not tracked yet (new VMAs, grown parts).
  void rearm(const std::vector<proc::Vma>& vmas);
  // The process this tracker was armed in still exists (not a new one
  // with the same pid).
  bool alive() const;
  pid_t pid() const { return pid_; }
  uint64_t tracked_bytes() const;

 private:
  DirtyTracker() = default;
  void register_new(const std::vector<proc::Vma>& vmas);
  pid_t pid_ = 0;
  UniqueFd pidfd_;
  Uffd uffd_;
  UniqueFd pagemap_;
  std::vector<PageRange> registered_;  // sorted, disjoint
};

// The trackers of a tree, kept by a caller between dumps (ckpt job run). A
// dump given them uses and re-arms them; a failed dump clears them (the
// written pages it consumed are not in any checkpoint).
struct DirtyTrackers {
  std::map<pid_t, std::unique_ptr<DirtyTracker>> by_pid;
  void clear() { by_pid.clear(); }
};

// Dump pipeline steps. Before the pages are saved: ctx.deltas gets, for each
// task with a live tracker, what it wrote since (tasks without one, or whose
// tracker fails, are saved without a delta).
void collect_dirty(DumpContext& ctx, DirtyTrackers& trackers);
// After the pages are saved, tree still stopped: every task is tracked from
// now on (a task where arming fails is only logged: its next dump is full).
void arm_dirty(DumpContext& ctx, DirtyTrackers& trackers);

// ------------------------------------------------------------------------

template <class F>
void PageDelta::split(uint64_t start, uint64_t npages, F&& fn) const {
  constexpr uint64_t kPage = 4096;
  const uint64_t end = start + npages * kPage;
  // Clean pages are tracked ones that were not written.
  std::vector<PageRange> clean;
  auto w = written.begin();
  for (const auto& t : tracked) {
    if (t.end <= start) continue;
    if (t.start >= end) break;
    uint64_t at = std::max(t.start, start), upto = std::min(t.end, end);
    while (w != written.end() && w->end <= at) ++w;
    for (auto x = w; x != written.end() && x->start < upto; ++x) {
      if (x->start > at) clean.push_back({at, x->start});
      at = std::max(at, x->end);
    }
    if (at < upto) clean.push_back({at, upto});
  }
  uint64_t at = start;
  for (const auto& c : clean) {
    if (c.start > at) fn(at, (c.start - at) / kPage, true);
    fn(c.start, (c.end - c.start) / kPage, false);
    at = c.end;
  }
  if (at < end) fn(at, (end - at) / kPage, true);
}

}  // namespace ckpt
