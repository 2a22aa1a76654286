// The cgroup of a container: its limits (memory, pids, cpu) saved at dump
// and a new cgroup with the same limits made at restore. Membership is not
// saved: the restore attaches the new tree's root itself.
#pragma once

#include <string>

#include "container.pb.h"
#include "sys/cgroup.h"

namespace ckpt {

// The limits of cg that are set (what differs from the kernel's defaults).
img::CgroupImage dump_cgroup(const cgroup::Cgroup& cg);

// A new cgroup NAME (see Cgroup::create) with the limits of img. Owned:
// release() it once the restored tree is attached and running, or it is
// removed when it goes out of scope.
cgroup::Cgroup restore_cgroup(const std::string& name, const img::CgroupImage& img);
// The limits alone, for a cgroup made already.
void restore_cgroup_limits(cgroup::Cgroup& cg, const img::CgroupImage& img);

// Conversions, for callers that keep limits in their own records.
img::CgroupImage to_image(const cgroup::Limits& l);
cgroup::Limits from_image(const img::CgroupImage& img);

}  // namespace ckpt
