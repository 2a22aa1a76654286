#include "job/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "dump/dump.h"
#include "job/checkpoint_dir.h"
#include "objects/dirty_tracking.h"
#include "restore/restore.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"

namespace ckpt::job {

namespace {

using Clock = std::chrono::steady_clock;

// Signals passed on to the job as they come.
constexpr int kForwarded[] = {SIGINT,  SIGHUP,   SIGQUIT, SIGUSR1, SIGUSR2,
                              SIGALRM, SIGWINCH, SIGCONT, SIGTERM};

std::string human(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  return u == 0 ? strfmt("%llu B", static_cast<unsigned long long>(b))
                : strfmt("%.1f %s", v, units[u]);
}

// What CMD may keep as stdout/stderr: something a checkpoint can hold and a
// restore can open again (a regular file, /dev/null). A terminal or a pipe
// to the outside cannot be checkpointed.
bool checkpointable_stdio(int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) return false;
  if (S_ISREG(st.st_mode)) return true;
  return S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3);  // /dev/null
}

class Supervisor {
 public:
  explicit Supervisor(const JobOptions& o) : o_(o), cd_(o.dir, true) {}
  int run();

 private:
  void note(const std::string& s) const {
    if (o_.note) o_.note(s);
  }
  bool is_checkpoint_signal(int sig) const {
    for (int s : o_.signals)
      if (s == sig) return true;
    return false;
  }
  UniqueFd block_signals();
  bool try_restore();
  pid_t start_cmd();
  bool checkpoint(bool stop);
  bool dump_into(CheckpointDir::Pending& p, bool stop, bool incremental, DumpResult* r);
  void reap_root_after_kill();
  int finish(int wait_status);

  const JobOptions& o_;
  CheckpointDir cd_;
  DirtyTrackers trackers_;
  pid_t root_ = 0;
  std::string last_;  // the newest checkpoint published: the next one's parent
};

UniqueFd Supervisor::block_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kForwarded) sigaddset(&set, s);
  for (int s : o_.signals) sigaddset(&set, s);
  sigaddset(&set, SIGCHLD);
  // Blocked, they wait in the signalfd: a signal that comes during a
  // checkpoint neither interrupts it nor gets lost.
  if (sigprocmask(SIG_BLOCK, &set, nullptr) < 0) throw_errno("sigprocmask");
  int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) throw_errno("signalfd");
  return UniqueFd(fd);
}

bool Supervisor::try_restore() {
  std::vector<std::string> candidates = cd_.restorable();
  std::string first_error;
  for (const auto& name : candidates) {
    RestoreRequest rq;
    rq.dir = cd_.path(name);
    rq.detach = true;  // returns once the tree runs; its root stays our child
    try {
      RestoreResult r = restore_tree(rq);
      root_ = r.root;
      last_ = name;
      note(strfmt("resumed from checkpoint %s: %u processes, %llu pages in %.3f s; root pid %d",
                  name.c_str(), r.tasks, static_cast<unsigned long long>(r.pages),
                  static_cast<double>(r.total_us) / 1e6, r.root));
      return true;
    } catch (const Error& e) {
      note(strfmt("cannot resume from checkpoint %s: %s", name.c_str(), e.what()));
      if (first_error.empty()) first_error = name + ": " + e.what();
    }
  }
  // Starting afresh would silently throw away the job's progress.
  if (!candidates.empty())
    throw Error("no checkpoint in " + o_.dir + " could be restored (" + first_error + ")");
  return false;
}

