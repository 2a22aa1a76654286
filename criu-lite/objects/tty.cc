// Terminals (see tty.h): the fd kind for ptys, /dev/tty and the shell's
// terminal, tty.img, the controlling terminals at restore and the
// foreground job.
//
// The kernel's termios of a pty pair that matter are the slave's: termios
// and window-size ioctls on the master act on the slave, so everything is
// read and set through the master. The kernel headers' termios2 (with the
// speeds) is used, hence <asm/termbits.h> and never glibc's <termios.h>.
#include "objects/tty.h"

#include <asm/termbits.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <vector>

#include "image/record_file.h"
#include "objects/fd_kind.h"
#include "objects/files.h"
#include "sys/error.h"
#include "sys/log.h"

namespace ckpt {

// ---- names and numbers ----------------------------------------------------

namespace {
constexpr unsigned kTtyMajor = 4;        // /dev/ttyN (virtual terminals), /dev/ttySN
constexpr unsigned kTtyAuxMajor = 5;     // /dev/tty, /dev/console, /dev/ptmx
constexpr unsigned kPtsMajor = 136;      // /dev/pts/N (every index fits its 20-bit minor)
constexpr unsigned kPtsMajorLast = 143;  // the range the kernel reserves for Unix98 slaves
}  // namespace

dev_t decode_tty_nr(int tty_nr) {
  // proc(5): "the minor device number is contained in the combination of
  // bits 31 to 20 and 7 to 0; the major device number is in bits 15 to 8".
  auto v = static_cast<unsigned>(tty_nr);
  return makedev((v >> 8) & 0xff, (v & 0xff) | ((v >> 12) & 0xfff00));
}

int pts_index(dev_t rdev) {
  return major(rdev) == kPtsMajor ? static_cast<int>(minor(rdev)) : -1;
}

bool is_tty_device(dev_t rdev) {
  unsigned maj = major(rdev);
  return maj == kTtyMajor || maj == kTtyAuxMajor || (maj >= kPtsMajor && maj <= kPtsMajorLast) ||
         maj == 166 /* ttyACM */ || maj == 188 /* ttyUSB */ ||
         maj == 204 /* low-density serial */ || maj == 229 /* hvc */;
}

std::string tty_name(dev_t rdev) {
  unsigned maj = major(rdev), min = minor(rdev);
  if (maj == kPtsMajor) return strfmt("/dev/pts/%u", min);
  if (maj == kTtyAuxMajor && min == 0) return "/dev/tty";
  if (maj == kTtyAuxMajor && min == 1) return "/dev/console";
  if (maj == kTtyAuxMajor && min == 2) return "/dev/ptmx";
  if (maj == kTtyMajor && min < 64) return strfmt("/dev/tty%u", min);
  if (maj == kTtyMajor && min < 256) return strfmt("/dev/ttyS%u", min - 64);
  return strfmt("tty %u:%u", maj, min);
}

int parse_tty_index(const proc::FdInfo& info) {
  for (const auto& [k, v] : info.extra)
    if (k == "tty-index") return static_cast<int>(parse_fdinfo_u64(k, v, 10));
  return -1;
}

// ---- termios, queues ---------------------------------------------------------

namespace {

bool is_ptmx(dev_t rdev) {
  return major(rdev) == kTtyAuxMajor && minor(rdev) == 2;
}
bool is_dev_tty(dev_t rdev) {
  return major(rdev) == kTtyAuxMajor && minor(rdev) == 0;
}

termios2 get_termios(int fd) {
  termios2 t{};
  if (ioctl(fd, TCGETS2, &t) != 0) throw_errno("get termios (TCGETS2)");
  return t;
}

void set_termios(int fd, const termios2& t) {
  // TCSETS2, not TCSETSW/TCSETSF: nothing may wait for output or be flushed.
  if (ioctl(fd, TCSETS2, &t) != 0) throw_errno("set termios (TCSETS2)");
}

img::Termios termios_to_img(const termios2& t) {
  img::Termios o;
  o.set_iflag(t.c_iflag);
  o.set_oflag(t.c_oflag);
  o.set_cflag(t.c_cflag);
  o.set_lflag(t.c_lflag);
  o.set_line(t.c_line);
  o.set_cc(std::string(reinterpret_cast<const char*>(t.c_cc), NCCS));
  o.set_ispeed(t.c_ispeed);
  o.set_ospeed(t.c_ospeed);
  return o;
}

termios2 termios_from_img(const img::Termios& o) {
  if (o.cc().size() != NCCS)
    throw Error(strfmt("%s: termios has %zu control characters, this kernel %d", kTtyImage,
                       o.cc().size(), NCCS));
  termios2 t{};
  t.c_iflag = o.iflag();
  t.c_oflag = o.oflag();
  t.c_cflag = o.cflag();
  t.c_lflag = o.lflag();
  t.c_line = static_cast<cc_t>(o.line());
  memcpy(t.c_cc, o.cc().data(), NCCS);
  t.c_ispeed = o.ispeed();
  t.c_ospeed = o.ospeed();
  return t;
}

int get_int_ioctl(int fd, unsigned long req, const char* what) {
  int v = 0;
  if (ioctl(fd, req, &v) != 0) throw_errno(what);
  return v;
}

// TIOCSTI hands one byte at a time to the line discipline of fd's side, at
// once (a write to the other side goes through a work queue and would be
// processed later, with whatever termios is set by then). Needs
// CAP_SYS_ADMIN for a terminal that is not ckpt's own.
void push_bytes(int fd, const std::string& bytes, const char* what) {
  for (char c : bytes)
    if (ioctl(fd, TIOCSTI, &c) != 0) throw_errno(strfmt("queue %s again (TIOCSTI)", what));
}

// Puts bytes into a pty pair's queues as if they had just arrived:
// master_in for the master to read (raw: the slave's output processing was
// done when it was written), slave_in for the slave to read, processed with
// canonical mode as saved (so lines are lines again) but no echo, no
// signals, no special characters and no input translation (it was
// translated when it arrived). Then the saved termios is set. ICANON is the
// same in both settings, so the kernel does not redraw the line boundaries.
void push_queues(int master, int slave, const termios2& saved, const std::string& master_in,
                 const std::string& slave_in) {
  if (!slave_in.empty()) {
    termios2 quiet = saved;
    quiet.c_iflag = 0;
    quiet.c_lflag &=
        ~static_cast<tcflag_t>(ECHO | ECHOE | ECHOK | ECHONL | ECHOCTL | ECHOPRT | ECHOKE | ISIG);
    // 0 is never special to n_tty (_POSIX_VDISABLE); VEOL and VEOL2 stay:
    // they end the lines that are queued.
    for (int c : {VINTR, VQUIT, VERASE, VKILL, VEOF, VSTART, VSTOP, VSUSP, VREPRINT, VDISCARD,
                  VWERASE, VLNEXT})
      quiet.c_cc[c] = 0;
    set_termios(master, quiet);
    push_bytes(slave, slave_in, "the slave's input");
  }
  push_bytes(master, master_in, "the master's input");
  set_termios(master, saved);
}

// Bytes queued in a pty pair, read out while the tree is frozen and put
// back at once, also when something fails halfway: the tree must find them
// again whether the dump goes on, fails or leaves it running.
class PtyQueues {
 public:
  PtyQueues(int master, int slave, const termios2& saved, bool packet)
      : master_(master), slave_(slave), saved_(saved), packet_(packet) {}
  ~PtyQueues() {
    if (!done_) try {
        put_back();
      } catch (const Error& e) {
        LOG_ERROR("pty queues not put back: %s", e.what());
      }
  }
  void read() {
    read_master();
    if (slave_ >= 0) read_slave();
  }
  void put_back() {
    done_ = true;
    push_queues(master_, slave_, saved_, master_in, slave_in);
  }
  std::string master_in, slave_in;

