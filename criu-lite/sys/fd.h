// UniqueFd: the one owner of a file descriptor. Move-only, no implicit int.
// Also small helpers that every layer needs: full reads and writes that
// retry EINTR, and reading a whole (proc) file.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace ckpt {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// open(2) with O_CLOEXEC; throws Error naming the path.
UniqueFd open_or_throw(const std::string& path, int flags, mode_t mode = 0);
UniqueFd openat_or_throw(int dirfd, const std::string& path, int flags, mode_t mode = 0);

// ckpt's own /proc (its pid namespace's), opened on first use and kept:
// after entering a tree's mount namespace, "/proc" is the tree's, where
// ckpt's pid does not exist. NsEnter opens it before leaving.
int host_proc_dir();
// A new description of the file fd refers to (/proc/self/fd/N), with flags.
UniqueFd reopen_fd(int fd, int flags);

// Write all of buf or throw (EINTR and short writes retried).
void write_full(int fd, const void* buf, size_t len, const std::string& what);
void pwrite_full(int fd, const void* buf, size_t len, off_t off, const std::string& what);
// Read exactly len bytes or throw; returns false on EOF before any byte.
bool read_full(int fd, void* buf, size_t len, const std::string& what);

// The whole content of a file (works for /proc files whose size is 0).
std::string read_file(const std::string& path);
// Like read_file but returns false instead of throwing when it cannot open.
bool try_read_file(const std::string& path, std::string* out);
std::string read_link(const std::string& path);

}  // namespace ckpt
