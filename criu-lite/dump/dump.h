// The dump pipeline: freeze, save every object kind, write the inventory
// last, then kill the tree (default) or let it carry on (--leave-running).
// Any failure thaws the tree exactly as it was and removes what was written.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "container.pb.h"
#include "image/image_io.h"
#include "netns.pb.h"
#include "objects/dump_context.h"
#include "objects/progress.h"
#include "preview.pb.h"

namespace ckpt {

struct DirtyTrackers;

// What becomes of the tree once its images are committed.
enum class DumpEnd { kKill, kThaw };

struct DumpRequest {
  pid_t pid = 0;
  std::string dir;
  // Freeze this cgroup before seizing (so nothing in it forks or exits
  // meanwhile): one directory per hierarchy (a container's), or any one
  // cgroup directory (--freeze-cgroup). Every process in it must be in the
  // tree.
  std::vector<std::string> cgroup_paths;
  bool save_cgroup = false;  // and save its limits
  // ckpt dump --container: the container's state, kept with the images.
  std::optional<img::ContainerState> container;
  DumpOptions opts;
  Progress* progress = nullptr;
  // Incremental dump (--prev-images-dir): the complete checkpoint this one
  // builds on, relative to dir unless absolute (as in the `parent` link the
  // dump writes). Pages unchanged since it are not stored again.
  std::string parent_dir;
  // Dirty tracking kept by the caller between dumps (ckpt job run): written
  // pages come from it instead of a comparison with the parent, and with
  // --leave-running the tree is tracked again for the next dump. Cleared if
  // the dump fails. The parent must be the dump that last used them.
  DirtyTrackers* trackers = nullptr;

  // Migration: the images go through this sink instead of to dir. The
  // parent is then the previous round, already sent and not readable here
  // (named parent_name, with its checkpoint id): the trackers alone say
  // which pages it holds unchanged.
  image::ImageSink* sink = nullptr;
  std::string parent_name;
  uint64_t parent_id = 0;
  // Whether that parent holds npages pages at vaddr of the task the tree
  // knows as vpid (from the pagemaps it sent): pages tracking saw clean
  // but the parent lacks are saved.
  std::function<bool(pid_t vpid, uint64_t vaddr, uint64_t npages)> parent_covers;
  // Called once the images are committed, the tree still stopped (and its
  // connections in repair mode): whether it dies (kKill, the images took
  // over) or carries on (kThaw). An exception thaws it, and the dump fails.
  std::function<DumpEnd(const DumpContext&)> after_commit;
  // Called just before the tree is stopped (what comes before, such as
  // preparing the network lock, runs while it still runs).
  std::function<void()> before_stop;
  // Called right before before_stop with the root's namespaces, mounts and
  // network namespace as read while the tree still runs (preview.proto),
  // for a caller that can use them early: a migration's destination makes
  // the namespace and the root meanwhile. They may still change until the
  // stop: the images hold them as read after.
  std::function<void(const img::TreePreview&)> on_preview;
};

struct DumpResult {
  DumpStats stats;
  uint64_t checkpoint_id = 0;
  uint64_t frozen_us = 0;
  uint64_t total_us = 0;
};

DumpResult dump_tree(const DumpRequest& req);

}  // namespace ckpt
