// The dump pipeline: freeze, save every object kind, write the inventory
// last, then kill the tree (default) or let it carry on (--leave-running).
// Any failure thaws the tree exactly as it was and removes what was written.
#pragma once

#include <sys/types.h>

#include <string>

#include "objects/dump_context.h"
#include "objects/progress.h"

namespace ckpt {

struct DumpRequest {
  pid_t pid = 0;
  std::string dir;
  DumpOptions opts;
  Progress* progress = nullptr;
};

struct DumpResult {
  DumpStats stats;
  uint64_t frozen_us = 0;
  uint64_t total_us = 0;
};

DumpResult dump_tree(const DumpRequest& req);

}  // namespace ckpt
