#include "sys/tcp_repair.h"

#include <linux/sockios.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "sys/error.h"
#include "sys/fd.h"

namespace ckpt::tcp_repair {

namespace {

void set_int(int fd, int opt, int v, const char* what) {
  if (setsockopt(fd, IPPROTO_TCP, opt, &v, sizeof(v)) != 0) throw_errno(strfmt("%s %d", what, v));
}

int get_int(int fd, int opt, const char* what) {
  int v = 0;
  socklen_t len = sizeof(v);
  if (getsockopt(fd, IPPROTO_TCP, opt, &v, &len) != 0) throw_errno(what);
  return v;
}

uint32_t ioctl_int(int fd, unsigned long req, const char* what) {
  int v = 0;
  if (ioctl(fd, req, &v) != 0) throw_errno(what);
  if (v < 0) throw Error(strfmt("%s: negative length %d", what, v));
  return static_cast<uint32_t>(v);
}

}  // namespace

void on(int fd) {
  set_int(fd, TCP_REPAIR, TCP_REPAIR_ON, "TCP_REPAIR");
}

void off(int fd, bool with_probe) {
  if (int err = off_noexcept(fd, with_probe)) throw_errno(err, "TCP_REPAIR off");
}

int off_noexcept(int fd, bool with_probe) {
  int v = with_probe ? TCP_REPAIR_OFF : TCP_REPAIR_OFF_NO_WP;
  return setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &v, sizeof(v)) == 0 ? 0 : errno;
}

void select_queue(int fd, int queue) {
  set_int(fd, TCP_REPAIR_QUEUE, queue, "TCP_REPAIR_QUEUE");
}

uint32_t queue_seq(int fd) {
  return static_cast<uint32_t>(get_int(fd, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ"));
}

void set_queue_seq(int fd, uint32_t seq) {
  if (setsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, &seq, sizeof(seq)) != 0)
    throw_errno(strfmt("TCP_QUEUE_SEQ %u", seq));
}

std::string peek_queue(int fd, size_t len) {
  std::string buf(len, '\0');
  if (len == 0) return buf;
  ssize_t n = retry_eintr([&] { return recv(fd, buf.data(), len, MSG_PEEK | MSG_DONTWAIT); });
  if (n < 0) throw_errno("peek at the queue");
  if (static_cast<size_t>(n) != len)
    throw Error(strfmt("peek at the queue: got %zd of %zu bytes", n, len));
  return buf;
}

tcp_info info(int fd) {
  tcp_info ti{};
  socklen_t len = sizeof(ti);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) throw_errno("TCP_INFO");
  return ti;
}

uint32_t mss(int fd) {
  return static_cast<uint32_t>(get_int(fd, TCP_MAXSEG, "TCP_MAXSEG"));
}

tcp_repair_window window(int fd) {
  tcp_repair_window w{};
  socklen_t len = sizeof(w);
  if (getsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, &len) != 0)
    throw_errno("TCP_REPAIR_WINDOW");
  return w;
}

void set_window(int fd, const tcp_repair_window& w) {
  if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, sizeof(w)) != 0)
    throw_errno(
        strfmt("TCP_REPAIR_WINDOW (snd_wl1 %u snd_wnd %u max_window %u rcv_wnd %u "
               "rcv_wup %u)",
               w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup));
}

uint32_t timestamp(int fd) {
  return static_cast<uint32_t>(get_int(fd, TCP_TIMESTAMP, "TCP_TIMESTAMP"));
}

void set_timestamp(int fd, uint32_t ts) {
  if (setsockopt(fd, IPPROTO_TCP, TCP_TIMESTAMP, &ts, sizeof(ts)) != 0)
    throw_errno("TCP_TIMESTAMP");
}

void set_options(int fd, const std::vector<tcp_repair_opt>& opts) {
  if (opts.empty()) return;
  if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_OPTIONS, opts.data(),
                 static_cast<socklen_t>(opts.size() * sizeof(tcp_repair_opt))) != 0)
    throw_errno("TCP_REPAIR_OPTIONS");
}

uint32_t inq(int fd) {
  return ioctl_int(fd, SIOCINQ, "SIOCINQ");
}

uint32_t outq(int fd) {
  return ioctl_int(fd, SIOCOUTQ, "SIOCOUTQ");
}

uint32_t outq_unsent(int fd) {
  return ioctl_int(fd, SIOCOUTQNSD, "SIOCOUTQNSD");
}

bool available() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  UniqueFd owner(fd);
  int v = TCP_REPAIR_ON;
  return setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &v, sizeof(v)) == 0;
}

}  // namespace ckpt::tcp_repair
