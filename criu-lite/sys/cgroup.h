// Cgroups across the hierarchies a machine mounts. A machine may have pure
// cgroup v2, pure v1, or both ("hybrid": this project's machines mount v1
// controllers under /sys/fs/cgroup/NAME and a controller-less cgroup2 at
// /sys/fs/cgroup/unified). Nothing here hard-codes a path: the mounts are
// read from /proc/self/mountinfo.
//
// A Cgroup is "one container's cgroup": one directory in each hierarchy it
// needs. Freezing prefers v2's cgroup.freeze (hierarchical, and it reports
// when every task is frozen) and falls back to the v1 freezer. Limits go to
// whichever hierarchy carries the controller (v2 if enabled there, else v1).
//
// Call order for a container:
//   Cgroup cg = Cgroup::create(name);   // mkdirs, owned: rmdir'ed on scope exit
//   cg.set_limits(...); cg.attach(pid);  // before the container's init execs
//   cg.release();                         // the cgroup now outlives ckpt
// and later, from another process:
//   Cgroup cg = Cgroup::open(paths);      // not owned
//   cg.freeze(); ... cg.thaw();
//   cg.kill(SIGKILL); cg.destroy();
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt::cgroup {

// One mounted cgroup hierarchy.
struct Hierarchy {
  bool v2 = false;
  std::string mount;                     // mount point in our mount namespace
  std::string root;                      // the mount's root inside the hierarchy ("/" usually)
  std::vector<std::string> controllers;  // v1: from the mount's options; v2: unused
  bool has(std::string_view controller) const;
};

struct Layout {
  std::optional<Hierarchy> v2;
  std::vector<Hierarchy> v1;  // one per hierarchy (a named one like name=systemd included)
  const Hierarchy* v1_with(std::string_view controller) const;
};

// Cgroup mounts in /proc/PID/mountinfo text (one per hierarchy: the first
// mount of each wins, preferring a mount of the hierarchy's root).
Layout parse_mountinfo(std::string_view text);
// This process's view, read once. If our mount namespace shows no cgroup
// file system although we are in cgroups (`ip netns exec` remounts /sys,
// which hides /sys/fs/cgroup), the process moves to a mount namespace of
// its own (slave of the old one, so nothing leaks out) and mounts the
// hierarchies of /proc/self/cgroup where systemd puts them: v1 under
// /sys/fs/cgroup/CONTROLLERS, v2 at /sys/fs/cgroup/unified (or at
// /sys/fs/cgroup without v1), so paths are the same as outside. Call it
// while the process has one thread (unshare needs that); the CLI does.
const Layout& layout();
// Settles which mount namespace ckpt works in (layout() joins the one ckpt
// was started from when ip netns exec hid the cgroup mounts). Call before
// creating or comparing mount namespaces: they copy, or are told apart
// from, ckpt's own.
inline void settle_mount_namespace() {
  layout();
}

// /proc/PID/cgroup text: the cgroup path of the process in the v2 hierarchy
// ("" key) and per v1 controller list ("cpu,cpuacct").
struct Membership {
  std::string v2;                                       // "" if no v2 line
  std::vector<std::pair<std::string, std::string>> v1;  // (controllers, path)
  std::optional<std::string> v1_path(std::string_view controller) const;
};
Membership parse_proc_cgroup(std::string_view text);

// Limits a container cgroup can carry; unset means "as the kernel default".
// CPU weight is kept in both units: v1 cpu.shares (2..262144, default 1024)
// and v2 cpu.weight (1..10000, default 100); setting converts when the
// hierarchy has the other one.
struct Limits {
  std::optional<uint64_t> memory_max;  // bytes
  std::optional<uint64_t> pids_max;
  std::optional<uint64_t> cpu_quota_us;  // with cpu_period_us: at most quota per period
  std::optional<uint64_t> cpu_period_us;
  std::optional<uint64_t> cpu_shares;
  std::optional<uint64_t> cpu_weight;
  bool operator==(const Limits&) const = default;
};
uint64_t shares_to_weight(uint64_t shares);
uint64_t weight_to_shares(uint64_t weight);

class Cgroup {
 public:
  struct Dir {
    bool v2 = false;
    std::vector<std::string> controllers;  // v1: the hierarchy's controllers
    std::string path;                      // absolute directory
  };

  Cgroup() = default;
  Cgroup(Cgroup&& o) noexcept;
  Cgroup& operator=(Cgroup&& o) noexcept;
  Cgroup(const Cgroup&) = delete;
  Cgroup& operator=(const Cgroup&) = delete;
  // An owned cgroup (from create) is thawed and removed, best effort.
  ~Cgroup();

  // Makes NAME in each hierarchy the container needs: v2 (if mounted), and
  // the v1 hierarchies of memory, pids, cpu (those v2 does not offer), and
  // the v1 freezer if there is no v2. Each directory is
  // <this process's cgroup>/<parent>/<name>, parent = $CKPT_CGROUP_PARENT
  // or "ckpt". Under our own cgroup because that is where we may create
  // cgroups (delegation, a batch job's cgroup) and so limits above us
  // still apply. Throws if NAME exists already.
  static Cgroup create(const std::string& name);
  // Removes the directories create(name) would make if they exist and
  // hold no task (what a ckpt killed between making and using them left),
  // waiting up to 3 s for tasks that died in them to be reaped. False if
  // there were none, or one holds a task (then nothing is touched).
  static bool remove_leftover(const std::string& name);
  // The cgroup made of these directories (as saved by paths()); not owned.
  static Cgroup open(const std::vector<std::string>& paths);
  // The same, without the directories that no longer exist.
  static Cgroup open_existing(const std::vector<std::string>& paths);
  // Any cgroup directory, v1 or v2 (e.g. --freeze-cgroup PATH); not owned.
  static Cgroup of_path(const std::string& path);

  const std::vector<Dir>& dirs() const { return dirs_; }
  std::vector<std::string> paths() const;
  bool empty() const { return dirs_.empty(); }
  // Stops owning: the directories stay after this object dies.
  void release() { owned_ = false; }
  bool owned() const { return owned_; }

  // Moves pid (the whole process) into every directory.
  void attach(pid_t pid) const;
  // Processes in the cgroup and its sub-cgroups (the freezer's directory
  // when there is one, else the first).
  std::vector<pid_t> procs() const;

  // Freezes every task of the cgroup and its sub-cgroups and returns once
  // the kernel says all are frozen; on timeout thaws again and throws.
  void freeze(std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  void thaw() const;
  bool frozen() const;
  // Where freezing happens (for messages): the cgroup.freeze or
  // freezer.state directory; throws if the cgroup has no freezer.
  const Dir& freezer_dir() const;

  // Writes the limits that are set; throws naming the file if one cannot be
  // written (e.g. no such controller here).
  void set_limits(const Limits& l) const;
  // The limits in effect that differ from the kernel's defaults.
  Limits limits() const;

  // Sends sig to every process of the cgroup (cgroup.kill for SIGKILL on v2).
  void kill(int sig) const;
  // Removes the directories (sub-cgroups first), retrying while the kernel
  // still counts exiting tasks; throws after timeout naming what is left.
  // Thaws first, so that killed tasks can exit. and_empty_parent: also
  // the parent directories if now empty (the ckpt/ of create; an owned
  // cgroup does that when it goes out of scope).
  void destroy(std::chrono::milliseconds timeout = std::chrono::seconds(5),
               bool and_empty_parent = false);

 private:
  void drop() noexcept;
  const Dir* find(std::string_view controller, const char* v2_file) const;
  std::vector<Dir> dirs_;
  bool owned_ = false;
};

}  // namespace ckpt::cgroup