 private:
  static constexpr size_t kMax = 1 << 20;  // n_tty holds 4 KiB: more means a loop
  void read_master() {
    char buf[4096 + 1];
    for (;;) {
      // poll() waits for bytes still in the pty's work queue when nothing is
      // readable, so the last bytes written are seen too.
      pollfd p{master_, POLLIN, 0};
      int r = retry_eintr([&] { return poll(&p, 1, 0); });
      if (r < 0) throw_errno("poll the master");
      if (r == 0 || !(p.revents & POLLIN)) return;
      ssize_t n = retry_eintr([&] { return ::read(master_, buf, sizeof buf); });
      if (n < 0 && (errno == EAGAIN || errno == EIO)) return;
      if (n < 0) throw_errno("read the master's input");
      if (n == 0) return;
      // In packet mode every read starts with a status byte; one that is
      // not TIOCPKT_DATA comes alone (a flush or flow-control event).
      if (!packet_)
        master_in.append(buf, static_cast<size_t>(n));
      else if (buf[0] == TIOCPKT_DATA)
        master_in.append(buf + 1, static_cast<size_t>(n - 1));
      if (master_in.size() > kMax) throw Error("the master's input does not end");
    }
  }
  void read_slave() {
    // Non-canonical with VMIN = VTIME = 0: a read returns what is queued,
    // also a line not finished yet, and 0 when nothing is.
    termios2 raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    set_termios(master_, raw);
    char buf[4096];
    for (;;) {
      ssize_t n = retry_eintr([&] { return ::read(slave_, buf, sizeof buf); });
      if (n < 0 && errno == EAGAIN) return;
      if (n < 0) throw_errno("read the slave's input");
      if (n == 0) return;
      slave_in.append(buf, static_cast<size_t>(n));
      if (slave_in.size() > kMax) throw Error("the slave's input does not end");
    }
  }
  int master_, slave_;
  termios2 saved_;
  bool packet_;
  bool done_ = false;
};

// "/dev/pts/N" next to the devpts a master was opened from.
std::string slave_path_for(const std::string& master_path, uint32_t index) {
  if (master_path == "/dev/ptmx") return strfmt("/dev/pts/%u", index);
  return master_path.substr(0, master_path.rfind('/') + 1) + std::to_string(index);
}

uint32_t open_flags(const img::FileDesc& d) {
  return (d.flags() & ~static_cast<uint32_t>(O_CREAT | O_EXCL | O_TRUNC | O_CLOEXEC)) | O_NOCTTY;
}

// ---- the fd kind ----------------------------------------------------------------

class TtyKind : public FdKind {
 public:
  const char* name() const override { return "terminal"; }
  bool matches(const FdProbe& p) const override {
    return S_ISCHR(p.st.st_mode) && is_tty_device(p.st.st_rdev);
  }

