#include "sys/error.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace ckpt {

std::string strfmt(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::string out(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) vsnprintf(out.data(), out.size() + 1, fmt, ap2);
  va_end(ap2);
  return out;
}

Error::Error(std::string msg, int err) : text_(std::move(msg)), err_(err) {
  if (err_ != 0) {
    text_ += ": ";
    text_ += strerror(err_);
  }
}

Error& Error::wrap(std::string_view ctx) {
  text_ = std::string(ctx) + ": " + text_;
  return *this;
}

void throw_errno(std::string what) {
  throw Error(std::move(what), errno);
}
void throw_errno(int err, std::string what) {
  throw Error(std::move(what), err);
}

}  // namespace ckpt
