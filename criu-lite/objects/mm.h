// Address spaces: the VMA layout and mm fields (mm-PID.img) and the page
// data (pagemap/pages), including MAP_SHARED anonymous memory, which is
// saved once per object ("shmem-INODE") however many processes map it.
#pragma once

#include <functional>
#include <map>

#include "image/image_io.h"
#include "mm.pb.h"
#include "objects/dump_context.h"

namespace ckpt {

inline std::string mm_name(pid_t pid) {
  return "mm-" + std::to_string(pid) + ".img";
}
inline std::string shmem_pages_id(uint64_t ino) {
  return "shmem-" + std::to_string(ino);
}

// Saves mm-PID.img and the task's pages (and shared objects not saved yet).
void dump_mm(DumpContext& ctx, DumpTask& t, bool pages_only = false);
// Only the pages of the task's private memory (pagemap and pages images),
// while it runs: a migration's pre-copy round (DumpOptions::pages_only). A
// page written meanwhile may be saved old or new; dirty tracking, armed
// before, has it in the next round either way.
void dump_pages(DumpContext& ctx, DumpTask& t);

// The runs of [start, end), private anonymous memory of the task whose
// /proc/PID/pagemap is open, that hold pages (present or swapped, not the
// zero page): what a post-copy source sends; the rest reads as zeros. A
// post-copy dump (DumpOptions::lazy_pages) leaves this walk to the page
// server and marks such mappings lazy whole.
void anon_pages_written(int pagemap_fd, uint64_t start, uint64_t end,
                        const std::function<void(uint64_t start, uint64_t npages)>& on_run);

// Pages a task holds (anonymous, in memory or swapped), for the progress
// bar: its memory counters, which cost nothing to read (smaps walks pages).
uint64_t estimate_pages(const proc::Status& status);

// Shared anonymous objects are rebuilt once by the controller, which keeps
// them mapped; each task then maps them through /proc/SELF/map_files.
struct ShmemObject {
  uint64_t addr = 0;
  uint64_t size = 0;
  int fd = -1;  // ckpt's map_files fd of it, taken by each task (pidfd_getfd)
};
class ShmemTable {
 public:
  ShmemTable() = default;
  ShmemTable(const ShmemTable&) = delete;
  ~ShmemTable();
  // Maps and fills every shared anonymous object the images mention.
  void load(const image::ImageSource& src, const std::vector<img::MmCore>& mms);
  const ShmemObject& get(uint64_t id) const;

 private:
  std::map<uint64_t, ShmemObject> objs_;
};

struct MmRestoreStats {
  uint64_t pages = 0;
};

// Rebuilds the address space of a restore stub (a fork of ckpt, stopped,
// driven through rt) into the dumped one. On return rt's syscall ip points
// into the vDSO at its dumped address and scratch is mapped at a free place.
class GhostTable;
// holder_fd: the task's fd of a pidfd on ckpt, through which it takes the
// descriptions ckpt holds for it (shared memory, memfds) whatever its
// namespaces (restore/stubs.cc leaves it open during the restore).
// lazy: private anonymous memory is left to this pager (objects/
// lazy_pages.h) instead of filled, and it serves the task's faults from now.
class LazyPager;
void restore_mm(RemoteThread& rt, RemoteScratch& scratch, pid_t pid, const img::MmCore& mm,
                const image::ImageSource& src, const ShmemTable& shmem, const GhostTable& ghosts,
                int holder_fd, MmRestoreStats* stats, LazyPager* lazy = nullptr);

// The mm fields (brk, arg/env areas, auxv, exe) with PR_SET_MM_MAP.
void restore_mm_fields(RemoteThread& rt, const RemoteScratch& scratch, pid_t pid,
                       const img::MmCore& mm);

}  // namespace ckpt
