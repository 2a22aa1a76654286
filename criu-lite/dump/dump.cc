#include "dump/dump.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <thread>

#include "dump/seize.h"
#include "image/crc32c.h"
#include "image/record_file.h"
#include "inventory.pb.h"
#include "objects/cgroup.h"
#include "objects/dirty_tracking.h"
#include "objects/files.h"
#include "objects/ghosts.h"
#include "objects/inet_sockets.h"
#include "objects/mm.h"
#include "objects/namespaces.h"
#include "objects/net_lock.h"
#include "objects/pstree.h"
#include "objects/task_core.h"
#include "objects/vma_flags.h"
#include "sys/affinity.h"
#include "sys/cancel.h"
#include "sys/cgroup.h"
#include "sys/cpu.h"
#include "sys/error.h"
#include "sys/fault.h"
#include "sys/fd.h"
#include "sys/log.h"
#include "sys/ns_enter.h"

namespace ckpt {

namespace {

using Clock = std::chrono::steady_clock;
uint64_t us_since(Clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count());
}

// Owns the frozen tree: unless told otherwise, its destructor thaws it.
class FrozenTree {
 public:
  explicit FrozenTree(DumpContext& ctx) : ctx_(ctx) {}
  ~FrozenTree() {
    if (!done_) thaw_tasks(ctx_);
  }
  void thaw() {
    thaw_tasks(ctx_);
    done_ = true;
  }
  void kill() {
    kill_tasks(ctx_);
    done_ = true;
  }

