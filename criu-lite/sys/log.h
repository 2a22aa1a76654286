// Logging: one sink (stderr or --log-file), levels chosen by -v.
// Messages for the user at Info; details at Debug (-v) and Trace (-vv).
#pragma once

#include <string>

namespace ckpt::log {

enum class Level { Error = 0, Warn = 1, Info = 2, Debug = 3, Trace = 4 };

void set_level(Level l);
Level level();
// Sends every message at or below the level to FILE as well as (for Info and
// worse) to stderr. Throws if the file cannot be opened.
void set_file(const std::string& path);
bool enabled(Level l);
void write(Level l, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace ckpt::log

#define LOG_ERROR(...) ::ckpt::log::write(::ckpt::log::Level::Error, __VA_ARGS__)
#define LOG_WARN(...) ::ckpt::log::write(::ckpt::log::Level::Warn, __VA_ARGS__)
#define LOG_INFO(...) ::ckpt::log::write(::ckpt::log::Level::Info, __VA_ARGS__)
#define LOG_DEBUG(...)                                            \
  do {                                                            \
    if (::ckpt::log::enabled(::ckpt::log::Level::Debug))          \
      ::ckpt::log::write(::ckpt::log::Level::Debug, __VA_ARGS__); \
  } while (0)
#define LOG_TRACE(...)                                            \
  do {                                                            \
    if (::ckpt::log::enabled(::ckpt::log::Level::Trace))          \
      ::ckpt::log::write(::ckpt::log::Level::Trace, __VA_ARGS__); \
  } while (0)

namespace ckpt::log {

// Logs at Debug how long a named step took, when it goes out of scope.
class StepTimer {
 public:
  explicit StepTimer(const char* name);
  ~StepTimer();
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;

 private:
  const char* name_;
  long long start_ns_;
};

}  // namespace ckpt::log
