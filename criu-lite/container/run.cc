#include "container/run.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "container/net.h"
#include "container/state.h"
#include "sys/cgroup.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"
#include "sys/uapi.h"

namespace ckpt::container {

namespace {

// ---- the container's side, between clone and exec ----------------------------
// It runs in a copy of this (single-threaded) process; errors are written to
// err_fd as one line and it exits 127. Nothing here throws.

struct ChildArgs {
  const RunRequest* req;
  int sync_fd;                     // read end: one byte once ckpt attached the cgroup and network
  int err_fd;                      // write end, close-on-exec: EOF at the parent means exec worked
  int stdin_fd = -1, out_fd = -1;  // detached: /dev/null and the log
  const char* log_path = nullptr;
};

[[noreturn]] void child_fail(int err_fd, const std::string& what, int err) {
  std::string msg = what + ": " + strerror(err);
  (void)!write(err_fd, msg.data(), msg.size());
  _exit(127);
}

#define CHILD_TRY(expr, what)                             \
  do {                                                    \
    if ((expr) != 0) child_fail(a.err_fd, (what), errno); \
  } while (0)

// A /dev for the rootfs: a tmpfs with the usual character devices, a
// private devpts and /dev/shm. The host's /dev is not bound in: the
// container must not see the host's terminals or disks.
void make_dev(const ChildArgs& a) {
  mkdir("dev", 0755);
  CHILD_TRY(mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"),
            "mount tmpfs on <rootfs>/dev");
  struct Node {
    const char* name;
    unsigned major, minor;
  };
  for (const Node& n : {Node{"null", 1, 3}, Node{"zero", 1, 5}, Node{"full", 1, 7},
                        Node{"random", 1, 8}, Node{"urandom", 1, 9}, Node{"tty", 5, 0}}) {
    std::string path = std::string("dev/") + n.name;
    CHILD_TRY(mknod(path.c_str(), S_IFCHR | 0666, makedev(n.major, n.minor)), "mknod " + path);
    chmod(path.c_str(), 0666);  // the umask must not narrow it
  }
  CHILD_TRY(mkdir("dev/pts", 0755), "mkdir <rootfs>/dev/pts");
  CHILD_TRY(mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                  "newinstance,ptmxmode=0666,mode=620"),
            "mount devpts");
  CHILD_TRY(symlink("pts/ptmx", "dev/ptmx"), "symlink /dev/ptmx");
  CHILD_TRY(mkdir("dev/shm", 01777), "mkdir <rootfs>/dev/shm");
  CHILD_TRY(mount("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k"),
            "mount /dev/shm");
  for (auto [link, target] :
       {std::pair{"dev/fd", "/proc/self/fd"}, std::pair{"dev/stdin", "/proc/self/fd/0"},
        std::pair{"dev/stdout", "/proc/self/fd/1"}, std::pair{"dev/stderr", "/proc/self/fd/2"}})
    CHILD_TRY(symlink(target, link), std::string("symlink /") + link);
}

[[noreturn]] void child_main(const ChildArgs& a) {
  const RunRequest& req = *a.req;
  char go = 0;
  ssize_t n;
  do n = read(a.sync_fd, &go, 1);
  while (n < 0 && errno == EINTR);
  if (n != 1) _exit(1);  // ckpt gave up: it removes everything itself
  close(a.sync_fd);

  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGPIPE}) signal(s, SIG_DFL);
  // Its own session: the container is a tree of its own (and dumpable
  // without --shell-job); the terminal's signals reach it through ckpt.
  CHILD_TRY(setsid() < 0 ? -1 : 0, "setsid");

  // Nothing mounted in here may reach the host's namespace.
  CHILD_TRY(mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), "make / private");
  if (!req.hostname.empty())
    CHILD_TRY(sethostname(req.hostname.data(), req.hostname.size()), "sethostname");

  if (!req.rootfs.empty()) {
    const std::string& r = req.rootfs;
    // pivot_root wants the new root to be a mount point.
    CHILD_TRY(mount(r.c_str(), r.c_str(), nullptr, MS_BIND | MS_REC, nullptr), "bind mount " + r);
    CHILD_TRY(chdir(r.c_str()), "chdir " + r);
    make_dev(a);
    mkdir("proc", 0555);
    // pivot_root(".", ".") stacks the old root on top of the new one;
    // detaching it leaves the rootfs as / with nothing of the host above.
    CHILD_TRY(static_cast<int>(syscall(SYS_pivot_root, ".", ".")), "pivot_root " + r);
    CHILD_TRY(umount2(".", MNT_DETACH), "detach the old root");
    CHILD_TRY(chdir("/"), "chdir /");
  }
  // A /proc of the new pid namespace, so CMD sees itself as pid 1.
  CHILD_TRY(mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr),
            "mount /proc");

  int stdin_fd = a.stdin_fd, out_fd = a.out_fd;
  if (out_fd >= 0 && req.rootfs.empty()) {
    // Opened again from in here: descriptions opened by ckpt go through the
    // mounts of ckpt's namespace, which may be gone by the time the
    // container is checkpointed (e.g. ip netns exec's), and then no path
    // leads to them; these are reached through the container's own mounts.
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = open(a.log_path, O_WRONLY | O_APPEND | O_CLOEXEC);
    CHILD_TRY(in < 0 || out < 0 ? -1 : 0, "reopen stdio");
    stdin_fd = in;
    out_fd = out;
  }
  if (out_fd >= 0) {
    CHILD_TRY(dup2(stdin_fd, 0) < 0 ? -1 : 0, "stdin");
    CHILD_TRY(dup2(out_fd, 1) < 0 ? -1 : 0, "stdout");
    CHILD_TRY(dup2(out_fd, 2) < 0 ? -1 : 0, "stderr");
  }
  // CMD inherits stdio only (err_fd is already close-on-exec).
  syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);

  std::vector<char*> argv;
  for (const auto& s : req.argv) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  execvp(argv[0], argv.data());
  child_fail(a.err_fd, "exec " + req.argv[0], errno);
}

