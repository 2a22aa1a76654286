// userfaultfd of another process: the fd is created inside the target (a
// remote syscall) and duplicated into ckpt with pidfd_getfd; its ioctls then
// act on the target's address space.
//
// Call order (restore filling memory):
//   Uffd u = Uffd::adopt(pid, target_fd);  // pidfd_getfd
//   u.api(features);                       // UFFDIO_API, once
//   u.register_missing(start, len);        // per VMA
//   u.copy(dst, src, len);                 // UFFDIO_COPY: allocates and fills
//   u.unregister(start, len);              // before the task runs
// UFFDIO_COPY fills a page that is not there yet without zeroing it first,
// which is one pass over memory fewer than faulting it in and writing it.
//
// Call order (dirty tracking, objects/dirty_tracking.h):
//   u.api(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED);
//   u.register_wp(start, len);             // per VMA
//   u.write_protect(start, len);           // every page (and hole) protected
// then PAGEMAP_SCAN reads and re-protects the pages written since; the
// registration lasts as long as this fd is open.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include "sys/fd.h"

namespace ckpt {

class Uffd {
 public:
  static Uffd adopt(pid_t pid, int target_fd);
  void api(uint64_t features);
  void register_missing(uint64_t start, uint64_t len);
  void register_wp(uint64_t start, uint64_t len);
  void write_protect(uint64_t start, uint64_t len);
  void unregister(uint64_t start, uint64_t len);
  void copy(uint64_t dst, const void* src, uint64_t len);
  int fd() const { return fd_.get(); }

  // Lazy restore (objects/lazy_pages.h): filling pages while the task runs.
  // A descriptor the kernel handed us (a fork event's new userfaultfd).
  static Uffd own(UniqueFd fd);
  enum class Fill { kDone, kRetry, kGone };
  // UFFDIO_COPY of len bytes where some pages may be there already (the
  // task wrote them, or a fault was served): those are skipped, not
  // overwritten. kRetry: the address space is changing (an event waits to
  // be read); kGone: the range or the process is gone. *done gets the bytes
  // handled before a kRetry.
  Fill fill(uint64_t dst, const void* src, uint64_t len, uint64_t* done);
  // Maps the zero page at a faulting address (memory the image has no
  // page for), or wakes the waiter if a page is there by now.
  Fill zero(uint64_t dst, uint64_t len);
  void wake(uint64_t dst, uint64_t len);

 private:
  UniqueFd fd_;
};

}  // namespace ckpt
