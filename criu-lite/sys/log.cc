#include "sys/log.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>

#include "sys/error.h"

namespace ckpt::log {
namespace {
Level g_level = Level::Info;
int g_file = -1;
Level g_file_level = Level::Trace;
const char* prefix(Level l) {
  switch (l) {
    case Level::Error:
      return "Error: ";
    case Level::Warn:
      return "Warning: ";
    default:
      return "";
  }
}
}  // namespace

void set_level(Level l) {
  g_level = l;
}
Level level() {
  return g_level;
}

void set_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno("open log file " + path);
  g_file = fd;
}

bool enabled(Level l) {
  return l <= g_level || (g_file >= 0 && l <= g_file_level);
}

void write(Level l, const char* fmt, ...) {
  char body[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(body, sizeof body, fmt, ap);
  va_end(ap);
  if (l <= g_level) {
    // Details go with a timestamp so a -v log shows where time went.
    if (l >= Level::Debug) {
      timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      fprintf(stderr, "(%5ld.%06ld) %s\n", ts.tv_sec % 100000, ts.tv_nsec / 1000, body);
    } else {
      fprintf(stderr, "%s%s\n", prefix(l), body);
    }
  }
  if (g_file >= 0) {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    dprintf(g_file, "(%5ld.%06ld) %s%s\n", ts.tv_sec % 100000, ts.tv_nsec / 1000, prefix(l), body);
  }
}

}  // namespace ckpt::log

namespace ckpt::log {

namespace {
long long now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
}  // namespace

StepTimer::StepTimer(const char* name) : name_(name), start_ns_(now_ns()) {}

StepTimer::~StepTimer() {
  if (enabled(Level::Debug))
    write(Level::Debug, "step %s: %.1f ms", name_, static_cast<double>(now_ns() - start_ns_) / 1e6);
}

}  // namespace ckpt::log
