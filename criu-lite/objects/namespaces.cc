#include "objects/namespaces.h"

#include <sched.h>
#include <sys/stat.h>

#include <string>

#include "sys/error.h"

namespace ckpt {

namespace {

uint64_t ns_inode(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) throw_errno("stat " + path);
  return st.st_ino;
}

struct Kind {
  const char* name;
  bool supported;
};
// pid is decided by map_namespace_pids (only an init's namespace can be
// recreated); pid_for_children differs from pid only in a task that
// unshared one and has not forked since, which restore cannot rebuild.
constexpr Kind kKinds[] = {
    {"net", false},  {"ipc", false},    {"uts", false},  {"mnt", false},
    {"user", false}, {"cgroup", false}, {"time", false}, {"pid_for_children", false}};

}  // namespace

img::Namespaces detect_namespaces(const DumpContext& ctx) {
  img::Namespaces ns;
  ns.set_pid(ctx.own_pidns);
  const DumpTask& root = *ctx.tasks.front();
  for (const Kind& k : kKinds) {
    std::string mine = std::string("/proc/self/ns/") + k.name;
    struct stat st {};
    if (stat(mine.c_str(), &st) != 0) continue;  // a kind this kernel lacks
    uint64_t self = st.st_ino;
    uint64_t want = ns_inode(strfmt("/proc/%d/ns/%s", root.pid, k.name));
    if (std::string(k.name) == "pid_for_children") {
      // Compared with the task's own pid namespace, not ckpt's.
      for (const auto& t : ctx.tasks)
        if (ns_inode(strfmt("/proc/%d/ns/pid_for_children", t->pid)) !=
            ns_inode(strfmt("/proc/%d/ns/pid", t->pid)))
          throw Error(
              strfmt("pid %d: unshared a pid namespace for its children: not supported", t->pid));
      continue;
    }
    for (const auto& t : ctx.tasks)
      if (ns_inode(strfmt("/proc/%d/ns/%s", t->pid, k.name)) != want)
        throw Error(
            strfmt("pid %d is in another %s namespace than the root of the tree (pid %d): "
                   "not supported",
                   t->pid, k.name, root.pid));
    if (want == self) continue;
    if (!k.supported)
      throw Error(strfmt("pid %d has a %s namespace of its own: not supported", root.pid, k.name));
    std::string n = k.name;
    if (n == "net") ns.set_net(true);
    if (n == "ipc") ns.set_ipc(true);
    if (n == "uts") ns.set_uts(true);
    if (n == "mnt") ns.set_mnt(true);
  }
  return ns;
}

uint64_t namespace_clone_flags(const img::Namespaces& ns) {
  uint64_t f = 0;
  if (ns.pid()) f |= CLONE_NEWPID;
  if (ns.net()) f |= CLONE_NEWNET;
  if (ns.ipc()) f |= CLONE_NEWIPC;
  if (ns.uts()) f |= CLONE_NEWUTS;
  if (ns.mnt()) f |= CLONE_NEWNS;
  return f;
}

}  // namespace ckpt
