// Terminals: pty pairs the tree opened (/dev/ptmx and /dev/pts/N), /dev/tty,
// the terminal of the shell a job was started from (--shell-job), and the
// controlling terminal and foreground process group of each session.
//
// Dump: the fd kind (make_tty_kind, fd_kind.h) saves each terminal fd; once
// every fd is seen it saves tty.img: per pty pair its termios, window size,
// lock, packet and exclusive modes and the bytes queued both ways (read out
// while the tree is frozen and put straight back with TIOCSTI, which hands
// bytes to the line discipline synchronously), and per session its
// controlling terminal and foreground group.
//
// Restore, in this order:
//   TtyRestore::load             before anything is created; a shell job
//                                without --shell-job is refused here
//   TtyRestore::open_terminals   in ckpt (the holder), in the tree's
//                                namespaces, once the root stub exists and
//                                before it forks the rest
//                                (StubOptions::before_fork): makes the pty
//                                pair of every controlling terminal through
//                                the FileTable (open_early) and keeps a slave
//                                fd of each, whose number it writes in a
//                                shared table
//   the stub steps               (restore/stubs.cc, each before the stub
//                                installs its fds) keeps_session, take_ctty
//                                (a session leader takes its slave from the
//                                holder with pidfd_getfd, before it forks the
//                                children that inherit the terminal),
//                                drop_ctty, set_foreground
//   FileTable::open_all          the other pty descriptions; the pairs made
//                                above are handed out as they are
//   TtyRestore::close_terminals  once every process group is made
//   ForegroundJob                a shell job restored without -d gets ckpt's
//                                terminal while ckpt waits, and gives it back
#pragma once

#include <sys/types.h>

#include <map>
#include <string>

#include "image/image_io.h"
#include "sys/fd.h"
#include "sys/proc.h"
#include "tty.pb.h"

namespace ckpt {

constexpr const char* kTtyImage = "tty.img";

// The device of a /proc/PID/stat tty_nr (0: none).
dev_t decode_tty_nr(int tty_nr);
// "/dev/pts/3", "/dev/tty1", "/dev/ttyS0", "/dev/console", or "tty 4:70".
std::string tty_name(dev_t rdev);
// A terminal device: a console, virtual terminal, serial line or pty.
bool is_tty_device(dev_t rdev);
// The index of a Unix98 pty slave device (/dev/pts/N), or -1.
int pts_index(dev_t rdev);
// The "tty-index:" of a pty master's fdinfo, or -1 if it has none.
int parse_tty_index(const proc::FdInfo& info);

// The state of pty pair index through its master, slave (-1 if the tree has
// none) and a slave fd open for reading (-1 if none: its input is not
// saved): termios, window size, modes, and the bytes queued both ways, read
// out and put back. slave_path is left to the caller.
img::PtyPair save_pty_pair(uint32_t index, int master, int slave, int readable_slave);
// The same state on a new, unlocked pair: slave (-1 if none) is needed for
// slave input. The lock and the slave's exclusive mode are left to the caller.
void restore_pty_pair(int master, int slave, const img::PtyPair& p);

class FileTable;

class TtyRestore {
 public:
  TtyRestore() = default;
  TtyRestore(const TtyRestore&) = delete;
  TtyRestore& operator=(const TtyRestore&) = delete;
  ~TtyRestore();
  // Reads tty.img (absent in images without terminals). Throws if the
  // images are of a shell job and shell_job (restore --shell-job) is off.
  // Maps the table the stubs read: call it before they are forked.
  void load(const image::ImageSource& src, bool shell_job);
  // Some session had a controlling terminal: open_terminals has work.
  bool has_sessions() const { return state_.sessions_size() != 0; }
  // In ckpt, in the tree's namespaces, before the root stub forks the rest
  // of the tree: makes the pty of every session's controlling terminal
  // (files.open_early) and keeps a slave fd of it for the session leader's
  // stub to take (take_ctty).
  void open_terminals(FileTable& files);
  // Once every stub is grouped (StubTree::create returned).
  void close_terminals();

  // --- in a restore stub, before its fds are installed; throw Error ---
  // A session leader whose terminal was the shell's stays in the restoring
  // ckpt's session (a process cannot join a session it did not make).
  bool keeps_session(pid_t pid) const;
  // After setsid, before forking children (they inherit it): a session
  // leader takes its pty's slave from ckpt (holder_pidfd, a pidfd on it)
  // and makes it its controlling terminal.
  void take_ctty(pid_t pid, int holder_pidfd) const;
  // After forking children: a process that had no controlling terminal
  // drops the one it inherited.
  void drop_ctty(pid_t pid) const;
  // Once every process group exists: a session leader gives its terminal to
  // the foreground group.
  void set_foreground(pid_t pid, int holder_pidfd) const;

  // The process group a shell job restored in the foreground gets ckpt's
  // terminal for (the dumped foreground group, else the root's), 0 if the
  // images are no shell job on a terminal.
  pid_t job_pgrp(pid_t root_pgid) const;

 private:
  const img::SessionTty* leader_session(pid_t pid) const;
  // The slave ckpt opened for session s, taken from it.
  UniqueFd terminal(const img::SessionTty& s, int holder_pidfd) const;
  img::TtyState state_;
  std::map<uint32_t, UniqueFd> fds_;  // by session id: its pty's slave, in ckpt
  // Shared with the stubs: ckpt's fd of each session's slave (-1: none), by
  // the session's index in state_.
  int* slots_ = nullptr;
  size_t slots_size_ = 0;
};

// A shell job restored in the foreground: the job's process group is the
// foreground of ckpt's controlling terminal while ckpt waits for it, like
// a shell's job; ckpt's own group gets the terminal back when the job ends
// (or stops: ckpt then stops too, and gives the terminal back to the job
// and continues it when continued itself).
class ForegroundJob {
 public:
  ForegroundJob() = default;
  ForegroundJob(const ForegroundJob&) = delete;
  ForegroundJob& operator=(const ForegroundJob&) = delete;
  ~ForegroundJob();  // gives the terminal back
  // Hands the terminal to pgrp if ckpt is in its foreground; else nothing.
  void give(pid_t pgrp);
  // waitpid for the root, following it through stops; its wait status.
  int wait(pid_t root);

 private:
  UniqueFd tty_;
  pid_t job_ = 0;
  pid_t own_ = 0;
};

}  // namespace ckpt
