#include "objects/fd_kind.h"

namespace ckpt {

std::vector<std::unique_ptr<FdKind>> make_fd_kinds() {
  std::vector<std::unique_ptr<FdKind>> k;
  k.push_back(make_regular_file_kind());
  k.push_back(make_device_kind());
  k.push_back(make_pipe_kind());
  k.push_back(make_unix_socket_kind());
  k.push_back(make_eventfd_kind());
  k.push_back(make_signalfd_kind());
  k.push_back(make_timerfd_kind());
  k.push_back(make_epoll_kind());
  k.push_back(make_inotify_kind());
  return k;
}

}  // namespace ckpt