pid_t Supervisor::start_cmd() {
  int out_fd = -1;
  if (!checkpointable_stdio(1) || !checkpointable_stdio(2)) {
    std::string out = cd_.path("output.log");
    out_fd = open(out.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (out_fd < 0) throw_errno("open " + out);
    note("the job's stdout/stderr go to " + out + " (a terminal or a pipe cannot be checkpointed)");
  }
  UniqueFd out_owner(out_fd);
  int err[2];
  if (pipe2(err, O_CLOEXEC) < 0) throw_errno("pipe2");
  UniqueFd err_r(err[0]), err_w(err[1]);
  std::vector<char*> argv;
  for (const auto& a : o_.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  pid_t pid = fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    // Only async-signal-safe calls from here to exec.
    setsid();  // its own session and group: the job is a whole tree to dump
    for (int s : o_.signals) signal(s, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    int nul = open("/dev/null", O_RDWR);
    if (nul >= 0) dup2(nul, 0);
    if (out_fd >= 0) {
      if (!checkpointable_stdio(1)) dup2(out_fd, 1);
      if (!checkpointable_stdio(2)) dup2(out_fd, 2);
    }
    syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);
    execvp(argv[0], argv.data());
    int e = errno;
    if (write(err_w.get(), &e, sizeof e) < 0) _exit(127);
    _exit(127);
  }
  err_w.reset();
  int e = 0;
  ssize_t n = retry_eintr([&] { return read(err_r.get(), &e, sizeof e); });
  if (n == static_cast<ssize_t>(sizeof e)) {
    waitpid(pid, nullptr, 0);
    throw Error("cannot run " + o_.argv[0], e);
  }
  return pid;
}

bool Supervisor::dump_into(CheckpointDir::Pending& p, bool stop, bool incremental, DumpResult* r) {
  DumpRequest req;
  req.pid = root_;
  req.dir = cd_.path(p.partial);
  req.opts.leave_running = !stop;
  req.opts.zstd_level = o_.zstd_level;
  if (incremental) req.parent_dir = "../" + last_;
  // Tracking runs from the first checkpoint on, so the next one can use it.
  if (o_.incremental) req.trackers = &trackers_;
  try {
    *r = dump_tree(req);
    return true;
  } catch (const Error& e) {
    cd_.abandon(p);
    note(strfmt("%s checkpoint failed: %s", incremental ? "incremental" : "full", e.what()));
    return false;
  }
}

bool Supervisor::checkpoint(bool stop) {
  auto t0 = Clock::now();
  bool incremental = o_.incremental && !last_.empty() && cd_.depth(last_) + 1 < o_.full_every;
  auto p = cd_.begin();
  DumpResult r;
  bool ok = dump_into(p, stop, incremental, &r);
  if (!ok && incremental) {
    // A parent that cannot serve (damaged since?) must not cost the job its
    // checkpoint.
    incremental = false;
    p = cd_.begin();
    ok = dump_into(p, stop, false, &r);
  }
  if (!ok) return false;
  try {
    cd_.publish(p);
  } catch (const Error& e) {
    trackers_.clear();  // they now describe a checkpoint that is not published
    note(strfmt("checkpoint %s could not be published: %s", p.name.c_str(), e.what()));
    return false;
  }
  std::string parent = incremental ? last_ : "";
  last_ = p.name;
  std::vector<std::string> removed;
  try {
    removed = cd_.prune(o_.keep);
  } catch (const Error& e) {
    note(strfmt("removing old checkpoints: %s", e.what()));
  }
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::string line =
      strfmt("checkpoint %s (%s): %llu pages stored (%s)", p.name.c_str(),
             parent.empty() ? "full" : ("incremental on " + parent).c_str(),
             static_cast<unsigned long long>(r.stats.pages), human(r.stats.page_bytes).c_str());
  if (!parent.empty())
    line += strfmt(", %llu unchanged", static_cast<unsigned long long>(r.stats.parent_pages));
  line += strfmt(", frozen %.1f ms, %.3f s", static_cast<double>(r.frozen_us) / 1e3, secs);
  for (size_t i = 0; i < removed.size(); i++) line += (i ? " " : "; removed ") + removed[i];
  note(line);
  return true;
}

void Supervisor::reap_root_after_kill() {
  // Reaped now, its pid is free at once for the restore of the next run.
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (Clock::now() < deadline) {
    int st;
    pid_t r = waitpid(root_, &st, WNOHANG);
    if (r == root_ || (r < 0 && errno != EINTR)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

int Supervisor::finish(int st) {
  int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  if (WIFSIGNALED(st))
    note(strfmt("the job was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st))));
  else
    note(strfmt("the job exited with status %d", code));
  if (code == 0) {
    // The checkpoints describe a run that is over: a rerun starts afresh.
    cd_.remove_all();
  } else if (!last_.empty()) {
    note("checkpoints kept in " + o_.dir + ": running the job again resumes from " + last_);
  }
  return code;
}

int Supervisor::run() {
  UniqueFd sfd = block_signals();
  cd_.remove_leftovers();
  if (!try_restore()) {
    root_ = start_cmd();
    note(strfmt("started %s as pid %d", o_.argv[0].c_str(), root_));
  }
  int pfd = static_cast<int>(syscall(SYS_pidfd_open, root_, 0));
  if (pfd < 0) throw_errno(strfmt("pidfd_open %d", root_));
  UniqueFd pidfd(pfd);
  UniqueFd tfd;
  // The interval runs from the end of the last checkpoint: on slow storage
  // the job must not spend all its time frozen.
  auto arm_timer = [&] {
    itimerspec its{};
    its.it_value.tv_sec = o_.interval_s;
    if (timerfd_settime(tfd.get(), 0, &its, nullptr) < 0) throw_errno("timerfd_settime");
  };
  if (o_.interval_s > 0) {
    tfd.reset(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!tfd) throw_errno("timerfd_create");
    arm_timer();
  }
  for (;;) {
    pollfd fds[3] = {{sfd.get(), POLLIN, 0}, {pidfd.get(), POLLIN, 0}, {tfd.get(), POLLIN, 0}};
    int n = poll(fds, tfd ? 3 : 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll");
    }
    if (fds[1].revents) {
      int st = 0;
      while (waitpid(root_, &st, 0) < 0 && errno == EINTR) {
      }
      return finish(st);
    }
    if (fds[0].revents) {
      signalfd_siginfo si;
      while (read(sfd.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        int sig = static_cast<int>(si.ssi_signo);
        if (is_checkpoint_signal(sig)) {
          note(strfmt("got signal %d (%s): checkpointing the job and stopping it", sig,
                      strsignal(sig)));
          if (checkpoint(true)) {
            reap_root_after_kill();
            return kExitCheckpointed;
          }
          note("the job goes on running");
          continue;
        }
        if (sig == SIGCHLD) continue;
        pid_t pg = getpgid(root_);
        kill(pg == root_ ? -root_ : root_, sig);
      }
    }
    if (tfd && fds[2].revents) {
      uint64_t ticks;
      if (read(tfd.get(), &ticks, sizeof ticks) == static_cast<ssize_t>(sizeof ticks)) {
        checkpoint(false);
        arm_timer();
      }
    }
  }
}

}  // namespace

int run_job(const JobOptions& opts) {
  if (opts.argv.empty()) throw UsageError("job run: no command given after --");
  if (opts.signals.empty()) throw UsageError("job run: no checkpoint signal");
  if (opts.keep < 1) throw UsageError("job run: --keep must be at least 1");
  Supervisor s(opts);
  return s.run();
}

}  // namespace ckpt::job
