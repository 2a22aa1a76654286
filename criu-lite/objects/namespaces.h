// Which namespaces a tree has of its own, i.e. not shared with ckpt: those
// are saved (each kind by its own object file) and created anew at restore.
// The tree must agree: a task in another namespace than its root's is
// refused, naming the task and the kind.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "image/image_io.h"
#include "inventory.pb.h"
#include "mnt.pb.h"
#include "namespaces.pb.h"
#include "netns.pb.h"
#include "objects/dump_context.h"
#include "objects/netns.h"
#include "preview.pb.h"

namespace ckpt {

// Fills the kinds the root has of its own (pid: ctx.own_pidns, found by
// map_namespace_pids). Throws for kinds that cannot be saved (user, time,
// cgroup) and for tasks whose namespaces differ from the root's.
img::Namespaces detect_namespaces(const DumpContext& ctx);

// The root's namespaces and mounts as they are now, while the tree still
// runs (a migration sends it ahead: proto/preview.proto). Leaves out the
// network namespace (NetnsDump reads it). Throws if they cannot be read.
img::TreePreview preview_tree(pid_t root);

// CLONE_NEW* flags that recreate ns.
uint64_t namespace_clone_flags(const img::Namespaces& ns);

constexpr const char* kNamespacesImage = "namespaces.img";

// Dump: the network namespace is read on a thread of its own while the
// tasks are dumped (nothing in it changes while the tree is stopped, and it
// is the slowest namespace: sysctls, firewall). prepare(), while the tree
// still runs, starts the thread: it enters the namespace and opens what it
// will read (NetnsReader). start(), once the tree is stopped, lets it read
// (or starts it then, if the root has changed namespace meanwhile or
// nothing was prepared). dump_namespaces waits for the result.
class NetnsDump {
 public:
  NetnsDump() = default;
  NetnsDump(const NetnsDump&) = delete;  // the thread holds this
  NetnsDump& operator=(const NetnsDump&) = delete;
  ~NetnsDump();  // a prepared thread that never started ends; waits for it
  // on_preview: given the namespace as read while the tree still runs,
  // before wait_ready() returns (errors it throws are logged, not the
  // dump's); what it may change until the stop is read again after it.
  void prepare(UniqueFd netns, std::function<void(const img::NetNs&)> on_preview = {});
  // Until the thread is ready to read (or failed): called right before
  // the tree stops, so that opening hundreds of files does not overlap it.
  void wait_ready();
  // The same, opened again after the stop; avoid_cpu >= 0: the thread
  // keeps off that CPU (the one the tree's tracer and tracees share).
  void start(UniqueFd netns, int avoid_cpu = -1);
  bool started() const { return started_; }
  img::NetNs take();  // waits; rethrows its error

 private:
  void stop_thread();
  UniqueFd ns_;
  std::function<void(const img::NetNs&)> on_preview_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  int go_ = 0;  // 1: read; -1: end without reading
  int avoid_cpu_ = -1;
  bool ready_ = false, done_ = false;
  bool started_ = false;
  img::NetNs result_;
  std::exception_ptr error_;
};

// Saves what each of the root's own namespaces holds (namespaces.img,
// mntns.img and their contents); extra carries the cgroup and container
// parts the pipeline filled; net: the started read of the network one.
void dump_namespaces(DumpContext& ctx, const img::Namespaces& ns, img::NamespaceImages extra,
                     NetnsDump& net);

// Restore: everything read and checked before anything is created.
struct TreeNamespaces {
  img::Namespaces kinds;
  img::NamespaceImages images;
  img::MntNs mnt;
  img::NetNs net;
  NetRestoreOptions net_opts;  // restore --net
  // restore_namespaces made the host ends of veth pairs: a failed restore
  // removes them (undo_namespaces).
  bool net_made = false;
  // The network namespace exists already, filled (PreparedNetns): the root
  // joins it and restore_namespaces leaves it alone.
  bool net_ready = false;
};
TreeNamespaces load_namespaces(const image::ImageSource& src, const img::Namespaces& kinds);
// In ckpt, once the root exists in its new namespaces (root: ckpt's pid of
// it), before it forks the others: host name, IPC objects.
void restore_namespaces(pid_t root, TreeNamespaces& ns, const image::ImageSource& src);
// A restore failed after restore_namespaces: removes what it made outside
// the tree's namespaces (those die with the tree). Never throws.
void undo_namespaces(TreeNamespaces& ns);
// In the root's stub, before it forks the others: the mounts.
void restore_namespaces_in_root(const TreeNamespaces& ns, const image::ImageSource& src);
// Once every address space is rebuilt (segments are attached again).
void finish_namespaces(pid_t root, const TreeNamespaces& ns);

}  // namespace ckpt
