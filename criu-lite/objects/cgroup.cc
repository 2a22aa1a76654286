#include "objects/cgroup.h"

#include "sys/error.h"

namespace ckpt {

img::CgroupImage to_image(const cgroup::Limits& l) {
  img::CgroupImage out;
  if (l.memory_max) out.set_memory_max(*l.memory_max);
  if (l.pids_max) out.set_pids_max(*l.pids_max);
  if (l.cpu_quota_us) out.set_cpu_quota_us(*l.cpu_quota_us);
  if (l.cpu_period_us) out.set_cpu_period_us(*l.cpu_period_us);
  if (l.cpu_shares) out.set_cpu_shares(*l.cpu_shares);
  if (l.cpu_weight) out.set_cpu_weight(*l.cpu_weight);
  return out;
}

cgroup::Limits from_image(const img::CgroupImage& img) {
  cgroup::Limits l;
  if (img.has_memory_max()) l.memory_max = img.memory_max();
  if (img.has_pids_max()) l.pids_max = img.pids_max();
  if (img.has_cpu_quota_us()) l.cpu_quota_us = img.cpu_quota_us();
  if (img.has_cpu_period_us()) l.cpu_period_us = img.cpu_period_us();
  if (img.has_cpu_shares()) l.cpu_shares = img.cpu_shares();
  if (img.has_cpu_weight()) l.cpu_weight = img.cpu_weight();
  return l;
}

img::CgroupImage dump_cgroup(const cgroup::Cgroup& cg) {
  return in_context("cgroup", [&] { return to_image(cg.limits()); });
}

cgroup::Cgroup restore_cgroup(const std::string& name, const img::CgroupImage& img) {
  return in_context("restore cgroup " + name, [&] {
    cgroup::Cgroup cg = cgroup::Cgroup::create(name);
    cg.set_limits(from_image(img));  // a failure here removes cg again
    return cg;
  });
}

void restore_cgroup_limits(cgroup::Cgroup& cg, const img::CgroupImage& img) {
  in_context("restore cgroup limits", [&] { cg.set_limits(from_image(img)); });
}

}  // namespace ckpt
