// The root of a tree made before its images exist: a migration's
// destination makes it from the source's preview (proto/preview.proto)
// while the tree still runs on the source, and the restore takes it over
// once the images are in, instead of forking its root while the tree is
// stopped (fork, cgroup attach, mounts and exec: 6-9 ms of the downtime).
//
// It is what StubTree's root would be right before it forks the rest: pid 1
// of a new pid namespace, in the other new namespaces the preview names (the
// network one made ahead, PreparedNetns), in the cgroup, with the mounts of
// the preview, exec'd into the freestanding stub (stubs.h), which parks
// until the controller writes its plan (stub_plan.h: early, plan_go).
//
// Nothing in the preview is trusted: the restore takes the root only if the
// images agree with it (matches()); otherwise it is killed (discard()) and
// the restore makes its own. A root nobody took dies with this object.
#pragma once

#include <sys/types.h>

#include <string>

#include "inventory.pb.h"
#include "mnt.pb.h"
#include "preview.pb.h"
#include "sys/cgroup.h"
#include "sys/fd.h"

namespace ckpt {

class EarlyRoot {
 public:
  // "" if a root can be made ahead from p; otherwise why not (the restore
  // then makes it as usual).
  static std::string refuses(const img::TreePreview& p);

  // Makes the root and waits until its stub is parked. netns_fd: the
  // network namespace made ahead when p has one (-1 otherwise); cg: the
  // cgroup it joins, or null. Throws, having removed what it made.
  EarlyRoot(img::TreePreview p, int netns_fd, cgroup::Cgroup* cg);
  EarlyRoot(const EarlyRoot&) = delete;
  EarlyRoot& operator=(const EarlyRoot&) = delete;
  ~EarlyRoot();  // discard() unless taken

  // Whether a tree with these namespaces, root pid and mounts (null without
  // a mount namespace) can have this root: netns_adopted says the restore
  // uses the network namespace made ahead, in_cgroup that it puts the root
  // in the cgroup given above.
  bool matches(const img::Namespaces& ns, pid_t root_pid, const img::MntNs* mnt, bool netns_adopted,
               bool in_cgroup) const;
  // Kills the parked root and waits for it.
  void discard();

  // For StubTree: the control block its stub waits on (stub_plan.h), then
  // the root itself, which the tree owns (kills, releases) from then on.
  UniqueFd take_control_block();
  pid_t take();

 private:
  img::TreePreview p_;
  bool in_cgroup_ = false;
  pid_t pid_ = -1;  // ckpt's pid of the root; -1 once taken or gone
  UniqueFd ctl_fd_;
  UniqueFd holder_;  // ckpt's pidfd, where the stubs take their files from
};

}  // namespace ckpt