  void dump(const FdDumpArgs& a, img::FileDesc* d) override {
    dev_t rdev = a.st.st_rdev;
    if (is_ptmx(rdev)) {
      uint32_t n = static_cast<uint32_t>(get_int_ioctl(a.local, TIOCGPTN, "TIOCGPTN"));
      // A second description cannot be made again: opening /dev/ptmx makes
      // a new pair, and a master has no path of its own.
      if (!masters_dumped_.insert(n).second)
        throw Error(strfmt("a second open file description of pty master %u is not supported", n));
      auto* t = d->mutable_tty();
      t->set_type(img::TtyFile::PTY_MASTER);
      t->set_index(n);
      t->set_path(a.link);
      return;
    }
    if (is_dev_tty(rdev)) {
      d->mutable_tty()->set_type(img::TtyFile::CTTY);
      d->mutable_tty()->set_path(a.link);
      return;
    }
    int n = pts_index(rdev);
    if (n >= 0 && tree_masters(a.ctx).count(static_cast<uint32_t>(n))) {
      auto* t = d->mutable_tty();
      t->set_type(img::TtyFile::PTY_SLAVE);
      t->set_index(static_cast<uint32_t>(n));
      t->set_path(a.link);
      return;
    }
    if (!a.ctx.opts.shell_job)
      throw Error(
          strfmt("a terminal outside the dumped tree (%s): dump with --shell-job if "
                 "it is a job started from a shell",
                 n >= 0 ? "its pty master is not in the tree" : "not a pty of the tree"));
    d->mutable_ext_tty()->set_path(a.link);
    d->mutable_ext_tty()->set_rdev(static_cast<uint32_t>(rdev));
    external_ = true;
  }