#undef CHILD_TRY

// ---- owners for what a failed start must undo --------------------------------

// The container's init until it runs: killed and reaped unless released.
class InitGuard {
 public:
  explicit InitGuard(pid_t pid) : pid_(pid) {}
  ~InitGuard() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  InitGuard(const InitGuard&) = delete;
  InitGuard& operator=(const InitGuard&) = delete;
  void release() { pid_ = -1; }

 private:
  pid_t pid_;
};

// Runs a cleanup unless released; the cleanup must not throw.
template <class F>
class Undo {
 public:
  explicit Undo(F f) : f_(std::move(f)) {}
  ~Undo() {
    if (armed_) f_();
  }
  Undo(const Undo&) = delete;
  Undo& operator=(const Undo&) = delete;
  void release() { armed_ = false; }

 private:
  F f_;
  bool armed_ = true;
};

// Blocks signals for the lifetime of the object.
class SigBlock {
 public:
  explicit SigBlock(const sigset_t& set) { sigprocmask(SIG_BLOCK, &set, &old_); }
  ~SigBlock() { sigprocmask(SIG_SETMASK, &old_, nullptr); }
  SigBlock(const SigBlock&) = delete;
  SigBlock& operator=(const SigBlock&) = delete;

 private:
  sigset_t old_;
};

std::string own_netns() {
  return read_link("/proc/thread-self/ns/net");
}

int wait_foreground(pid_t pid, const sigset_t& set) {
  for (;;) {
    siginfo_t si;
    int sig = sigwaitinfo(&set, &si);
    if (sig < 0) {
      if (errno == EINTR) continue;
      throw_errno("sigwaitinfo");
    }
    if (sig != SIGCHLD) {
      LOG_DEBUG("forwarding signal %d to the container's init %d", sig, pid);
      ::kill(pid, sig);
      continue;
    }
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) throw_errno(strfmt("waitpid %d", pid));
  }
}

void destroy_cgroup_of(const img::ContainerState& s) {
  std::vector<std::string> paths(s.cgroup_paths().begin(), s.cgroup_paths().end());
  cgroup::Cgroup cg = cgroup::Cgroup::open_existing(paths);
  cg.destroy(std::chrono::seconds(10), true);
}

