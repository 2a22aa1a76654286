// One kind of open file (regular files, pipes, eventfd, unix sockets, ...).
// Adding a kind means one file in objects/ implementing FdKind and one line
// in fd_kinds.cc; files.cc does the rest: it finds each fd's file
// description once, asks the kinds which one it is, and at restore opens
// each description once and puts it at its fd numbers in every process.
//
// Restore order for a kind:
//   load()          every image the kind needs, validated, nothing created
//   open()          in the controller, before the tree is forked: the new
//                   description is inherited by every restore stub
//   open_in_stub()  instead, for kinds that must be opened by the process
//                   itself (open() returns an empty UniqueFd to ask for it)
//   after_install() in each stub once all its fds are at their numbers
//                   (epoll watches name fds by number)
//   before_resume() in the controller, when the tree is about to run
//                   (TCP sockets leave repair mode)
// A kind that uses open_in_stub or after_install says for which
// descriptions in runs_in_stub(): such trees get stubs that are copies of
// ckpt (restore/stubs.h), the freestanding stub runs no kind's code.
#pragma once

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "files.pb.h"
#include "image/image_io.h"
#include "objects/dump_context.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/proc.h"

namespace ckpt {

class GhostTable;

// What the dump knows about one fd when it asks the kinds.
struct FdDumpArgs {
  DumpContext& ctx;
  DumpTask& task;
  int fd;     // number in the task
  int local;  // our duplicate of it (pidfd_getfd): same description
  const struct stat& st;
  const std::string& link;  // readlink /proc/PID/fd/N
  const proc::FdInfo& info;
};

// Restore-time view of the whole file table, for kinds whose descriptions
// refer to each other (a unix socket and its peer, an epoll and its targets).
struct FdRestoreState {
  const image::ImageSource* src = nullptr;
  std::map<uint32_t, img::FileDesc> descs;  // every description, by id
  std::vector<pid_t> tree_pids;
  const GhostTable* ghosts = nullptr;  // recreated deleted files and memfds
  // Helper fds that must stay open until every description is opened (a
  // FIFO held open both ways); dropped before the tree runs.
  std::vector<UniqueFd> helpers;
};

// What a kind looks at to say whether a description is its own. For a
// socket, its family, type and protocol (SO_DOMAIN, SO_TYPE, SO_PROTOCOL of
// our duplicate; -1 otherwise): a kind asks sock_diag only about sockets of
// its protocol, since every sock_diag dump walks the whole host's hash table
// (~1 ms each), which a frozen container should not pay per socket.
struct FdProbe {
  const struct stat& st;
  const std::string& link;  // readlink /proc/PID/fd/N
  int sock_family = -1;
  int sock_type = -1;
  int sock_protocol = -1;
  bool is_inet() const { return sock_family == AF_INET || sock_family == AF_INET6; }
};

class FdKind {
 public:
  virtual ~FdKind() = default;
  virtual const char* name() const = 0;

  // --- dump ---
  // Is this description of this kind?
  virtual bool matches(const FdProbe& p) const = 0;
  // Fills the kind's part of d (id, flags and pos are already set). Throws
  // Error for what the kind cannot save.
  virtual void dump(const FdDumpArgs& a, img::FileDesc* d) = 0;
  // After every task's fds: kind-wide images and checks (pipe data, peers).
  // descs are all descriptions, with our duplicate of each.
  virtual void finish_dump(DumpContext& ctx,
                           const std::vector<std::pair<const img::FileDesc*, int>>& descs) {}

  // --- restore ---
  virtual bool owns(const img::FileDesc& d) const = 0;
  virtual void load(const image::ImageSource& src) {}
  virtual UniqueFd open(const img::FileDesc& d, FdRestoreState& st) = 0;
  virtual UniqueFd open_in_stub(const img::FileDesc& d, const FdRestoreState& st) const {
    throw Error(std::string(name()) + ": cannot be opened in the process");
  }
  // In a stub, once table's fds are at their numbers. Runs after the stub
  // closed its own stdio: errors are thrown, never printed.
  virtual void after_install(const img::FdTable& table, const FdRestoreState& st) const {}
  // In the controller, right before the tree runs.
  virtual void before_resume() {}
  // Does restoring d run this kind's code in the process's stub
  // (open_in_stub, after_install)? tree_pids: the restored processes.
  virtual bool runs_in_stub(const img::FileDesc& d, const std::vector<pid_t>& tree_pids) const {
    return false;
  }
};

// A number from an fdinfo value in the given base; throws Error naming key.
uint64_t parse_fdinfo_u64(const std::string& key, const std::string& value, int base);

// Every kind, in the order they are asked (fd_kinds.cc).
std::vector<std::unique_ptr<FdKind>> make_fd_kinds();

// Factories, one per kind file.
std::unique_ptr<FdKind> make_regular_file_kind();
std::unique_ptr<FdKind> make_device_kind();
std::unique_ptr<FdKind> make_pipe_kind();         // pipes and FIFOs
std::unique_ptr<FdKind> make_unix_socket_kind();  // unix domain sockets
std::unique_ptr<FdKind> make_eventfd_kind();
std::unique_ptr<FdKind> make_signalfd_kind();
std::unique_ptr<FdKind> make_timerfd_kind();
std::unique_ptr<FdKind> make_epoll_kind();
std::unique_ptr<FdKind> make_inotify_kind();
std::unique_ptr<FdKind> make_tcp_socket_kind();  // TCP over IPv4 and IPv6
std::unique_ptr<FdKind> make_udp_socket_kind();  // UDP over IPv4 and IPv6
std::unique_ptr<FdKind> make_tty_kind();         // ptys, /dev/tty, the shell's terminal (tty.cc)

// fdinfo parsers of the anonymous-inode kinds (eventfd.cc ... inotify.cc),
// declared here for the unit tests. Each throws Error on a malformed line.
img::EventFd parse_eventfd_fdinfo(const proc::FdInfo& info);
img::SignalFd parse_signalfd_fdinfo(const proc::FdInfo& info);
img::TimerFd parse_timerfd_fdinfo(const proc::FdInfo& info);
struct EpollTarget {  // one "tfd:" line
  int fd = -1;
  uint32_t events = 0;
  uint64_t data = 0;
  uint64_t ino = 0;
  uint32_t sdev = 0;
};
std::vector<EpollTarget> parse_epoll_fdinfo(const proc::FdInfo& info);
struct InotifyMark {  // one "inotify wd:" line
  int32_t wd = 0;
  uint64_t ino = 0;
  uint32_t sdev = 0;  // kernel dev_t: major << 20 | minor
  uint32_t mask = 0, ignored_mask = 0;
  int handle_type = 0;
  std::string handle;  // f_handle bytes
};
std::vector<InotifyMark> parse_inotify_fdinfo(const proc::FdInfo& info);

}  // namespace ckpt
