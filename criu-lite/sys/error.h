// Errors that say where: an Error carries an errno (0 if none) and a chain
// of context, outermost first, e.g.
//   "restore pid 4242: fd 7: open /var/log/x: No such file or directory".
// Lower layers throw or add context with in_context(); only cli/ prints.
// See docs/STYLE.md for why this is an exception and not Result<T>.
#pragma once

#include <cerrno>
#include <exception>
#include <string>
#include <string_view>
#include <utility>

namespace ckpt {

std::string strfmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

class Error : public std::exception {
 public:
  explicit Error(std::string msg, int err = 0);
  const char* what() const noexcept override { return text_.c_str(); }
  int err() const { return err_; }
  // Prepends "ctx: " to the message.
  Error& wrap(std::string_view ctx);

 private:
  std::string text_;
  int err_;
};

// Thrown for wrong flags or arguments: main exits with 2 instead of 1.
class UsageError : public Error {
 public:
  using Error::Error;
};

// Throws Error(what, errno) with the message "what: strerror(errno)".
[[noreturn]] void throw_errno(std::string what);
[[noreturn]] void throw_errno(int err, std::string what);

// Runs f(); an Error escaping it gets ctx prepended.
template <class F>
auto in_context(std::string_view ctx, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (Error& e) {
    e.wrap(ctx);
    throw;
  }
}

// Retries a syscall-like expression while it fails with EINTR.
template <class F>
auto retry_eintr(F&& f) -> decltype(f()) {
  decltype(f()) r;
  do {
    r = f();
  } while (r == -1 && errno == EINTR);
  return r;
}

}  // namespace ckpt
