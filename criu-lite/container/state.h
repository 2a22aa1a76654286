// Containers started by `ckpt run` are remembered in a state directory:
// $CKPT_RUN_DIR, else /run/ckpt. One file per container, named after it,
// holding an img::ContainerState in protobuf text format; NAME.log next to
// it is the stdio of a detached container. Simulated hosts on one machine
// (scripts/hosts) keep separate states by giving each its own CKPT_RUN_DIR.
//
// Files are replaced atomically (written to a temporary file, then renamed),
// so a reader sees the old state or the new one, never half of one.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "container.pb.h"

namespace ckpt::container {

// $CKPT_RUN_DIR or /run/ckpt.
std::string run_dir();
// Throws UsageError unless name is 1-64 of [A-Za-z0-9_-], not starting with '-'.
void check_name(const std::string& name);
std::string state_path(const std::string& name);
// Where a detached container's stdio goes without --log.
std::string default_log_path(const std::string& name);

// Throws Error "no container NAME" if there is no state file.
img::ContainerState load_state(const std::string& name);
std::optional<img::ContainerState> try_load_state(const std::string& name);
// Writes (or replaces) the state of s.name().
void save_state(const img::ContainerState& s);
// Like save_state, but throws if a container of that name
// exists: `ckpt run` claims its name with it.
void create_state(const img::ContainerState& s);
// No error if there is none.
void remove_state(const std::string& name);
// Every container with a state file, by name. Unreadable files are logged
// and skipped.
std::vector<img::ContainerState> list_states();

// What the container is doing now (the state file only says what was
// recorded): its init still runs (same pid and start time), and the
// cgroup's freezer.
enum class Status { Running, Frozen, Exited };
Status live_status(const img::ContainerState& s);
const char* status_name(Status s);
// The init process of s still runs (not a zombie, not a reused pid).
bool init_alive(const img::ContainerState& s);
// Field 22 of /proc/PID/stat, 0 if the process is gone.
unsigned long long starttime_of(pid_t pid);

}  // namespace ckpt::container