void remove_veth_of(const img::ContainerState& s) {
  const img::ContainerNet& net = s.net();
  if (net.mode() != "bridge" || net.host_ifname().empty()) return;
  if (net.host_netns() != own_netns()) {
    // The pair goes away with the container's namespace anyway; deleting a
    // link of that name here could hit somebody else's.
    LOG_WARN("container %s: its host veth %s is in %s, not here: left to the kernel",
             s.name().c_str(), net.host_ifname().c_str(), net.host_netns().c_str());
    return;
  }
  remove_host_veth(net.host_ifname());
}

}  // namespace

int run_container(const RunRequest& req) {
  check_name(req.name);
  if (req.argv.empty()) throw UsageError("no command to run (ckpt run --name NAME -- CMD ARGS...)");
  if (!req.rootfs.empty()) {
    struct stat st;
    if (stat(req.rootfs.c_str(), &st) != 0) throw_errno("rootfs " + req.rootfs);
    if (!S_ISDIR(st.st_mode)) throw Error("rootfs " + req.rootfs + " is not a directory");
  }
  if (req.hostname.size() > 64) throw UsageError("--hostname: at most 64 bytes");
  img::ContainerNet net = parse_net(req.net);
  if (auto old = try_load_state(req.name))
    throw Error("container " + req.name + " exists already (" + status_name(live_status(*old)) +
                "; 'ckpt rm " + req.name + "' first)");
  if (net.mode() == "bridge") {
    net.set_host_ifname(host_ifname_for(req.name));
    net.set_container_ifname("eth0");
    net.set_host_netns(own_netns());
    if (link_exists(net.host_ifname()))
      throw Error("container " + req.name + ": link " + net.host_ifname() + " exists already");
  }

  return in_context("container " + req.name, [&]() -> int {
    cgroup::Cgroup cg = cgroup::Cgroup::create(req.name);  // removed if we fail
    if (req.memory) {
      cgroup::Limits l;
      l.memory_max = *req.memory;
      cg.set_limits(l);
    }

    UniqueFd devnull, log_fd;
    std::string log_path;
    if (req.detach) {
      log_path = req.log_file.empty() ? default_log_path(req.name) : req.log_file;
      devnull = open_or_throw("/dev/null", O_RDONLY);
      if (req.log_file.empty()) mkdir(run_dir().c_str(), 0700);
      log_fd = open_or_throw(log_path, O_WRONLY | O_CREAT | O_APPEND, 0640);
    }
    int sync_p[2], err_p[2];
    if (pipe2(sync_p, O_CLOEXEC) != 0) throw_errno("pipe");
    UniqueFd sync_r(sync_p[0]), sync_w(sync_p[1]);
    if (pipe2(err_p, O_CLOEXEC) != 0) throw_errno("pipe");
    UniqueFd err_r(err_p[0]), err_w(err_p[1]);

    // Signals to forward (and SIGCHLD, to wait with sigwaitinfo) stay
    // blocked from before the clone until we return.
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD}) sigaddset(&set, s);
    signal(SIGCHLD, SIG_DFL);  // never SIG_IGN: that would reap the init for us
    SigBlock blocked(set);

    uint64_t flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC;
    if (net.mode() != "host") flags |= CLONE_NEWNET;
    ckpt_clone_args args{};
    args.flags = flags;
    args.exit_signal = SIGCHLD;
    pid_t pid = static_cast<pid_t>(syscall(SYS_clone3, &args, sizeof args));
    if (pid < 0) throw_errno("clone3 with new namespaces");
    if (pid == 0) {
      ChildArgs a{&req, sync_r.get(), err_w.get(), devnull.get(), log_fd.get(), log_path.c_str()};
      child_main(a);
    }
    InitGuard init(pid);
    sync_r.reset();
    err_w.reset();
    LOG_DEBUG("container %s: init is pid %d", req.name.c_str(), pid);

    cg.attach(pid);

    Undo veth([&] {
      try {
        if (net.mode() == "bridge") remove_host_veth(net.host_ifname());
      } catch (const Error& e) {
        LOG_WARN("%s", e.what());
      }
    });
    if (net.mode() == "bridge") {
      UniqueFd ns = open_or_throw(strfmt("/proc/%d/ns/net", pid), O_RDONLY);
      attach_veth_host_end(&net, ns.get());
      configure_container_net(net, ns.get());
    }

    img::ContainerState st;
    st.set_name(req.name);
    st.set_init_pid(pid);
    st.set_init_starttime(starttime_of(pid));
    st.set_created(static_cast<int64_t>(time(nullptr)));
    for (const auto& s : req.argv) st.add_argv(s);
    st.set_rootfs(req.rootfs);
    st.set_hostname(req.hostname);
    *st.mutable_net() = net;
    if (req.memory) st.set_memory_limit(*req.memory);
    for (const auto& p : cg.paths()) st.add_cgroup_paths(p);
    st.set_status("running");
    st.set_log_path(log_path);
    create_state(st);
    Undo state([&] {
      try {
        remove_state(req.name);
      } catch (const Error& e) {
        LOG_WARN("%s", e.what());
      }
    });

    if (write(sync_w.get(), "g", 1) != 1) throw_errno("start the container's init");
    sync_w.reset();
    std::string err;
    char buf[512];
    for (;;) {
      ssize_t n = read(err_r.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      err.append(buf, static_cast<size_t>(n));
    }
    if (!err.empty()) throw Error(err);

    // CMD runs: from here on the container outlives any error of ours.
    state.release();
    veth.release();
    cg.release();
    init.release();
    if (req.on_started) req.on_started(st);
    if (req.detach) return 0;

    int status = wait_foreground(pid, set);
    if (req.remove_on_exit) {
      remove_container(req.name, false);
    } else {
      st.set_status("exited");
      st.set_exit_status(status);
      save_state(st);
    }
    return status;
  });
}

