#include "cli/progress_bar.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "cli/options.h"
#include "sys/log.h"

namespace ckpt::cli {

bool ProgressBar::wanted() {
  return isatty(STDERR_FILENO) && log::level() <= log::Level::Info;
}

void ProgressBar::start(const char* what, uint64_t total_pages) {
  what_ = what;
  total_ = total_pages;
  done_ = 0;
  start_ = last_ = std::chrono::steady_clock::now();
}

void ProgressBar::advance(uint64_t pages) {
  done_ += pages;
  draw(false);
}

void ProgressBar::draw(bool force) {
  auto now = std::chrono::steady_clock::now();
  if (!force && now - last_ < std::chrono::milliseconds(100)) return;
  // Short jobs do not flash a bar.
  if (!force && now - start_ < std::chrono::milliseconds(300)) return;
  last_ = now;
  uint64_t total = std::max(total_, done_);
  double frac = total ? static_cast<double>(done_) / static_cast<double>(total) : 1.0;
  int width = 30, fill = static_cast<int>(frac * width);
  double secs = std::chrono::duration<double>(now - start_).count();
  double rate = secs > 0 ? static_cast<double>(done_) * 4096 / secs : 0;
  fprintf(stderr, "\r%-7s [%.*s%*s] %3d%% %s / %s  %s/s ", what_.c_str(), fill,
          "##############################", width - fill, "", static_cast<int>(frac * 100),
          human_bytes(done_ * 4096).c_str(), human_bytes(total * 4096).c_str(),
          human_bytes(static_cast<uint64_t>(rate)).c_str());
  drawn_ = true;
}

void ProgressBar::finish() {
  if (drawn_) {
    draw(true);
    fprintf(stderr, "\n");
  }
  drawn_ = false;
}

}  // namespace ckpt::cli
