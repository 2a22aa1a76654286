#include "restore/restore.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sched.h>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>

#include "image/image_io.h"
#include "image/page_store.h"
#include "image/record_file.h"
#include "objects/cgroup.h"
#include "objects/files.h"
#include "objects/ghosts.h"
#include "objects/lazy_pages.h"
#include "objects/mm.h"
#include "objects/namespaces.h"
#include "objects/net_lock.h"
#include "objects/task_attrs.h"
#include "objects/task_core.h"
#include "objects/thread.h"
#include "objects/tty.h"
#include "restore/early_root.h"
#include "restore/plan.h"
#include "restore/stubs.h"
#include "restore/tracer_pool.h"
#include "sys/cancel.h"
#include "sys/cpu.h"
#include "sys/error.h"
#include "sys/fault.h"
#include "sys/fd.h"
#include "sys/log.h"
#include "sys/ns_enter.h"
#include "sys/proc.h"
#include "sys/remote.h"
#include "sys/tracee.h"

namespace ckpt {

namespace {

using Clock = std::chrono::steady_clock;

constexpr unsigned kStubOptions = PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL;
constexpr uint64_t kThreadFlags =
    CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;

// One stub being turned into its dumped process.
struct LiveTask {
  const PlannedTask* plan = nullptr;
  std::vector<Tracee> threads;  // leader first, in image order
  std::unique_ptr<RemoteThread> remote;
  RemoteScratch scratch;
};

void seize_stub(LiveTask& lt) {
  pid_t pid = lt.plan->hpid();
  // RemoteThread keeps a reference to the leader's Tracee: no reallocation
  // may move it when the other threads are added.
  lt.threads.reserve(static_cast<size_t>(lt.plan->core.threads_size()));
  lt.threads.push_back(Tracee::seize(pid, kStubOptions));
  Tracee& t = lt.threads.back();
  t.interrupt();
  t.wait_stopped();
  t.set_sigmask(~0ULL);  // nothing may be delivered while we rebuild
}

// Address space, mm fields, signal handlers, timers: all through the leader.
void rebuild_process(LiveTask& lt, const StubTree& stubs, size_t idx, const image::ImageSource& src,
                     const ShmemTable& shmem, const GhostTable& ghosts, MmRestoreStats* st,
                     LazyPager* lazy) {
  const PlannedTask& p = *lt.plan;
  pid_t pid = p.hpid();
  Tracee& leader = lt.threads[0];
  lt.remote = std::make_unique<RemoteThread>(leader, stubs.syscall_ip(idx));
  RemoteThread& rt = *lt.remote;
  // Half the ptrace stops per remote syscall, until the handlers are set
  // (remote.h: single stepping resets SIGTRAP's; it is set again below).
  rt.set_single_step(true);
  // glibc registered rseq in ckpt; the area is about to be unmapped.
  ckpt_rseq_configuration rc = leader.get_rseq();
  if (rc.rseq_abi_pointer)
    rt.check("rseq unregister", __NR_rseq, rc.rseq_abi_pointer, rc.rseq_abi_size, 1, rc.signature);
  int holder_fd = FileTable::holder_fd_number(p.fds);
  in_context("memory", [&] {
    restore_mm(rt, lt.scratch, pid, p.mm, src, shmem, ghosts, holder_fd, st, lazy);
  });
  in_context("mm fields", [&] { restore_mm_fields(rt, lt.scratch, pid, p.mm); });
  rt.set_single_step(false);
  in_context("signal handlers", [&] {
    restore_sigactions(rt, lt.scratch, pid, p.core,
                       stubs.freestanding() ? StubHandlers::after_exec : StubHandlers::ckpts);
  });
}

// ckpt's id of the thread a task in a recreated pid namespace knows as vtid.
pid_t host_tid(pid_t pid, pid_t vtid) {
  for (pid_t tid : proc::list_threads(pid)) {
    std::string text;
    if (!try_read_file(strfmt("/proc/%d/task/%d/status", pid, tid), &text)) continue;
    const std::vector<pid_t>& ns = proc::parse_status(text).nspid;
    if (!ns.empty() && ns.back() == vtid) return tid;
  }
  throw Error(strfmt("thread %d not found after its clone3", vtid));
}

// Threads other than the leader, created by a remote clone3 with their tids.
void create_threads(LiveTask& lt) {
  const PlannedTask& p = *lt.plan;
  RemoteThread& rt = *lt.remote;
  for (int i = 1; i < p.core.threads_size(); i++) {
    pid_t tid = static_cast<pid_t>(p.core.threads(i).tid());
    in_context(strfmt("thread %d", tid), [&] {
      ckpt_clone_args args{};
      args.flags = kThreadFlags;
      args.set_tid = lt.scratch.addr() + 256;
      args.set_tid_size = 1;
      lt.scratch.write(p.hpid(), 0, &args, sizeof args);
      lt.scratch.write(p.hpid(), 256, &tid, sizeof tid);
      long r = rt.call(__NR_clone3, lt.scratch.addr(), sizeof args);
      // As for processes (stubs.cc): the tid may be a moment from free.
      for (int tries = 0; r == -EEXIST && tries < 2000; tries++) {
        usleep(1000);
        r = rt.call(__NR_clone3, lt.scratch.addr(), sizeof args);
      }
      if (r < 0) throw Error("clone3 with set_tid", static_cast<int>(-r));
      if (r != tid) throw Error(strfmt("clone3 gave tid %ld", r));
      Tracee t = Tracee::adopt(p.host ? host_tid(p.hpid(), tid) : tid);
      // A thread auto-attached by PTRACE_O_TRACECLONE starts in an event stop.
      for (;;) {
        StopInfo s = t.wait();
        if (s.kind == StopInfo::Event && s.event == PTRACE_EVENT_STOP) break;
        t.cont(0);
      }
      lt.threads.push_back(std::move(t));
    });
  }
}

void finish_process(LiveTask& lt) {
  const PlannedTask& p = *lt.plan;
  pid_t pid = p.hpid();
  RemoteThread& rt = *lt.remote;
  restore_itimers(rt, lt.scratch, pid, p.core);
  std::vector<img::SigInfo> shared(p.core.shared_pending().begin(), p.core.shared_pending().end());
  restore_pending(rt, lt.scratch, pid, p.pid(), p.pid(), shared, true);
  std::vector<std::unique_ptr<RemoteThread>> rts;
  for (size_t i = 0; i < lt.threads.size(); i++) {
    const img::ThreadCore& tc = p.core.threads(static_cast<int>(i));
    RemoteThread* trt = rt.tracee().tid() == lt.threads[i].tid() ? &rt : nullptr;
    if (!trt) {
      rts.push_back(std::make_unique<RemoteThread>(lt.threads[i], rt.syscall_ip()));
      trt = rts.back().get();
    }
    in_context(strfmt("thread %u", tc.tid()), [&] {
      restore_thread_state(*trt, lt.scratch, pid, tc);
      std::vector<img::SigInfo> own(tc.pending().begin(), tc.pending().end());
      restore_pending(*trt, lt.scratch, pid, p.pid(), static_cast<pid_t>(tc.tid()), own, false);
    });
  }
  restore_rlimits(pid, p.core);
  in_context("process attributes",
             [&] { restore_task_attrs(rt, lt.threads, lt.scratch, pid, p.core); });
  if (!p.core.root().empty() && p.core.root() != "/") {
    std::string root = p.core.root();
    lt.scratch.write(pid, 0, root.c_str(), root.size() + 1);
    rt.check(("chroot " + root).c_str(), __NR_chroot, lt.scratch.addr());
  }
  // Credentials last: after them the task may no longer be allowed the rest.
  for (size_t i = 0; i < lt.threads.size(); i++) {
    const img::ThreadCore& tc = p.core.threads(static_cast<int>(i));
    RemoteThread* trt = i == 0 ? &rt : rts[i - 1].get();
    if (p.core.no_new_privs())
      trt->check("prctl(PR_SET_NO_NEW_PRIVS)", __NR_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    in_context(strfmt("thread %u: credentials", tc.tid()),
               [&] { restore_thread_creds(*trt, lt.scratch, pid, tc.creds()); });
  }
  restore_task_misc(rt, p.core);
  // The stub's pidfd on ckpt (files.h) is not the process's.
  rt.call(__NR_close, static_cast<uint64_t>(FileTable::holder_fd_number(p.fds)));
  lt.scratch.unmap(rt);
  in_context("process attributes",
             [&] { restore_task_attrs_last(lt.threads, rt.syscall_ip(), pid, p.core); });
  for (size_t i = 0; i < lt.threads.size(); i++) {
    const img::ThreadCore& tc = p.core.threads(static_cast<int>(i));
    restore_thread_regs(lt.threads[i], tc);
    lt.threads[i].set_sigmask(tc.blocked_mask());
  }
}

}  // namespace

RestoreResult restore_tree(const RestoreRequest& req) {
  auto t0 = Clock::now();
  RestoreResult res;
  std::shared_ptr<const image::ImageSource> source =
      req.source ? req.source : std::make_shared<image::DirSource>(req.dir);
  const image::ImageSource& src = *source;

  // Every image is read and checked before anything is created.
  log::StepTimer total_timer("restore");
  RestorePlan plan = [&] {
    log::StepTimer st("load images");
    return load_plan(src);
  }();
  TreeNamespaces namespaces = load_namespaces(src, plan.inv.namespaces());
  namespaces.net_opts = req.net;
  if (!req.cgroup_name.empty() && !namespaces.images.has_cgroup())
    throw Error("the images hold no cgroup (dumped without --container)");
  FileTable files;
  files.load(src);
  GhostTable ghosts;
  ghosts.load(src);
  if (namespaces.images.has_container()) res.container = namespaces.images.container();
  TtyRestore ttys;
  ttys.load(src, req.shell_job);
  img::NetLock saved_lock;
  bool has_lock = load_net_lock(src, &saved_lock);
  for (const auto& c : saved_lock.conns())
    if (c.protocol() == IPPROTO_TCP && !req.tcp_established)
      throw Error("the images hold established TCP connections (" + describe(c) +
                  ", ...): restore with --tcp-established");
  res.tasks = static_cast<uint32_t>(plan.tasks.size());
  for (const auto& t : plan.tasks) res.threads += static_cast<uint32_t>(t.core.threads_size());

  // A recreated pid namespace starts empty; otherwise the dumped pids must
  // be free here.
  if (!plan.new_pidns()) wait_pids_free(plan, req.pid_wait_ms);

  std::vector<img::MmCore> mms;
  std::vector<img::FdTable> tables;
  std::vector<pid_t> pids;
  for (const auto& t : plan.tasks) {
    mms.push_back(t.mm);
    tables.push_back(t.fds);
    pids.push_back(t.pid());
  }
  ShmemTable shmem;
  shmem.load(src, mms);
  // Packets of the saved connections stay dropped until the tree runs (the
  // dump's lock on this host, a new one on another); removed on failure too.
  // A tree with its own network namespace gets its lock inside the new one
  // (on_root below), held open here until the lock is gone.
  bool lock_netns = has_lock && NetLock::whole_netns(saved_lock);
  if (lock_netns && !plan.inv.namespaces().net())
    throw Error(std::string("image ") + kNetLockImage +
                " locks a network namespace but the tree has none of its own");
  UniqueFd tree_netns;
  NetLock net_lock;
  if (has_lock && !lock_netns) net_lock.relock(saved_lock);
  // A namespace whose veths all go into bridges here is kept unreachable by
  // bridging them last (NetRestoreOptions::bridge_late) instead of a lock.
  if (lock_netns && all_veths_bridged(namespaces.net, namespaces.net_opts)) {
    namespaces.net_opts.bridge_late = true;
    lock_netns = false;
  }

  files.reserve(tables);
  // A new mount namespace starts as a copy of ours: settle which one that
  // is first (under ip netns exec, the one ckpt was started from).
  if (plan.inv.namespaces().mnt() || !req.cgroup_name.empty()) cgroup::settle_mount_namespace();
  // Declared before the stubs: on failure they go after them, once empty.
  std::optional<cgroup::Cgroup> cg;
  struct UndoNamespaces {
    TreeNamespaces& ns;
    bool armed = true;
    ~UndoNamespaces() {
      if (armed) undo_namespaces(ns);
    }
  } undo_ns{namespaces};
  // Built ahead (a migration's destination): the root joins it, unlocked
  // and unreachable until its veths are bridged (bridge_late), and its host
  // ends are ours to remove from here on.
  int ready_netns = -1;
  if (req.prepared_netns && plan.inv.namespaces().net())
    ready_netns = req.prepared_netns->adopt(namespaces.net, namespaces.net_opts);
  if (ready_netns >= 0) {
    namespaces.net_ready = true;
    namespaces.net_made = true;
    namespaces.net_opts.bridge_late = true;
    lock_netns = false;
    LOG_DEBUG("network namespace: the one built ahead");
  }
  StubOptions sopts;
  sopts.root_ns_flags = namespace_clone_flags(plan.inv.namespaces());
  if (ready_netns >= 0) {
    sopts.root_ns_flags &= ~static_cast<uint64_t>(CLONE_NEWNET);
    sopts.netns_fd = ready_netns;
  }
  // A root made ahead (a migration's destination) is taken if the images
  // agree with what it was made from; it is in the cgroup made ahead.
  bool in_cgroup_ahead = !req.cgroup_name.empty() && req.cgroup_made;
  if (req.early_root) {
    const img::MntNs* mnt = plan.inv.namespaces().mnt() ? &namespaces.mnt : nullptr;
    if (req.early_root->matches(plan.inv.namespaces(), plan.tasks[0].pid(), mnt, ready_netns >= 0,
                                in_cgroup_ahead)) {
      sopts.early = req.early_root;
    } else {
      LOG_DEBUG("the root made ahead differs from the images: made again");
      req.early_root->discard();
    }
  }
  bool attached_ahead = false;  // set once the stubs took the early root
  sopts.on_root = [&](pid_t root) {
    if (!req.cgroup_name.empty()) {
      if (req.cgroup_made) {
        cg.emplace(std::move(*req.cgroup_made));
        restore_cgroup_limits(*cg, namespaces.images.cgroup());
      } else {
        cg = restore_cgroup(req.cgroup_name, namespaces.images.cgroup());
      }
      if (!attached_ahead) cg->attach(root);
    }
    // Locked while it still holds nothing but lo: once its address is up,
    // a peer's retransmission would otherwise meet no socket and be reset.
    if (lock_netns) {
      tree_netns = open_or_throw(strfmt("/proc/%d/ns/net", root), O_RDONLY | O_CLOEXEC);
      in_context("network lock",
                 [&] { net_lock.lock_netns(tree_netns.get(), saved_lock.table()); });
    }
  };
  sopts.beside_root = [&](pid_t root) { restore_namespaces(root, namespaces, src); };
  sopts.in_root = [&] { restore_namespaces_in_root(namespaces, src); };
  // Sockets, paths and ptys belong to the tree's namespaces.
  int enter = (plan.inv.namespaces().net() ? CLONE_NEWNET : 0) |
              (plan.inv.namespaces().mnt() ? CLONE_NEWNS : 0);
  sopts.ttys = &ttys;
  // Session leaders take their controlling terminals before they fork.
  if (ttys.has_sessions())
    sopts.before_fork = [&](pid_t root) {
      std::optional<NsEnter> in_tree;
      if (enter) in_tree.emplace(root, enter);
      ttys.open_terminals(files);
    };
  StubTree stubs(plan, files, std::move(sopts));
  attached_ahead = stubs.early_root() && in_cgroup_ahead;
  {
    log::StepTimer st("fork tree");
    stubs.create(10000);
  }
  ttys.close_terminals();
  {
    log::StepTimer st("open files");
    // Files the tree reached through ckpt's mounts are opened out here.
    files.open_early([](const img::FileDesc& d) { return d.has_reg() && d.reg().outside(); });
    std::optional<NsEnter> in_tree;
    if (enter) in_tree.emplace(stubs.root_pid(), enter);
    ghosts.materialize(src);
    files.open_all(tables, pids, &ghosts);
    in_tree.reset();
    stubs.install_files(10000);
  }
  files.close_helpers();
  fault::point("restore-after-fork");
  res.root = stubs.root_pid();
  // Several stubs are rebuilt at once, one tracer thread per CPU, each
  // pinned there with its stubs (tracer_pool.h). Stub i belongs to worker
  // i % workers from its seize to its detach. A lazy restore hands each
  // address space to its pager from one thread, as it was written for.
  TracerPool pool(req.lazy ? 1 : 0);
  auto each_task = [&](auto&& fn) {
    std::atomic<bool> failed{false};  // the other workers stop too
    pool.run([&](size_t w) {
      for (size_t i = w; i < plan.tasks.size() && !failed; i += pool.size()) {
        try {
          fn(w, i);
        } catch (...) {
          failed = true;
          throw;
        }
      }
    });
  };

  std::vector<LiveTask> live(plan.tasks.size());
  // On failure the half-built tasks die while still stopped under ptrace:
  // detaching first would let them run a moment with half an address space.
  struct KillFirst {
    StubTree& stubs;
    bool armed = true;
    ~KillFirst() {
      if (armed) stubs.kill_all();
    }
  } kill_first{stubs};
  uint64_t total_pages = 0;
  for (size_t i = 0; i < plan.tasks.size(); i++) live[i].plan = &plan.tasks[i];
  {
    log::StepTimer st("seize stubs");
    each_task([&](size_t w, size_t i) {
      pool.pin(w, live[i].plan->hpid());
      in_context(strfmt("restore pid %d", live[i].plan->pid()), [&] { seize_stub(live[i]); });
    });
  }
  if (req.progress) {
    for (const auto& t : plan.tasks)
      total_pages += image::PageReader(src, std::to_string(t.pid())).pages();  // image names
    req.progress->start("restore", total_pages);
  }
  std::vector<MmRestoreStats> mst(pool.size());
  {
    log::StepTimer st("memory");
    std::mutex progress_mu;
    each_task([&](size_t w, size_t i) {
      cancel::check();
      LiveTask& lt = live[i];
      uint64_t before = mst[w].pages;
      in_context(strfmt("restore pid %d", lt.plan->pid()),
                 [&] { rebuild_process(lt, stubs, i, src, shmem, ghosts, &mst[w], req.lazy); });
      std::lock_guard<std::mutex> l(progress_mu);
      if (req.progress) req.progress->advance(mst[w].pages - before);
    });
  }
  if (req.progress) req.progress->finish();
  fault::point("restore-after-mm");
  {
    log::StepTimer st("threads, signals, credentials");
    each_task([&](size_t, size_t i) {
      in_context(strfmt("restore pid %d", live[i].plan->pid()), [&] {
        create_threads(live[i]);
        finish_process(live[i]);
      });
    });
  }
  for (const auto& m : mst) res.pages += m.pages;
  finish_namespaces(stubs.root_pid(), namespaces);
  // Every process has opened and mapped its deleted files: names go again.
  ghosts.unlink_all();
  fault::point("restore-before-resume");
  cancel::check();

  // A shell job restored in the foreground gets ckpt's terminal before it
  // runs: in the background, its first read of the terminal would stop it.
  ForegroundJob fg;
  if (!req.detach) {
    pid_t job = ttys.job_pgrp(static_cast<pid_t>(plan.tasks[0].entry.pgid()));
    for (const auto& t : plan.tasks)
      if (job > 0 && t.pid() == job) {
        fg.give(t.hpid());  // ckpt's view of the group's leader
        break;
      }
  }
  // Unlocked before the tree runs, so no send of it is refused; then TCP
  // connections leave repair mode (the window probe that goes out makes the
  // peers answer, and retransmit, at once).
  net_lock.lift();
  if (namespaces.net_opts.bridge_late) attach_netns(namespaces.net, namespaces.net_opts);
  files.before_resume();

  // Let the whole tree run at once.
  each_task([&](size_t, size_t i) {
    for (auto& t : live[i].threads) t.detach();
  });
  // Faults of the starting tree were served all along; the rest of its
  // memory is copied behind them from now on.
  if (req.lazy) req.lazy->start_fill();
  LOG_DEBUG("the tree runs");
  kill_first.armed = false;
  undo_ns.armed = false;
  stubs.release();
  if (cg) {
    res.cgroup_paths = cg->paths();
    cg->release();
  }
  prctl(PR_SET_CHILD_SUBREAPER, 0);
  res.total_us = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());

  if (!req.pidfile.empty()) {
    std::string s = std::to_string(res.root) + "\n";
    UniqueFd f = open_or_throw(req.pidfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    write_full(f.get(), s.data(), s.size(), req.pidfile);
  }
  if (req.on_running) req.on_running(res);
  // The empty table goes once the tree runs (its hooks' removal waits for
  // an RCU grace period).
  try {
    net_lock.unlock();
  } catch (const Error& e) {
    LOG_WARN("%s", e.what());
  }
  if (!req.detach) res.exit_status = fg.wait(res.root);
  return res;
}

}  // namespace ckpt
