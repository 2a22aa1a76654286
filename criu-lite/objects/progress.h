// What long-running pipelines report to the user interface (cli/ draws a
// bar on a terminal). Pages are the unit of the work that takes time.
#pragma once

#include <cstdint>

namespace ckpt {

class Progress {
 public:
  virtual ~Progress() = default;
  virtual void start(const char* what, uint64_t total_pages) = 0;
  virtual void advance(uint64_t pages) = 0;
  virtual void finish() = 0;
};

}  // namespace ckpt
