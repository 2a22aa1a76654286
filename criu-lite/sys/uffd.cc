#include "sys/uffd.h"

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "sys/error.h"

namespace ckpt {

Uffd Uffd::adopt(pid_t pid, int target_fd) {
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) throw_errno(strfmt("pidfd_open %d", pid));
  UniqueFd p(pidfd);
  int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, target_fd, 0));
  if (fd < 0) throw_errno(strfmt("pidfd_getfd of pid %d fd %d", pid, target_fd));
  Uffd u;
  u.fd_.reset(fd);
  return u;
}

void Uffd::api(uint64_t features) {
  uffdio_api a{};
  a.api = UFFD_API;
  a.features = features;
  if (ioctl(fd_.get(), UFFDIO_API, &a) != 0) throw_errno("UFFDIO_API");
}

void Uffd::register_missing(uint64_t start, uint64_t len) {
  uffdio_register r{};
  r.range.start = start;
  r.range.len = len;
  r.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (ioctl(fd_.get(), UFFDIO_REGISTER, &r) != 0)
    throw_errno(strfmt("UFFDIO_REGISTER %#llx+%#llx", static_cast<unsigned long long>(start),
                       static_cast<unsigned long long>(len)));
}

void Uffd::register_wp(uint64_t start, uint64_t len) {
  uffdio_register r{};
  r.range.start = start;
  r.range.len = len;
  r.mode = UFFDIO_REGISTER_MODE_WP;
  if (ioctl(fd_.get(), UFFDIO_REGISTER, &r) != 0)
    throw_errno(strfmt("UFFDIO_REGISTER (write-protect) %#llx+%#llx",
                       static_cast<unsigned long long>(start),
                       static_cast<unsigned long long>(len)));
}

void Uffd::write_protect(uint64_t start, uint64_t len) {
  uffdio_writeprotect w{};
  w.range.start = start;
  w.range.len = len;
  w.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  if (ioctl(fd_.get(), UFFDIO_WRITEPROTECT, &w) != 0)
    throw_errno(strfmt("UFFDIO_WRITEPROTECT %#llx+%#llx", static_cast<unsigned long long>(start),
                       static_cast<unsigned long long>(len)));
}

void Uffd::unregister(uint64_t start, uint64_t len) {
  uffdio_range r{start, len};
  if (ioctl(fd_.get(), UFFDIO_UNREGISTER, &r) != 0) throw_errno("UFFDIO_UNREGISTER");
}

void Uffd::copy(uint64_t dst, const void* src, uint64_t len) {
  auto s = reinterpret_cast<uint64_t>(src);
  while (len > 0) {
    uffdio_copy c{};
    c.dst = dst;
    c.src = s;
    c.len = len;
    if (ioctl(fd_.get(), UFFDIO_COPY, &c) == 0) return;
    // A partial copy (the address space changed under us) reports what it
    // did in c.copy; carry on from there.
    if (errno != EAGAIN || c.copy <= 0)
      throw_errno(strfmt("UFFDIO_COPY at %#llx", static_cast<unsigned long long>(dst)));
    dst += static_cast<uint64_t>(c.copy);
    s += static_cast<uint64_t>(c.copy);
    len -= static_cast<uint64_t>(c.copy);
  }
}

}  // namespace ckpt
