// PreparedNetns (objects/netns.h): a network namespace built ahead of its
// tree, on a thread of its own.
#include <google/protobuf/util/message_differencer.h>

#include <exception>
#include <thread>

#include "objects/netns.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/netns_exec.h"

namespace ckpt {

struct PreparedNetns::State {
  img::NetNs ns;
  NetRestoreOptions opts;
  UniqueFd fd;
  std::thread thread;
  std::exception_ptr error;
  bool built = false, adopted = false;
};

bool PreparedNetns::accepts(const img::NetNs& ns, const NetRestoreOptions& opts) {
  return all_veths_bridged(ns, opts);
}

PreparedNetns::PreparedNetns(img::NetNs ns, NetRestoreOptions opts,
                             std::function<void(bool built)> on_built)
    : s_(std::make_unique<State>()) {
  s_->ns = std::move(ns);
  s_->opts = std::move(opts);
  s_->opts.bridge_late = true;
  State* s = s_.get();
  s->thread = std::thread([s, on_built = std::move(on_built)] {
    try {
      log::StepTimer st("network namespace, ahead of the tree");
      s->fd = new_netns();
      restore_netns(s->fd.get(), s->ns, s->opts);
      s->built = true;
    } catch (...) {
      s->error = std::current_exception();
    }
    if (on_built) on_built(s->built);
  });
}

PreparedNetns::~PreparedNetns() {
  if (s_->thread.joinable()) s_->thread.join();
  if (s_->built && !s_->adopted) remove_restored_netns_links(s_->ns, s_->opts);
}

int PreparedNetns::wait_built() {
  if (s_->thread.joinable()) s_->thread.join();
  return s_->built ? s_->fd.get() : -1;
}

int PreparedNetns::adopt(const img::NetNs& ns, const NetRestoreOptions& opts) {
  if (s_->thread.joinable()) s_->thread.join();
  if (s_->error) {
    try {
      std::rethrow_exception(s_->error);
    } catch (const Error& e) {
      LOG_WARN("network namespace built ahead: %s (it is built again)", e.what());
    }
    return -1;
  }
  if (!s_->built) return -1;
  if (opts.bridge != s_->opts.bridge || opts.host_ifname != s_->opts.host_ifname ||
      // Compared serialized: a reflective comparison of ~700 sysctls took
      // a millisecond of the downtime. (No map fields: the bytes are
      // deterministic.)
      ns.SerializeAsString() != s_->ns.SerializeAsString()) {
    if (log::enabled(log::Level::Debug)) {
      // What changed between the preview and the stop (off the fast path).
      std::string diff;
      google::protobuf::util::MessageDifferencer d;
      d.ReportDifferencesToString(&diff);
      d.Compare(s_->ns, ns);
      if (diff.size() > 600) diff = diff.substr(0, 600) + "...";
      LOG_DEBUG("network namespace built ahead: the tree's differs (%s); built again",
                diff.c_str());
    }
    // Its host veth ends have the names the new build needs.
    remove_restored_netns_links(s_->ns, s_->opts);
    s_->built = false;
    s_->fd.reset();
    return -1;
  }
  s_->adopted = true;
  return s_->fd.get();
}

}  // namespace ckpt
