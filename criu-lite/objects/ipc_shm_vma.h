// A process's attach of a SysV shared memory segment, as one VMA of its
// address space (VMA_SYSV_SHM in mm.proto). The mapping names the segment
// ("/SYSV<key> (deleted)", inode = shm id); its pages belong to the segment,
// which is saved with its IPC namespace (ipc_ns.h), not with the process.
//
// At restore the segment must exist with the same id, key and size in the
// IPC namespace of the restored process: either recreated by restore_ipcns
// (a container's own namespace) or, for a tree in ckpt's namespace (the
// host's), still there: host segments are referenced, not recreated, and a
// missing one is an error naming it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>

#include "mm.pb.h"
#include "sys/proc.h"
#include "sys/remote.h"

namespace ckpt {

// Fills out (start, end, prot, may_write already set) for a "/SYSV" mapping.
void describe_sysv_shm_vma(pid_t pid, const proc::Vma& v, img::Vma* out);

// Attaches the segment again with a remote shmat at the same address and
// with the same access. A VMA that is only part of an attach (the rest was
// unmapped, or split off by mprotect) is attached whole at free_range(size),
// moved to its place with mremap, and the rest detached.
void restore_sysv_shm_vma(RemoteThread& rt, const RemoteScratch& scratch, pid_t pid,
                          const img::Vma& v, const std::function<uint64_t(uint64_t)>& free_range);

}  // namespace ckpt