  void finish_dump(DumpContext& ctx,
                   const std::vector<std::pair<const img::FileDesc*, int>>& descs) override {
    struct PairFds {
      int master = -1, slave = -1, readable_slave = -1;
      std::string master_path, slave_path;
    };
    std::map<uint32_t, PairFds> pairs;
    for (auto& [d, local] : descs) {
      if (!d->has_tty() || d->tty().type() == img::TtyFile::CTTY) continue;
      PairFds& p = pairs[d->tty().index()];
      if (d->tty().type() == img::TtyFile::PTY_MASTER) {
        p.master = local;
        p.master_path = d->tty().path();
      } else {
        p.slave = local;
        p.slave_path = d->tty().path();
        if ((d->flags() & O_ACCMODE) != O_WRONLY) p.readable_slave = local;
      }
    }
    img::TtyState state;
    std::set<uint32_t> indexes;
    for (auto& [n, p] : pairs) {
      indexes.insert(n);
      in_context(strfmt("pty %u", n), [&] { *state.add_ptys() = save_pair(n, p); });
    }
    save_sessions(ctx, indexes, &state);
    image::save_message(*ctx.sink, kTtyImage, image::Kind::Tty, state);
  }

  // --- restore ---
  bool owns(const img::FileDesc& d) const override { return d.has_tty() || d.has_ext_tty(); }

  void load(const image::ImageSource& src) override {
    if (!src.exists(kTtyImage)) return;
    img::TtyState s;
    image::load_message(src, kTtyImage, image::Kind::Tty, s);
    for (const auto& p : s.ptys()) pairs_[p.index()].state = p;
  }

  UniqueFd open(const img::FileDesc& d, FdRestoreState& st) override {
    if (d.has_ext_tty()) return open_external(d);
    const img::TtyFile& t = d.tty();
    switch (t.type()) {
      case img::TtyFile::CTTY:
        return UniqueFd();  // the process's own terminal: opened in its stub
      case img::TtyFile::PTY_MASTER: {
        Pair& p = pair(t.index(), st);
        if (!p.master) throw Error(strfmt("pty master %u appears twice", t.index()));
        UniqueFd m = std::move(p.master);
        if (fcntl(m.get(), F_SETFL, open_flags(d)) != 0) throw_errno("set flags");
        return m;
      }
      case img::TtyFile::PTY_SLAVE:
        pair(t.index(), st);
        return open_or_throw(t.path(), static_cast<int>(open_flags(d)));
      default:
        throw Error(strfmt("unknown terminal type %d", static_cast<int>(t.type())));
    }
  }

  UniqueFd open_in_stub(const img::FileDesc& d, const FdRestoreState&) const override {
    // /dev/tty names the controlling terminal of whoever opens it.
    return open_or_throw(d.tty().path(), static_cast<int>(open_flags(d)));
  }

  // A terminal of the tree: /dev/tty is opened in the stub, a pty pair's
  // lock and exclusive mode are set there (after_install).
  bool runs_in_stub(const img::FileDesc& d, const std::vector<pid_t>&) const override {
    return d.has_tty();
  }

  // The lock and the slave's exclusive mode would refuse the slave to
  // ckpt, so they come last, once every slave description is open.
  void after_install(const img::FdTable& table, const FdRestoreState& st) const override {
    for (const auto& e : table.fds()) {
      const img::FileDesc& d = st.descs.at(e.desc_id());
      if (!d.has_tty() || d.tty().type() == img::TtyFile::CTTY) continue;
      auto it = pairs_.find(d.tty().index());
      if (it == pairs_.end()) continue;
      const img::PtyPair& ps = it->second.state;
      int fd = static_cast<int>(e.fd());
      if (d.tty().type() == img::TtyFile::PTY_MASTER) {
        int lock = ps.locked() ? 1 : 0;
        if (ioctl(fd, TIOCSPTLCK, &lock) != 0) throw_errno(strfmt("fd %d: TIOCSPTLCK", fd));
      } else if (ps.slave_excl() && ioctl(fd, TIOCEXCL) != 0) {
        throw_errno(strfmt("fd %d: TIOCEXCL", fd));
      }
    }
  }