 private:
  DumpContext& ctx_;
  bool done_ = false;
};

img::Inventory make_inventory(const DumpContext& ctx, pid_t root) {
  img::Inventory inv;
  inv.set_format_major(image::kFormatMajor);
  inv.set_format_minor(image::kFormatMinor);
#ifdef CKPT_VERSION
  inv.set_ckpt_version(CKPT_VERSION);
#endif
  utsname u{};
  uname(&u);
  inv.set_arch(u.machine);
  inv.set_kernel_release(u.release);
  inv.set_hostname(u.nodename);
  inv.set_xfeatures(cpu::xcr0());
  inv.set_xstate_size(cpu::xstate_size());
  inv.set_root_pid(static_cast<uint32_t>(root));
  std::string_view vdso = cpu::vdso_text();
  inv.set_vdso_size(vdso.size());
  inv.set_vdso_crc(image::crc32c(vdso.data(), vdso.size()));
  inv.set_page_size(static_cast<uint32_t>(sysconf(_SC_PAGESIZE)));
  inv.set_compression(ctx.opts.zstd_level > 0 ? "zstd" : "");
  inv.set_dump_time_unix(static_cast<uint64_t>(time(nullptr)));
  inv.set_shell_job(ctx.opts.shell_job);
  auto* s = inv.mutable_stats();
  s->set_tasks(ctx.stats.tasks);
  s->set_threads(ctx.stats.threads);
  s->set_vmas(ctx.stats.vmas);
  s->set_pages(ctx.stats.pages);
  s->set_page_bytes(ctx.stats.page_bytes);
  s->set_parent_pages(ctx.stats.parent_pages);
  return inv;
}

uint64_t random_id() {
  uint64_t id = 0;
  while (id == 0)
    if (getrandom(&id, sizeof id, 0) != sizeof id) id = static_cast<uint64_t>(time(nullptr));
  return id;
}

// The parent of an incremental dump: a complete checkpoint.
std::shared_ptr<const image::ImageSource> open_parent(const std::string& dir,
                                                      const std::string& parent,
                                                      uint64_t* parent_id) {
  std::string path = parent[0] == '/' ? parent : dir + "/" + parent;
  return in_context("parent checkpoint " + path, [&] {
    auto src = std::make_shared<image::DirSource>(path);
    if (!src->exists(kInventoryImage))
      throw Error(strfmt("no %s: not a complete checkpoint", kInventoryImage));
    img::Inventory inv;
    image::load_message(*src, kInventoryImage, image::Kind::Inventory, inv);
    *parent_id = inv.checkpoint_id();
    return std::shared_ptr<const image::ImageSource>(src);
  });
}

// A failed dump may have consumed written-page bits no checkpoint holds:
// the trackers must not be trusted after it.
struct TrackersGuard {
  DirtyTrackers* trackers;
  bool ok = false;
  ~TrackersGuard() {
    if (!ok && trackers) trackers->clear();
  }
};

// Whether pid has exited: gone, or a zombie its parent has not reaped yet.
// A task in the middle of exiting has lost its memory before it is a
// zombie: what failed on it may have failed for that, so it is given a
// moment to become one.
bool exited(pid_t pid) {
  for (int i = 0; i < 40; i++) {
    if (kill(pid, 0) != 0) return errno == ESRCH;
    std::string text;
    if (!try_read_file(strfmt("/proc/%d/stat", pid), &text)) return true;
    try {
      char state = proc::parse_stat(text).state;
      if (state == 'Z' || state == 'X') return true;
    } catch (const Error&) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// Whether a network namespace (open) is not ckpt's.
bool other_netns(int ns) {
  struct stat theirs {
  }, ours{};
  if (fstat(ns, &theirs) != 0 || stat("/proc/self/ns/net", &ours) != 0)
    throw_errno("stat the network namespaces");
  return theirs.st_ino != ours.st_ino || theirs.st_dev != ours.st_dev;
}

// Makes the lock's table in the namespace the root's connections live in,
// while the tree still runs (NetLock::prepare): what is left for the stop is
// adding the rules. Best effort: if it fails, the stop makes it all.
void prepare_lock(pid_t root, NetLock* lock) {
  try {
    UniqueFd ns = open_or_throw(strfmt("/proc/%d/ns/net", root), O_RDONLY | O_CLOEXEC);
    lock->prepare(other_netns(ns.get()) ? ns.get() : -1, lock_table_name(root));
  } catch (const Error& e) {
    LOG_DEBUG("network lock not prepared: %s", e.what());
  }
}

}  // namespace

DumpResult dump_tree(const DumpRequest& req) {
  auto t0 = Clock::now();
  DumpResult res;
  std::optional<image::DirSink> dir_sink;
  if (!req.sink) {
    dir_sink.emplace(req.dir);
    // An older dump in the same place must not look complete while this
    // one is being written.
    unlink((req.dir + "/" + kInventoryImage).c_str());
    unlink((req.dir + "/" + image::kParentLink).c_str());
  }
  image::ImageSink& sink = req.sink ? *req.sink : *dir_sink;

  DumpContext ctx;
  GhostDumper ghosts;
  ctx.sink = &sink;
  ctx.ghosts = &ghosts;
  ctx.opts = req.opts;
  uint64_t parent_id = req.parent_id;
  if (!req.parent_name.empty()) {
    if (!req.trackers) throw Error("a parent sent elsewhere needs dirty tracking");
    ctx.parent_elsewhere = true;
    ctx.parent_covers = req.parent_covers;
  } else if (!req.parent_dir.empty()) {
    ctx.parent = open_parent(req.dir, req.parent_dir, &parent_id);
    dir_sink->put_symlink(image::kParentLink, req.parent_dir);
  }
  FrozenTree frozen(ctx);
  TrackersGuard trackers_guard{req.trackers};
  // Destroyed in reverse order on failure: sockets leave repair mode, the
  // connections are unlocked (a thawed process must not find its sends
  // refused), then the tree is thawed. The tree's network namespace, when
  // it has one, is held for the lock inside it.
  UniqueFd tree_netns;
  NetLock net_lock;
  RepairedSockets repaired;
  ctx.net_lock = &net_lock;
  ctx.repaired = &repaired;

  // With a cgroup, nothing in it may fork or exit while the tree is walked:
  // freeze it, seize every task (they then stay in ptrace stops), thaw it
  // (a frozen task would not run the remote syscalls).
  std::optional<cgroup::Cgroup> cg;
  if (req.cgroup_paths.size() == 1 && !req.save_cgroup)
    cg = cgroup::Cgroup::of_path(req.cgroup_paths[0]);
  else if (!req.cgroup_paths.empty())
    cg = cgroup::Cgroup::open_existing(req.cgroup_paths);
  struct ThawCgroup {
    cgroup::Cgroup* cg = nullptr;
    ~ThawCgroup() {
      if (!cg) return;
      try {
        cg->thaw();
      } catch (const Error& e) {
        LOG_ERROR("thaw the cgroup: %s", e.what());
      }
    }
  } thaw_cg;
  // Loaded and checked once per ckpt, while the tree still runs.
  vma_flags::prepare();
  // The network namespace is read beside everything else once the tree is
  // stopped (objects/namespaces.h); its reader gets ready now.
  // detect_namespaces() below confirms it is the tree's own.
  NetnsDump netns_dump;
  // Written by the namespace's thread before wait_ready() returns.
  std::optional<img::NetNs> net_preview;
  if (!req.opts.pages_only) {
    UniqueFd ns(open(strfmt("/proc/%d/ns/net", req.pid).c_str(), O_RDONLY | O_CLOEXEC));
    std::function<void(const img::NetNs&)> on_net;
    if (req.on_preview) on_net = [&net_preview](const img::NetNs& n) { net_preview = n; };
    if (ns && other_netns(ns.get())) netns_dump.prepare(std::move(ns), std::move(on_net));
  }
  if (req.opts.tcp_established && !req.opts.pages_only) prepare_lock(req.pid, &net_lock);
  // The rest of the preview is read while that thread reads its part.
  std::optional<img::TreePreview> preview;
  if (req.on_preview && !req.opts.pages_only) {
    try {
      preview = preview_tree(req.pid);
    } catch (const Error& e) {
      LOG_DEBUG("no preview of the tree: %s", e.what());
    }
  }
  netns_dump.wait_ready();
  if (preview) {
    if (net_preview) preview->mutable_net()->Swap(&*net_preview);
    // A tree that changes between the preview and the stop, as a test sees it.
    if (fault::armed("stale-preview")) preview->mutable_namespaces()->set_uts(false);
    req.on_preview(*preview);
  }
  if (req.before_stop) req.before_stop();
  if (cg) {
    log::StepTimer st("freeze cgroup");
    cg->freeze();
    thaw_cg.cg = &*cg;
  }

  // Stop every thread of the tree; from here on nothing in it runs.
  {
    log::StepTimer st("seize");
    seize_tree(ctx, req.pid);
  }
  if (cg) {
    for (pid_t p : cg->procs())
      if (!ctx.find(p) && std::none_of(ctx.zombies.begin(), ctx.zombies.end(),
                                       [&](const DumpZombie& z) { return z.pid == p; }))
        throw Error(strfmt("pid %d is in the cgroup but not in the tree of pid %d", p, req.pid));
    thaw_cg.cg = nullptr;
    cg->thaw();
  }
  auto frozen_at = Clock::now();
  // The tree's threads are driven from this thread's CPU (prepare_tasks);
  // the network namespace is read on another. The pin ends before pages
  // are copied: threads made from here (the page writer, a post-copy
  // pusher) would inherit it and share the one CPU.
  std::optional<affinity::PinHere> pin;
  pin.emplace();
  int tracer_cpu = pin->cpu();
  if (!req.opts.pages_only) {
    UniqueFd ns = open_or_throw(strfmt("/proc/%d/ns/net", req.pid), O_RDONLY | O_CLOEXEC);
    if (other_netns(ns.get())) netns_dump.start(std::move(ns), tracer_cpu);
  }
  ctx.stats.tasks = static_cast<uint32_t>(ctx.tasks.size());
  LOG_DEBUG("seized %zu processes", ctx.tasks.size());
  fault::point("dump-after-seize");

  // Registers, signal masks, remote syscall engines.
  {
    log::StepTimer st("prepare");
    prepare_tasks(ctx, tracer_cpu);
    map_namespace_pids(ctx);
  }
  img::Namespaces namespaces = detect_namespaces(ctx);
  // The tree's mounts are told from ours by comparing: ours must be the
  // machine's (see restore.cc).
  if (namespaces.mnt()) cgroup::settle_mount_namespace();
  img::NamespaceImages ns_extra;
  if (cg && req.save_cgroup) {
    *ns_extra.mutable_cgroup() = dump_cgroup(*cg);
  }
  if (req.container) {
    *ns_extra.mutable_container() = *req.container;
  }
  for (auto& t : ctx.tasks) ctx.pages_estimate += estimate_pages(t->status);

  // Pages written since the last dump, as dirty tracking saw them; this
  // also protects them again, so tracking restarts from this dump.
  if (req.trackers) {
    log::StepTimer st("dirty pages");
    collect_dirty(ctx, *req.trackers);
  }

  // The inventory goes last: its presence marks the dump complete.
  auto new_inventory = [&] {
    img::Inventory inv = make_inventory(ctx, ctx.tasks.front()->vpid);
    inv.set_checkpoint_id(random_id());
    if (ctx.parent || ctx.parent_elsewhere) {
      inv.set_parent(ctx.parent_elsewhere ? req.parent_name : req.parent_dir);
      inv.set_parent_id(parent_id);
    }
    return inv;
  };

  // A migration's pre-copy round: tracking restarts now, the tree runs on,
  // and only its pages are copied, behind its back.
  if (req.opts.pages_only) {
    if (!req.trackers) throw Error("a pre-copy round needs dirty tracking");
    {
      log::StepTimer st("arm dirty tracking");
      arm_dirty(ctx, *req.trackers);
    }
    frozen.thaw();
    pin.reset();
    res.frozen_us = us_since(frozen_at);
    if (req.progress) {
      ctx.progress = req.progress;
      req.progress->start("pre-copy", ctx.pages_estimate);
    }
    {
      log::StepTimer st("memory (running)");
      for (auto& t : ctx.tasks) {
        cancel::check();
        try {
          in_context(strfmt("pid %d", t->pid), [&] { dump_pages(ctx, *t); });
        } catch (const Error& e) {
          // It may have exited since it ran again (gone, or a zombie its
          // parent has not reaped yet): the next round has one process
          // fewer. Anything else is an error.
          if (!exited(t->pid)) throw;
          LOG_DEBUG("pid %d exited during the pre-copy round", t->pid);
        }
      }
    }
    if (req.progress) req.progress->finish();
    img::Inventory inv = new_inventory();
    image::save_message(sink, kInventoryImage, image::Kind::Inventory, inv);
    sink.commit();
    trackers_guard.ok = true;
    res.checkpoint_id = inv.checkpoint_id();
    res.stats = ctx.stats;
    res.total_us = us_since(t0);
    return res;
  }

  // The tree's shape: who is whose parent, sessions and groups.
  dump_pstree(ctx);

  // Per process state: threads, signals, credentials, limits.
  {
    log::StepTimer st("core");
    for (auto& t : ctx.tasks) {
      cancel::check();
      in_context(strfmt("pid %d", t->pid), [&] { dump_task_core(ctx, *t); });
    }
  }
  fault::point("dump-after-core");

  // A tree with its own network namespace: the whole namespace is locked
  // before any of its connections is put in repair mode.
  pid_t root_pid = ctx.tasks.front()->pid;
  if (namespaces.net() && req.opts.tcp_established) {
    log::StepTimer st("network lock");
    tree_netns = open_or_throw(strfmt("/proc/%d/ns/net", root_pid), O_RDONLY | O_CLOEXEC);
    in_context("network lock",
               [&] { net_lock.lock_netns(tree_netns.get(), lock_table_name(root_pid)); });
  }

  // Open files, each description once. Sockets are looked up (sock_diag)
  // in the tree's network namespace; only that one is entered, so /proc
  // and paths are still ckpt's.
  {
    log::StepTimer st("files");
    std::optional<NsEnter> in_net;
    if (namespaces.net()) in_net.emplace(root_pid, CLONE_NEWNET);
    FileDumper files;
    for (auto& t : ctx.tasks)
      in_context(strfmt("pid %d", t->pid), [&] { files.dump_task(ctx, *t); });
    files.finish(ctx);
  }
  // Which connections are locked, for the restore to lock them again (on
  // another host) and to unlock them.
  if (net_lock.active())
    image::save_message(sink, kNetLockImage, image::Kind::NetLock, net_lock.image());

  // The tree's own namespaces: mounts and tmpfs contents, IPC objects, ...
  {
    log::StepTimer st("namespaces");
    dump_namespaces(ctx, namespaces, ns_extra, netns_dump);
  }

  // Memory: layout and pages, the bulk of the time.
  pin.reset();
  if (req.progress) {
    ctx.progress = req.progress;
    req.progress->start("dump", ctx.pages_estimate);
  }
  {
    log::StepTimer st("memory");
    for (auto& t : ctx.tasks) {
      cancel::check();
      in_context(strfmt("pid %d", t->pid), [&] { dump_mm(ctx, *t); });
    }
  }
  if (req.progress) req.progress->finish();
  ghosts.finish(ctx);
  fault::point("dump-after-pages");

  // From here on, writes are tracked for the next (incremental) dump.
  if (req.trackers && req.opts.leave_running) {
    log::StepTimer st("arm dirty tracking");
    arm_dirty(ctx, *req.trackers);
  }

  cancel::check();
  img::Inventory inv = new_inventory();
  inv.mutable_stats()->set_frozen_us(us_since(frozen_at));
  *inv.mutable_namespaces() = namespaces;
  fault::point("dump-before-inventory");
  image::save_message(sink, kInventoryImage, image::Kind::Inventory, inv);
  {
    log::StepTimer st("commit (fsync)");
    sink.commit();
  }

  // Stopped and saved: a migration keeps it so until the destination runs
  // it, and may still give it back.
  bool leave = req.opts.leave_running;
  if (req.after_commit) leave = req.after_commit(ctx) == DumpEnd::kThaw;
  if (leave) {
    repaired.leave_repair();
    net_lock.lift();
    frozen.thaw();
    net_lock.unlock();
  } else {
    frozen.kill();
    if (req.trackers) req.trackers->clear();
    // Our duplicates are the last references: the sockets close in repair
    // mode, silently. The lock stays until the restore.
    repaired.close_in_repair();
    net_lock.keep();
  }
  trackers_guard.ok = true;
  res.checkpoint_id = inv.checkpoint_id();
  res.frozen_us = us_since(frozen_at);
  res.stats = ctx.stats;
  res.total_us = us_since(t0);
  return res;
}

}  // namespace ckpt
