#include "sys/netns_exec.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>

#include "sys/error.h"
#include "sys/fd.h"

namespace ckpt {

void run_in_netns(int netns_fd, const std::function<void()>& f) {
  std::exception_ptr failure;
  std::thread t([&] {
    try {
      if (setns(netns_fd, CLONE_NEWNET) != 0) throw_errno("setns(CLONE_NEWNET)");
      f();
    } catch (...) {
      failure = std::current_exception();
    }
  });
  t.join();
  if (failure) std::rethrow_exception(failure);
}

UniqueFd new_netns() {
  UniqueFd fd;
  std::exception_ptr failure;
  std::thread t([&] {
    try {
      if (unshare(CLONE_NEWNET) != 0) throw_errno("unshare(CLONE_NEWNET)");
      fd = open_or_throw("/proc/thread-self/ns/net", O_RDONLY);
    } catch (...) {
      failure = std::current_exception();
    }
  });
  t.join();
  if (failure) std::rethrow_exception(failure);
  return fd;
}

UniqueFd current_netns() {
  return open_or_throw("/proc/thread-self/ns/net", O_RDONLY);
}

bool ProgramResult::ok() const {
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::string ProgramResult::describe() const {
  std::string how = WIFEXITED(status) ? strfmt("exit %d", WEXITSTATUS(status))
                                      : strfmt("killed by signal %d", WTERMSIG(status));
  std::string first = err.substr(0, err.find('\n'));
  return first.empty() ? how : how + ": " + first;
}

namespace {

// The directories searched besides PATH: root's tools live in sbin, which
// a non-login PATH may lack.
std::string find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  std::string dirs = getenv("PATH") ? getenv("PATH") : "";
  dirs += ":/usr/sbin:/sbin:/usr/bin:/bin";
  size_t pos = 0;
  while (pos <= dirs.size()) {
    size_t end = dirs.find(':', pos);
    if (end == std::string::npos) end = dirs.size();
    std::string dir = dirs.substr(pos, end - pos);
    pos = end + 1;
    if (dir.empty()) continue;
    std::string path = dir + "/" + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return {};
}

UniqueFd pipe_end(int fds[2], int keep) {
  close(fds[1 - keep]);
  return UniqueFd(fds[keep]);
}

}  // namespace

bool have_program(const std::string& name) {
  return !find_program(name).empty();
}

ProgramResult run_program(const std::vector<std::string>& argv, const std::string& input) {
  std::string path = find_program(argv.at(0));
  if (path.empty()) throw Error(argv[0] + ": not installed", ENOENT);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  int in[2], out[2], err[2];
  // stdin is a socket so that a child that stops reading gives EPIPE to
  // send(MSG_NOSIGNAL), not SIGPIPE.
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) != 0) throw_errno("socketpair");
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(in[0]), close(in[1]);
    throw_errno("pipe");
  }
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(in[0]), close(in[1]), close(out[0]), close(out[1]);
    throw_errno("pipe");
  }
  pid_t pid = fork();
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    execv(path.c_str(), args.data());
    _exit(127);
  }
  int fork_errno = errno;
  UniqueFd to_child = pipe_end(in, 1), from_out = pipe_end(out, 0), from_err = pipe_end(err, 0);
  if (pid < 0) throw_errno(fork_errno, "fork " + argv[0]);

  fcntl(to_child.get(), F_SETFL, O_NONBLOCK);
  ProgramResult r;
  size_t written = 0;
  if (input.empty()) to_child.reset();
  while (from_out.valid() || from_err.valid()) {
    pollfd p[3] = {
        {from_out.get(), POLLIN, 0}, {from_err.get(), POLLIN, 0}, {to_child.get(), POLLOUT, 0}};
    if (poll(p, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    char buf[16384];
    for (int i = 0; i < 2; ++i) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      UniqueFd& fd = i == 0 ? from_out : from_err;
      ssize_t n = read(fd.get(), buf, sizeof buf);
      if (n > 0)
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
      else if (n == 0 || errno != EINTR)
        fd.reset();
    }
    if (to_child.valid() && (p[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n =
          send(to_child.get(), input.data() + written, input.size() - written, MSG_NOSIGNAL);
      if (n > 0) written += static_cast<size_t>(n);
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || written == input.size()) to_child.reset();
    }
  }
  to_child.reset();
  while (waitpid(pid, &r.status, 0) < 0 && errno == EINTR) {
  }
  return r;
}

}  // namespace ckpt
