#include "sys/fd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "sys/error.h"

namespace ckpt {

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

UniqueFd open_or_throw(const std::string& path, int flags, mode_t mode) {
  return openat_or_throw(AT_FDCWD, path, flags, mode);
}

UniqueFd openat_or_throw(int dirfd, const std::string& path, int flags, mode_t mode) {
  int fd = retry_eintr([&] { return ::openat(dirfd, path.c_str(), flags | O_CLOEXEC, mode); });
  if (fd < 0) throw_errno("open " + path);
  return UniqueFd(fd);
}

int host_proc_dir() {
  static const int fd = [] {
    int f = ::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f < 0) throw_errno("open /proc");
    return f;
  }();
  return fd;
}

UniqueFd reopen_fd(int fd, int flags) {
  return openat_or_throw(host_proc_dir(), "self/fd/" + std::to_string(fd), flags);
}

void write_full(int fd, const void* buf, size_t len, const std::string& what) {
  auto* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("write " + what);
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
}

void pwrite_full(int fd, const void* buf, size_t len, off_t off, const std::string& what) {
  auto* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, len, off);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("write " + what);
    }
    p += n;
    off += n;
    len -= static_cast<size_t>(n);
  }
}

bool read_full(int fd, void* buf, size_t len, const std::string& what) {
  auto* p = static_cast<char*>(buf);
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::read(fd, p + got, len - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("read " + what);
    }
    if (n == 0) {
      if (got == 0) return false;
      throw Error(strfmt("read %s: truncated after %zu of %zu bytes", what.c_str(), got, len));
    }
    got += static_cast<size_t>(n);
  }
  return true;
}

bool try_read_file(const std::string& path, std::string* out) {
  int fd = retry_eintr([&] { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC); });
  if (fd < 0) return false;
  UniqueFd owner(fd);
  out->clear();
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
  return true;
}

std::string read_file(const std::string& path) {
  std::string out;
  if (!try_read_file(path, &out)) throw_errno("read " + path);
  return out;
}

std::string read_link(const std::string& path) {
  char buf[4096];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
  if (n < 0) throw_errno("readlink " + path);
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace ckpt
