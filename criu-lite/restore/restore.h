// The restore pipeline: validate every image, fork the tree with the old
// pids, rebuild each address space and thread through remote syscalls, and
// let the whole tree run at once. Any failure kills what was created.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <optional>

#include "container.pb.h"
#include "image/image_io.h"
#include "objects/netns.h"
#include "sys/cgroup.h"

#include "objects/progress.h"

namespace ckpt {

struct RestoreResult;
class LazyPager;
class EarlyRoot;

struct RestoreRequest {
  std::string dir;
  // Where the images are read from instead of dir (a migration's stream).
  std::shared_ptr<const image::ImageSource> source;
  // Private anonymous memory is not copied before the tree runs: this
  // pager serves its faults and fills it behind (objects/lazy_pages.h).
  LazyPager* lazy = nullptr;
  bool detach = false;  // -d: return once the tree runs
  // --shell-job: the tree's session or terminal was outside it; it joins
  // ckpt's session and terminal (and, without -d, its foreground).
  bool shell_job = false;
  std::string pidfile;
  Progress* progress = nullptr;
  bool tcp_established = false;  // the images may hold established TCP connections
  int pid_wait_ms = 5000;        // how long pids held by dying processes are waited for
  // Put the tree in a new cgroup of this name, with the limits the images
  // saved (restore --container).
  std::string cgroup_name;
  // That cgroup, made ahead by the caller (cgroup::Cgroup::create of
  // cgroup_name; a migration's destination makes it while the source
  // dumps): the restore takes it over, sets its limits, puts the tree in it.
  cgroup::Cgroup* cgroup_made = nullptr;
  // --net: where a recreated network namespace's veth peers go.
  NetRestoreOptions net;
  // The tree's network namespace, built ahead from an early copy of its
  // image (a migration's destination): adopted if it matches netns.img.
  PreparedNetns* prepared_netns = nullptr;
  // The tree's root, made ahead from a preview (a migration's destination):
  // taken if the images agree with it, discarded otherwise.
  EarlyRoot* early_root = nullptr;
  // Called once the tree runs (before waiting for the root without -d).
  std::function<void(const RestoreResult&)> on_running;
};

struct RestoreResult {
  pid_t root = 0;
  uint32_t tasks = 0, threads = 0;
  uint64_t pages = 0;
  uint64_t total_us = 0;
  int exit_status = 0;                           // without -d: the root's wait status
  std::vector<std::string> cgroup_paths;         // of the new cgroup (cgroup_name)
  std::optional<img::ContainerState> container;  // dumped with --container
};

// With detach=false this returns after the root exits.
RestoreResult restore_tree(const RestoreRequest& req);

}  // namespace ckpt
