// PreparedNetns (objects/netns.h): a network namespace built ahead of its
// tree.
#include <google/protobuf/util/message_differencer.h>

#include "objects/netns.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/netns_exec.h"

namespace ckpt {

bool PreparedNetns::accepts(const img::NetNs& ns, const NetRestoreOptions& opts) {
  return all_veths_bridged(ns, opts);
}

PreparedNetns::PreparedNetns(img::NetNs ns, NetRestoreOptions opts)
    : ns_(std::move(ns)), opts_(std::move(opts)) {
  opts_.bridge_late = true;
  try {
    log::StepTimer st("network namespace, ahead of the tree");
    fd_ = new_netns();
    // A failure removes what it made (restore_netns undoes its host ends).
    restore_netns(fd_.get(), ns_, opts_);
    built_ = true;
  } catch (const Error& e) {
    LOG_WARN("network namespace built ahead: %s (it is built again)", e.what());
    fd_.reset();
  }
}

PreparedNetns::~PreparedNetns() {
  if (built_ && !adopted_) remove_restored_netns_links(ns_, opts_);
}

int PreparedNetns::adopt(const img::NetNs& ns, const NetRestoreOptions& opts) {
  if (!built_) return -1;
  if (opts.bridge != opts_.bridge || opts.host_ifname != opts_.host_ifname ||
      // Compared serialized: a reflective comparison of ~700 sysctls took
      // a millisecond of the downtime. (No map fields: the bytes are
      // deterministic.)
      ns.SerializeAsString() != ns_.SerializeAsString()) {
    if (log::enabled(log::Level::Debug)) {
      // What changed between the preview and the stop (off the fast path).
      std::string diff;
      google::protobuf::util::MessageDifferencer d;
      d.ReportDifferencesToString(&diff);
      d.Compare(ns_, ns);
      if (diff.size() > 600) diff = diff.substr(0, 600) + "...";
      LOG_DEBUG("network namespace built ahead: the tree's differs (%s); built again",
                diff.c_str());
    }
    // Its host veth ends have the names the new build needs.
    remove_restored_netns_links(ns_, opts_);
    built_ = false;
    fd_.reset();
    return -1;
  }
  adopted_ = true;
  return fd_.get();
}

}  // namespace ckpt
