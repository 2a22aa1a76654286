// Which namespaces a tree has of its own, i.e. not shared with ckpt: those
// are saved (each kind by its own object file) and created anew at restore.
// The tree must agree: a task in another namespace than its root's is
// refused, naming the task and the kind.
#pragma once

#include <cstdint>

#include "inventory.pb.h"
#include "objects/dump_context.h"

namespace ckpt {

// Fills the kinds the root has of its own (pid: ctx.own_pidns, found by
// map_namespace_pids). Throws for kinds that cannot be saved (user, time,
// cgroup) and for tasks whose namespaces differ from the root's.
img::Namespaces detect_namespaces(const DumpContext& ctx);

// CLONE_NEW* flags that recreate ns.
uint64_t namespace_clone_flags(const img::Namespaces& ns);

}  // namespace ckpt
