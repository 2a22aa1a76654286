// A one-line progress bar on stderr, drawn only when stderr is a terminal
// and at most ten times a second.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "objects/progress.h"

namespace ckpt::cli {

class ProgressBar : public Progress {
 public:
  static bool wanted();  // stderr is a tty and not -v
  void start(const char* what, uint64_t total_pages) override;
  void advance(uint64_t pages) override;
  void finish() override;

 private:
  void draw(bool force);
  std::string what_;
  uint64_t total_ = 0, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_;
  bool drawn_ = false;
};

}  // namespace ckpt::cli