void kill_container(const std::string& name, int sig) {
  img::ContainerState s = load_state(name);
  if (!init_alive(s)) throw Error("container " + name + " is not running");
  if (::kill(s.init_pid(), sig) != 0)
    throw_errno(strfmt("container %s: kill pid %d", name.c_str(), s.init_pid()));
}

void remove_container(const std::string& name, bool force) {
  img::ContainerState s = load_state(name);
  in_context("container " + name, [&] {
    if (init_alive(s)) {
      if (!force)
        throw Error("it is running ('ckpt kill " + name + "' first, or 'ckpt rm -f " + name + "')");
      // Killing the init ends the whole pid namespace; the cgroup's
      // processes are killed too in case some escaped into it otherwise.
      std::vector<std::string> paths(s.cgroup_paths().begin(), s.cgroup_paths().end());
      cgroup::Cgroup::open_existing(paths).kill(SIGKILL);
      ::kill(s.init_pid(), SIGKILL);
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (init_alive(s)) {
        if (std::chrono::steady_clock::now() > deadline)
          throw Error(strfmt("its init %d does not die", s.init_pid()));
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    destroy_cgroup_of(s);
    remove_veth_of(s);
    if (!s.log_path().empty() && s.log_path() == default_log_path(name))
      if (unlink(s.log_path().c_str()) != 0 && errno != ENOENT)
        throw_errno("remove " + s.log_path());
    remove_state(name);
  });
}

void prepare_restore(const std::string& name) {
  check_name(name);
  std::optional<img::ContainerState> s = try_load_state(name);
  if (!s) {
    // No container of that name here: a cgroup of the name with nothing in
    // it was left by a receive killed after making it ahead of its restore.
    in_context("container " + name, [&] { cgroup::Cgroup::remove_leftover(name); });
    return;
  }
  in_context("container " + name, [&] {
    if (init_alive(*s))
      throw Error("it is running ('ckpt rm -f " + name + "' first, or restore under another name)");
    destroy_cgroup_of(*s);
    remove_veth_of(*s);
    remove_state(name);
  });
}

void record_restored(img::ContainerState s, pid_t init,
                     const std::vector<std::string>& cgroup_paths, const std::string& bridge,
                     const std::string& host_ifname) {
  s.set_init_pid(init);
  s.set_init_starttime(starttime_of(init));
  s.set_created(static_cast<int64_t>(time(nullptr)));
  s.clear_cgroup_paths();
  for (const auto& p : cgroup_paths) s.add_cgroup_paths(p);
  s.set_status("running");
  s.set_exit_status(0);
  img::ContainerNet* net = s.mutable_net();
  if (net->mode() == "bridge") {
    if (!bridge.empty()) net->set_bridge(bridge);
    if (!host_ifname.empty()) net->set_host_ifname(host_ifname);
    net->set_host_netns(own_netns());
  }
  create_state(s);
}

}  // namespace ckpt::container
