#include "objects/fd_kind.h"

#include <cerrno>
#include <cstdlib>

namespace ckpt {

uint64_t parse_fdinfo_u64(const std::string& key, const std::string& v, int base) {
  errno = 0;
  char* end = nullptr;
  unsigned long long n = strtoull(v.c_str(), &end, base);
  if (v.empty() || errno != 0 || *end != '\0' || v[0] == '-')
    throw Error("fdinfo: " + key + ": bad value '" + v + "'");
  return n;
}

std::vector<std::unique_ptr<FdKind>> make_fd_kinds() {
  std::vector<std::unique_ptr<FdKind>> k;
  k.push_back(make_regular_file_kind());
  k.push_back(make_tty_kind());  // before devices: terminals are character devices too
  k.push_back(make_device_kind());
  k.push_back(make_pipe_kind());
  k.push_back(make_unix_socket_kind());
  k.push_back(make_tcp_socket_kind());
  k.push_back(make_udp_socket_kind());
  k.push_back(make_eventfd_kind());
  k.push_back(make_signalfd_kind());
  k.push_back(make_timerfd_kind());
  k.push_back(make_epoll_kind());
  k.push_back(make_inotify_kind());
  return k;
}

}  // namespace ckpt
