// `ckpt run`: a small container launcher, so that there is a real
// container to checkpoint without Docker. The container's init is CMD
// itself, as pid 1 of new pid, mount, uts and ipc namespaces (and a new
// network namespace unless --net host), in a cgroup of its own, with a
// fresh /proc and optionally another root (pivot_root).
//
// The order, and why:
//   1. the cgroup is made (limits set) and the state file claims the name;
//   2. the init is cloned into its namespaces and waits on a pipe;
//   3. ckpt attaches it to the cgroup and plugs its veth in, so nothing the
//      container ever runs is outside its cgroup or without its network;
//   4. the init makes / private, sets the hostname, pivots into the rootfs,
//      mounts /proc and execs CMD; an error before exec comes back through
//      a close-on-exec pipe, and everything made so far is removed.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "container.pb.h"

namespace ckpt::container {

struct RunRequest {
  std::string name;
  std::vector<std::string> argv;   // CMD ARGS...
  std::string rootfs;              // "" = the host's root
  std::string hostname;            // "" = keep the host's (in a new uts namespace)
  std::string net = "none";        // none | host | bridge=BR,ip=A.B.C.D/N[,gw=G]
  std::optional<uint64_t> memory;  // memory limit, bytes
  bool detach = false;             // -d
  std::string log_file;            // -d: stdio of the container ("" = run_dir()/NAME.log)
  bool remove_on_exit = false;     // --rm (foreground): no state left once CMD exits
  // Called once CMD runs (exec succeeded), with its state.
  std::function<void(const img::ContainerState&)> on_started;
};

// Detached: returns 0 once CMD runs. Foreground: waits for CMD, forwarding
// SIGINT, SIGTERM, SIGHUP and SIGQUIT to it, and returns its wait status.
// Throws Error (naming the step) if the container cannot be started; then
// nothing is left behind.
int run_container(const RunRequest& req);

// `ckpt kill`: sends sig to the container's init. Throws if it does not run.
void kill_container(const std::string& name, int sig);

// `ckpt rm`: removes the container's cgroup, host veth, default log and
// state. A running container is refused unless force, which kills it first.
void remove_container(const std::string& name, bool force);

// `ckpt restore --container NAME`, before: NAME must not run; what is left
// of it (state file, cgroup, host veth; not its log, which the restored
// tree may have open) is removed so the restored container can take it.
void prepare_restore(const std::string& name);
// After: records the restored container: its dumped state with the new
// init, cgroup and, if the restore moved it, the bridge of its veth.
void record_restored(img::ContainerState dumped, pid_t init,
                     const std::vector<std::string>& cgroup_paths, const std::string& bridge,
                     const std::string& host_ifname);

}  // namespace ckpt::container
