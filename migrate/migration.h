// Live migration: `ckpt migrate` (the source) and `ckpt receive` (the
// destination), over one connection (migrate/transport.h).
//
// The conversation, after the handshake:
//   source                                   destination
//   Control "container" NAME (if one)  ->
//   [pre-copy] set 1, 2, ... N-1: leave-running rounds, each with the
//     pages written since the one before (dirty tracking) ->  kept in memory
//   Control "preview" (TreePreview)    ->  makes cgroup, network namespace,
//                                      <-  Control "preview-ready"    root
//   Control "stopping"; the last set, with the tree frozen -> kept
//   Control "final" set, freeze time   ->  restores from it, memory lazily
//                                      <-  Control "resumed" (realtime) / Fail
//   [post-copy] PageData zero (no body) and pushed pages -> pager fills
//               PageData               <-> PageRequest (faults first)
//                                      <-  Control "pages-done"
//   kills its copy, closes.
// Until "resumed" (and, post-copy, "pages-done") the source keeps its tree
// stopped, not killed: a Fail, a lost connection or a timeout lets it carry
// on where it stood, and the destination removes what it made.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "objects/netns.h"
#include "objects/progress.h"

namespace ckpt::migrate {

enum class Mode { kPrecopy, kPostcopy, kStopAndCopy };
Mode parse_mode(const std::string& s);
const char* mode_name(Mode m);

struct MigrateRequest {
  pid_t pid = 0;          // -t
  std::string container;  // --container
  std::string to;         // HOST:PORT
  std::string key;        // --psk-file contents ("" = none)
  Mode mode = Mode::kPrecopy;
  int max_rounds = 8;            // pre-copy rounds before the final one
  int target_downtime_ms = 100;  // stop pre-copy when the rest fits in this
  int zstd_level = 0;
  Progress* progress = nullptr;
};

struct RoundStats {
  uint32_t round = 0;  // 0..: pre-copy; the final one is last
  bool final = false;
  uint64_t pages = 0;         // pages sent in this round
  uint64_t raw_bytes = 0;     // their size before compression
  uint64_t stored_bytes = 0;  // and after
  uint64_t bytes = 0;         // bytes on the wire for the round (images)
  uint64_t us = 0;            // time of the round
  uint64_t frozen_us = 0;     // the tree stopped for this long in it
};

struct MigrateResult {
  std::vector<RoundStats> rounds;
  uint64_t total_us = 0;
  int64_t downtime_us = 0;  // frozen on the source -> running on the destination
  uint64_t wire_bytes = 0;  // everything sent
  uint64_t lazy_pages = 0, pushed_pages = 0, requested_pages = 0;  // post-copy
  uint64_t restore_us = 0;                                         // on the destination
  std::string peer;
};

MigrateResult migrate(const MigrateRequest& req);

struct ReceiveRequest {
  std::string listen;  // ADDR:PORT
  bool once = false;
  std::string key;
  NetRestoreOptions net;
  std::string work_dir;  // keep a copy of the images received here
  // Called with a one-line summary after each migration received.
  std::function<void(const std::string&)> on_done;
};

// Serves migrations until stopped (or one, with once). Returns non-zero if
// the last migration failed.
int receive(const ReceiveRequest& req);

// The table printed at the end of ckpt migrate.
std::string format_table(const MigrateResult& r, Mode mode);

}  // namespace ckpt::migrate