 private:
  // Pty indexes whose master some process of the tree holds (fdinfo's
  // tty-index of every ptmx fd), read once.
  const std::set<uint32_t>& tree_masters(DumpContext& ctx) {
    if (masters_scanned_) return tree_masters_;
    for (auto& t : ctx.tasks)
      for (int fd : proc::list_fds(t->pid)) {
        std::string link;
        try {
          link = read_link(strfmt("/proc/%d/fd/%d", t->pid, fd));
        } catch (const Error&) {
          continue;
        }
        if (link.size() < 5 || link.compare(link.size() - 5, 5, "/ptmx") != 0) continue;
        int n = parse_tty_index(proc::read_fdinfo(t->pid, fd));
        if (n < 0)
          throw Error(strfmt("pid %d fd %d: fdinfo of a pty master has no tty-index", t->pid, fd));
        tree_masters_.insert(static_cast<uint32_t>(n));
      }
    masters_scanned_ = true;
    return tree_masters_;
  }

  img::PtyPair save_pair(uint32_t n, const auto& p) {
    if (p.master < 0) throw Error("its master is not in the tree");
    img::PtyPair out = save_pty_pair(n, p.master, p.slave, p.readable_slave);
    out.set_slave_path(p.slave_path.empty() ? slave_path_for(p.master_path, n) : p.slave_path);
    return out;
  }

  // Controlling terminals: every process's tty_nr, by session. Pids are
  // saved as the tree sees them (in its pid namespace, if it has one).
  void save_sessions(DumpContext& ctx, const std::set<uint32_t>& pairs, img::TtyState* state) {
    std::set<pid_t> pids;
    for (auto& t : ctx.tasks) pids.insert(t->pid);
    bool outside = external_;
    std::map<pid_t, img::SessionTty*> by_sid;
    for (auto& t : ctx.tasks) {
      const proc::Stat& s = t->stat;
      if (!pids.count(s.session) || !pids.count(s.pgrp)) outside = true;
      if (s.tty_nr == 0) continue;
      dev_t dev = decode_tty_nr(s.tty_nr);
      img::SessionTty*& st = by_sid[s.session];
      if (!st) {
        st = state->add_sessions();
        st->set_sid(static_cast<uint32_t>(ctx.vpid(s.session)));
        st->set_name(tty_name(dev));
        int n = pts_index(dev);
        if (n >= 0 && pairs.count(static_cast<uint32_t>(n))) {
          if (!pids.count(s.session))
            throw Error(
                strfmt("pid %d: its controlling terminal %s is a pty of the tree but its "
                       "session leader %d is outside the tree: not supported",
                       t->pid, st->name().c_str(), s.session));
          st->set_pty_index(static_cast<uint32_t>(n));
        } else {
          if (!ctx.opts.shell_job)
            throw Error(
                strfmt("pid %d: its controlling terminal %s is outside the dumped tree: "
                       "dump with --shell-job if it is a job started from a shell",
                       t->pid, st->name().c_str()));
          st->set_external(true);
          outside = true;
        }
        bool fg_in_tree = std::any_of(ctx.tasks.begin(), ctx.tasks.end(), [&](auto& o) {
          return o->stat.pgrp == s.tpgid && o->stat.session == s.session;
        });
        if (s.tpgid > 0 && fg_in_tree)
          st->set_fg_pgrp(static_cast<uint32_t>(ctx.vpid(s.tpgid)));
        else if (!st->external() && s.tpgid > 0)
          LOG_WARN("%s: foreground process group %d has no process in the tree: not restored",
                   st->name().c_str(), s.tpgid);
      }
      st->add_pids(static_cast<uint32_t>(ctx.vpid(t->pid)));
    }
    state->set_shell_job(outside);
  }

  struct Pair {
    img::PtyPair state;
    bool made = false;
    UniqueFd master;  // until its description is handed out
  };

