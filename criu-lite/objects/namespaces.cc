#include "objects/namespaces.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>

#include <string>

#include "image/record_file.h"
#include "objects/ipc_ns.h"
#include "objects/mnt_ns.h"
#include "objects/uts_ns.h"
#include "sys/affinity.h"
#include "sys/cgroup.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"
#include "sys/netlink.h"
#include "sys/proc.h"

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
    {"net", true},   {"ipc", true},     {"uts", true},   {"mnt", true},
    {"user", false}, {"cgroup", false}, {"time", false}, {"pid_for_children", false}};

// Marks a supported kind (kKinds) as the tree's own.
void set_own(img::Namespaces& ns, const std::string& kind) {
  if (kind == "net") ns.set_net(true);
  if (kind == "ipc") ns.set_ipc(true);
  if (kind == "uts") ns.set_uts(true);
  if (kind == "mnt") ns.set_mnt(true);
}

UniqueFd ns_fd(pid_t pid, const char* kind) {
  return open_or_throw(strfmt("/proc/%d/ns/%s", pid, kind), O_RDONLY);
}

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
    set_own(ns, k.name);
  }
  return ns;
}

img::TreePreview preview_tree(pid_t root) {
  img::TreePreview p;
  // As map_namespace_pids and detect_namespaces will find, for the root alone.
  std::vector<pid_t> nspid = proc::parse_status(read_file(strfmt("/proc/%d/status", root))).nspid;
  bool own_pidns = nspid.size() > 1 && nspid.back() == 1;
  p.mutable_namespaces()->set_pid(own_pidns);
  p.set_root_pid(static_cast<uint32_t>(own_pidns ? 1 : root));
  for (const Kind& k : kKinds) {
    if (!k.supported) continue;
    if (ns_inode(std::string("/proc/self/ns/") + k.name) !=
        ns_inode(strfmt("/proc/%d/ns/%s", root, k.name)))
      set_own(*p.mutable_namespaces(), k.name);
  }
  if (p.namespaces().mnt()) {
    cgroup::settle_mount_namespace();
    *p.mutable_mnt() = mntns_layout(root);
  }
  return p;
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

NetnsDump::~NetnsDump() {
  stop_thread();
}

void NetnsDump::stop_thread() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (go_ == 0) go_ = -1;
  }
  cv_.notify_all();
  thread_.join();
}

void NetnsDump::prepare(UniqueFd netns, std::function<void(const img::NetNs&)> on_preview) {
  ns_ = std::move(netns);
  on_preview_ = std::move(on_preview);
  go_ = 0;
  ready_ = done_ = false;
  error_ = nullptr;
  thread_ = std::thread([this] {
    // Says so when it can read (or has failed), and when it is done.
    auto signal = [this](bool* flag) {
      {
        std::lock_guard<std::mutex> l(mu_);
        *flag = true;
      }
      cv_.notify_all();
    };
    try {
      // The veth peers are in our namespace: the socket for them is opened
      // before the thread leaves it. The thread ends inside the tree's.
      nl::Sock host_sk = nl::connect_route();
      if (setns(ns_.get(), CLONE_NEWNET) != 0)
        throw_errno("network namespace: setns into the tree's");
      NetnsReader reader;
      // A first read while the tree still runs, for a caller that can
      // start on it (a migration's destination builds it meanwhile).
      if (on_preview_) {
        try {
          on_preview_(reader.read(host_sk.get()));
        } catch (const Error& e) {
          LOG_WARN("network namespace, read ahead: %s", e.what());
        }
      }
      signal(&ready_);
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [this] { return go_ != 0; });
        if (go_ < 0) return;
      }
      if (avoid_cpu_ >= 0) {
        std::string rest = affinity::without(affinity::get(0), avoid_cpu_);
        if (!rest.empty()) affinity::set(0, rest);
      }
      {
        log::StepTimer st("network namespace (beside the tasks)");
        result_ = reader.read(host_sk.get());
      }
      signal(&done_);  // the reader's hundreds of fds close after
    } catch (...) {
      error_ = std::current_exception();
      signal(&ready_);
      signal(&done_);
    }
  });
}

void NetnsDump::wait_ready() {
  if (!thread_.joinable()) return;
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [this] { return ready_; });
}

