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

Uffd Uffd::own(UniqueFd fd) {
  Uffd u;
  u.fd_ = std::move(fd);
  return u;
}

Uffd::Fill Uffd::fill(uint64_t dst, const void* src, uint64_t len, uint64_t* done) {
  constexpr uint64_t kPage = 4096;
  auto s = reinterpret_cast<uint64_t>(src);
  uint64_t start = dst;
  while (len > 0) {
    uffdio_copy c{};
    c.dst = dst;
    c.src = s;
    c.len = len;
    int rc = ioctl(fd_.get(), UFFDIO_COPY, &c);
    int err = rc == 0 ? 0 : errno;
    uint64_t n = c.copy > 0 ? static_cast<uint64_t>(c.copy) : 0;
    if (rc == 0) n = len;
    dst += n;
    s += n;
    len -= n;
    if (rc == 0) break;
    if (err == EEXIST) {  // the page at dst is there: skip it
      dst += kPage;
      s += kPage;
      len = len > kPage ? len - kPage : 0;
      continue;
    }
    if (err == EAGAIN && n > 0) continue;
    *done = dst - start;
    if (err == EAGAIN) return Fill::kRetry;
    if (err == ENOENT || err == ESRCH || err == EFAULT || err == EINVAL) return Fill::kGone;
    throw_errno(strfmt("UFFDIO_COPY at %#llx", static_cast<unsigned long long>(dst)));
  }
  *done = dst - start;
  return Fill::kDone;
}

Uffd::Fill Uffd::zero(uint64_t dst, uint64_t len) {
  uffdio_zeropage z{};
  z.range.start = dst;
  z.range.len = len;
  if (ioctl(fd_.get(), UFFDIO_ZEROPAGE, &z) == 0) return Fill::kDone;
  if (errno == EEXIST) {
    wake(dst, len);
    return Fill::kDone;
  }
  if (errno == EAGAIN) return Fill::kRetry;
  if (errno == ENOENT || errno == ESRCH || errno == EFAULT || errno == EINVAL) return Fill::kGone;
  throw_errno(strfmt("UFFDIO_ZEROPAGE at %#llx", static_cast<unsigned long long>(dst)));
}

void Uffd::wake(uint64_t dst, uint64_t len) {
  uffdio_range r{dst, len};
  ioctl(fd_.get(), UFFDIO_WAKE, &r);  // nobody waiting is not an error
}

}  // namespace ckpt