  // Pair n made again with its number, termios, window size, modes and
  // queued bytes; the first description of the master is kept for open().
  Pair& pair(uint32_t n, FdRestoreState& st) {
    auto it = pairs_.find(n);
    if (it == pairs_.end()) throw Error(strfmt("pty %u is not in %s", n, kTtyImage));
    Pair& p = it->second;
    if (p.made) return p;
    const img::FileDesc* md = nullptr;
    bool slaves = false;
    for (const auto& [id, d] : st.descs) {
      if (!d.has_tty() || d.tty().index() != n) continue;
      if (d.tty().type() == img::TtyFile::PTY_MASTER) md = &d;
      if (d.tty().type() == img::TtyFile::PTY_SLAVE) slaves = true;
    }
    if (!md) throw Error(strfmt("pty %u: no description of its master", n));
    const img::PtyPair& ps = p.state;
    UniqueFd m = open_index(md->tty().path(), static_cast<int>(open_flags(*md)), n);
    int unlock = 0;
    if (ioctl(m.get(), TIOCSPTLCK, &unlock) != 0) throw_errno("unlock (TIOCSPTLCK)");
    // A slave fd to queue its input through; it stays open until every
    // description of the tree is, or the master would see a hangup.
    UniqueFd s;
    if (!ps.slave_input().empty() || (ps.slave_closed() && !slaves))
      s = open_or_throw(ps.slave_path(), O_RDWR | O_NOCTTY | O_NONBLOCK);
    restore_pty_pair(m.get(), s.get(), ps);
    if (s && slaves)
      st.helpers.push_back(std::move(s));
    else
      s.reset();  // closed again: the master sees the hangup it saw at dump
    p.master = std::move(m);
    p.made = true;
    return p;
  }

  // A new pty takes the lowest free index: ptys are opened (and kept) until
  // the one numbered n comes; if a higher one comes first, n is taken.
  static UniqueFd open_index(const std::string& ptmx, int flags, uint32_t n) {
    std::vector<UniqueFd> below;
    for (;;) {
      UniqueFd m = open_or_throw(ptmx, flags);
      auto got = static_cast<uint32_t>(get_int_ioctl(m.get(), TIOCGPTN, "TIOCGPTN"));
      if (got == n) return m;
      if (got > n)
        throw Error(
            strfmt("pty %u is in use on this devpts (%s gave %u): free it, or restore "
                   "where pty %u is free",
                   n, ptmx.c_str(), got, n));
      below.push_back(std::move(m));
    }
  }

  static UniqueFd open_external(const img::FileDesc& d) {
    if (!isatty(STDIN_FILENO))
      throw Error(
          strfmt("%s, the terminal of the shell job: ckpt's stdin is not a terminal to "
                 "connect it to",
                 d.ext_tty().path().c_str()));
    return open_or_throw("/proc/self/fd/0", static_cast<int>(open_flags(d)));
  }