void NetnsDump::start(UniqueFd netns, int avoid_cpu) {
  struct stat a {
  }, b{};
  bool same = ns_ && fstat(ns_.get(), &a) == 0 && fstat(netns.get(), &b) == 0 &&
              a.st_ino == b.st_ino && a.st_dev == b.st_dev;
  if (!same) {
    stop_thread();
    prepare(std::move(netns));
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    go_ = 1;
    avoid_cpu_ = avoid_cpu;
  }
  cv_.notify_all();
  started_ = true;
}

img::NetNs NetnsDump::take() {
  if (!started_ || !thread_.joinable()) throw Error("the network namespace was not read");
  {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [this] { return done_; });
  }
  if (error_) std::rethrow_exception(error_);
  return std::move(result_);
}

void dump_namespaces(DumpContext& ctx, const img::Namespaces& ns, img::NamespaceImages extra,
                     NetnsDump& net) {
  pid_t root = ctx.tasks.front()->pid;
  if (ns.uts())
    in_context("uts namespace",
               [&] { *extra.mutable_uts() = dump_utsns(ns_fd(root, "uts").get()); });
  if (ns.ipc())
    in_context("ipc namespace", [&] {
      log::StepTimer st("ipc namespace");
      *extra.mutable_ipc() = dump_ipcns(ns_fd(root, "ipc").get(), *ctx.sink, ctx.opts.zstd_level);
    });
  if (ns.net())
    in_context("network namespace", [&] {
      log::StepTimer st("network namespace (wait)");
      save_netns_image(*ctx.sink,
                       net.started() ? net.take() : dump_netns(ns_fd(root, "net").get()));
    });
  if (ns.mnt())
    in_context("mount namespace", [&] {
      log::StepTimer st("mount namespace");
      save_mntns(*ctx.sink, dump_mntns(root, *ctx.sink, ctx.opts.zstd_level));
    });
  if (ns.uts() || ns.ipc() || extra.has_cgroup() || extra.has_container())
    image::save_message(*ctx.sink, kNamespacesImage, image::Kind::Namespaces, extra);
}

TreeNamespaces load_namespaces(const image::ImageSource& src, const img::Namespaces& kinds) {
  TreeNamespaces t;
  t.kinds = kinds;
  if (src.exists(kNamespacesImage))
    image::load_message(src, kNamespacesImage, image::Kind::Namespaces, t.images);
  else if (kinds.uts() || kinds.ipc())
    throw Error(strfmt("image %s is missing", kNamespacesImage));
  if (kinds.ipc()) check_ipcns_images(t.images.ipc(), src);
  if (kinds.net()) t.net = load_netns_image(src);
  if (kinds.mnt()) {
    t.mnt = load_mntns(src);
    check_mntns_images(t.mnt, src);
  }
  return t;
}

void restore_namespaces(pid_t root, TreeNamespaces& ns, const image::ImageSource& src) {
  if (ns.kinds.net() && !ns.net_ready)
    in_context("network namespace", [&] {
      log::StepTimer st("restore network namespace");
      restore_netns(ns_fd(root, "net").get(), ns.net, ns.net_opts);
      ns.net_made = true;
    });
  if (ns.kinds.uts())
    in_context("uts namespace", [&] { restore_utsns(ns_fd(root, "uts").get(), ns.images.uts()); });
  if (ns.kinds.ipc())
    in_context("ipc namespace", [&] {
      log::StepTimer st("restore ipc namespace");
      restore_ipcns(ns_fd(root, "ipc").get(), ns.images.ipc(), src);
    });
}

void undo_namespaces(TreeNamespaces& ns) {
  if (ns.net_made) remove_restored_netns_links(ns.net, ns.net_opts);
  ns.net_made = false;
}

void restore_namespaces_in_root(const TreeNamespaces& ns, const image::ImageSource& src) {
  if (ns.kinds.mnt()) in_context("mount namespace", [&] { restore_mntns(ns.mnt, src); });
}

void finish_namespaces(pid_t root, const TreeNamespaces& ns) {
  if (ns.kinds.ipc())
    in_context("ipc namespace",
               [&] { finish_ipcns_restore(ns_fd(root, "ipc").get(), ns.images.ipc()); });
}

}  // namespace ckpt