  // dump
  std::set<uint32_t> masters_dumped_;
  std::set<uint32_t> tree_masters_;
  bool masters_scanned_ = false;
  bool external_ = false;  // an fd on the shell's terminal
  // restore
  std::map<uint32_t, Pair> pairs_;
};

// Changes the foreground group of the terminal fd. SIGTTOU is blocked: a
// process not in the foreground (ckpt once the job has the terminal) would
// otherwise be stopped by it.
void set_foreground_group(int fd, pid_t pgrp) {
  sigset_t ttou, old;
  sigemptyset(&ttou);
  sigaddset(&ttou, SIGTTOU);
  sigprocmask(SIG_BLOCK, &ttou, &old);
  int r = ioctl(fd, TIOCSPGRP, &pgrp);
  int err = errno;
  sigprocmask(SIG_SETMASK, &old, nullptr);
  if (r != 0) throw_errno(err, strfmt("make process group %d the terminal's foreground", pgrp));
}

}  // namespace

img::PtyPair save_pty_pair(uint32_t index, int master, int slave, int readable_slave) {
  img::PtyPair out;
  out.set_index(index);
  termios2 tio = get_termios(master);
  *out.mutable_termios() = termios_to_img(tio);
  winsize ws{};
  if (ioctl(master, TIOCGWINSZ, &ws) != 0) throw_errno("TIOCGWINSZ");
  auto* w = out.mutable_winsize();
  w->set_rows(ws.ws_row);
  w->set_cols(ws.ws_col);
  w->set_xpixel(ws.ws_xpixel);
  w->set_ypixel(ws.ws_ypixel);
  out.set_locked(get_int_ioctl(master, TIOCGPTLCK, "TIOCGPTLCK") != 0);
  out.set_packet(get_int_ioctl(master, TIOCGPKT, "TIOCGPKT") != 0);
  out.set_master_excl(get_int_ioctl(master, TIOCGEXCL, "TIOCGEXCL") != 0);
  if (slave >= 0) out.set_slave_excl(get_int_ioctl(slave, TIOCGEXCL, "TIOCGEXCL") != 0);
  pollfd pf{master, 0, 0};
  if (slave < 0 && poll(&pf, 1, 0) == 1 && (pf.revents & POLLHUP)) out.set_slave_closed(true);
  PtyQueues q(master, readable_slave, tio, out.packet());
  q.read();
  out.set_master_input(q.master_in);
  out.set_slave_input(q.slave_in);
  q.put_back();
  return out;
}

void restore_pty_pair(int master, int slave, const img::PtyPair& p) {
  push_queues(master, slave, termios_from_img(p.termios()), p.master_input(), p.slave_input());
  winsize ws{};
  ws.ws_row = static_cast<unsigned short>(p.winsize().rows());
  ws.ws_col = static_cast<unsigned short>(p.winsize().cols());
  ws.ws_xpixel = static_cast<unsigned short>(p.winsize().xpixel());
  ws.ws_ypixel = static_cast<unsigned short>(p.winsize().ypixel());
  if (ioctl(master, TIOCSWINSZ, &ws) != 0) throw_errno("TIOCSWINSZ");
  // Last: a mode change before it would queue status bytes for the master.
  int pkt = p.packet() ? 1 : 0;
  if (ioctl(master, TIOCPKT, &pkt) != 0) throw_errno("TIOCPKT");
  if (p.master_excl() && ioctl(master, TIOCEXCL) != 0) throw_errno("TIOCEXCL");
}

std::unique_ptr<FdKind> make_tty_kind() {
  return std::make_unique<TtyKind>();
}

// ---- controlling terminals at restore ------------------------------------------

TtyRestore::~TtyRestore() {
  if (slots_) munmap(slots_, slots_size_);
}

void TtyRestore::load(const image::ImageSource& src, bool shell_job) {
  if (src.exists(kTtyImage)) image::load_message(src, kTtyImage, image::Kind::Tty, state_);
  if (state_.shell_job() && !shell_job)
    throw Error(
        "the tree was dumped as a shell job (its session, a process group or a terminal is "
        "outside it): restore with --shell-job");
  for (const auto& s : state_.sessions())
    if (!s.external() && std::none_of(state_.ptys().begin(), state_.ptys().end(),
                                      [&](const auto& p) { return p.index() == s.pty_index(); }))
      throw Error(strfmt("%s: session %u has pty %u as terminal, which is not in the image",
                         kTtyImage, s.sid(), s.pty_index()));
  if (state_.sessions().empty()) return;
  // ckpt opens the terminals after the root stub is forked: the stubs
  // learn ckpt's fd numbers through shared memory.
  slots_size_ = static_cast<size_t>(state_.sessions_size()) * sizeof(int);
  void* p = mmap(nullptr, slots_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw_errno("map the terminal table");
  slots_ = static_cast<int*>(p);
  for (int i = 0; i < state_.sessions_size(); i++) slots_[i] = -1;
}

void TtyRestore::open_terminals(FileTable& files) {
  for (int i = 0; i < state_.sessions_size(); i++) {
    const img::SessionTty& s = state_.sessions(i);
    if (s.external()) {
      UniqueFd own(open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC));
      if (!own)
        LOG_WARN(
            "session %u had %s as controlling terminal; ckpt has none, so the restored "
            "processes have none",
            s.sid(), s.name().c_str());
      continue;
    }
    in_context(strfmt("session %u: terminal %s", s.sid(), s.name().c_str()), [&] {
      auto masters = files.open_early([&](const img::FileDesc& d) {
        return d.has_tty() && d.tty().type() == img::TtyFile::PTY_MASTER &&
               d.tty().index() == s.pty_index();
      });
      if (masters.empty())
        throw Error(strfmt("no description of the master of pty %u", s.pty_index()));
      // The slave through its master, whatever its path in the tree's
      // mount namespace.
      int fd = ioctl(masters.begin()->second, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
      if (fd < 0) throw_errno("open the slave (TIOCGPTPEER)");
      slots_[i] = fd;
      fds_[s.sid()] = UniqueFd(fd);
    });
  }
}

void TtyRestore::close_terminals() {
  fds_.clear();
  for (int i = 0; i < state_.sessions_size(); i++) slots_[i] = -1;
}

const img::SessionTty* TtyRestore::leader_session(pid_t pid) const {
  for (const auto& s : state_.sessions())
    if (s.sid() == static_cast<uint32_t>(pid) &&
        std::find(s.pids().begin(), s.pids().end(), static_cast<uint32_t>(pid)) != s.pids().end())
      return &s;
  return nullptr;
}

UniqueFd TtyRestore::terminal(const img::SessionTty& s, int holder_pidfd) const {
  int fd = -1;
  for (int i = 0; i < state_.sessions_size(); i++)
    if (&state_.sessions(i) == &s) fd = slots_[i];
  if (fd < 0) throw Error(strfmt("session %u: its terminal was not opened", s.sid()));
  UniqueFd t(static_cast<int>(syscall(SYS_pidfd_getfd, holder_pidfd, fd, 0)));
  if (!t) throw_errno(strfmt("take %s from ckpt (pidfd_getfd)", s.name().c_str()));
  return t;
}

bool TtyRestore::keeps_session(pid_t pid) const {
  const img::SessionTty* s = leader_session(pid);
  return s && s->external();
}

void TtyRestore::take_ctty(pid_t pid, int holder_pidfd) const {
  const img::SessionTty* s = leader_session(pid);
  if (!s || s->external()) return;
  if (ioctl(terminal(*s, holder_pidfd).get(), TIOCSCTTY, 0) != 0)
    throw_errno(strfmt("make %s its controlling terminal (TIOCSCTTY)", s->name().c_str()));
}

void TtyRestore::drop_ctty(pid_t pid) const {
  for (const auto& s : state_.sessions())
    if (std::find(s.pids().begin(), s.pids().end(), static_cast<uint32_t>(pid)) != s.pids().end())
      return;
  // A session leader has none unless take_ctty gave it one; TIOCNOTTY in a
  // leader would hang up its session.
  if (getsid(0) == getpid()) return;
  UniqueFd t(open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!t) return;  // none inherited
  if (ioctl(t.get(), TIOCNOTTY) != 0) throw_errno("give up the inherited terminal (TIOCNOTTY)");
}

void TtyRestore::set_foreground(pid_t pid, int holder_pidfd) const {
  const img::SessionTty* s = leader_session(pid);
  if (!s || s->external() || s->fg_pgrp() == 0) return;
  set_foreground_group(terminal(*s, holder_pidfd).get(), static_cast<pid_t>(s->fg_pgrp()));
}

pid_t TtyRestore::job_pgrp(pid_t root_pgid) const {
  for (const auto& s : state_.sessions())
    if (s.external()) return s.fg_pgrp() ? static_cast<pid_t>(s.fg_pgrp()) : root_pgid;
  return 0;
}

// ---- the foreground job -----------------------------------------------------------

void ForegroundJob::give(pid_t pgrp) {
  if (pgrp <= 0) return;
  UniqueFd t(open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!t) {
    LOG_INFO("ckpt has no controlling terminal: the job stays in the background");
    return;
  }
  pid_t fg = tcgetpgrp(t.get());
  if (fg != getpgrp()) {
    LOG_INFO("ckpt is not in the foreground of its terminal: the job stays in the background");
    return;
  }
  set_foreground_group(t.get(), pgrp);
  LOG_DEBUG("process group %d has the terminal", pgrp);
  tty_ = std::move(t);
  job_ = pgrp;
  own_ = getpgrp();
}

ForegroundJob::~ForegroundJob() {
  if (!job_) return;
  try {
    set_foreground_group(tty_.get(), own_);
  } catch (const Error& e) {
    LOG_WARN("%s", e.what());
  }
}

int ForegroundJob::wait(pid_t root) {
  for (;;) {
    int st = 0;
    pid_t r = waitpid(root, &st, job_ ? WUNTRACED : 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw_errno(strfmt("wait for pid %d", root));
    if (!WIFSTOPPED(st)) {
      if (job_) set_foreground_group(tty_.get(), own_);
      job_ = 0;
      return st;
    }
    // The job stopped (^Z): as a shell would, ckpt takes the terminal back,
    // and stops too so that its own shell sees a stopped job. Continued in
    // the foreground, it hands the terminal to the job again.
    set_foreground_group(tty_.get(), own_);
    kill(getpid(), SIGSTOP);
    if (tcgetpgrp(tty_.get()) == own_) set_foreground_group(tty_.get(), job_);
    kill(-job_, SIGCONT);
  }
}

}  // namespace ckpt
