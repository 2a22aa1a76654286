#include "migrate/transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "migrate/sha256.h"
#include "sys/cancel.h"
#include "sys/error.h"

namespace ckpt::migrate {

namespace {

// A peer that stops mid-frame, or stops reading what we send, for this long
// is taken as gone: nothing in the protocol pauses inside a frame.
constexpr int kStallMs = 120'000;
constexpr int kHandshakeStepMs = 10'000;
constexpr size_t kChallengeLen = 32;
constexpr const char* kMacContext = "ckpt-migrate-v1";
constexpr size_t kMaxKeyFile = 4096;

void put_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = uint8_t(v >> (8 * i));
}

uint32_t get_le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

std::string stream_from(const std::string& peer) {
  return "migration stream from " + peer;
}

// Validates the two length words before anything is allocated for the frame.
void check_lengths(uint32_t total, uint32_t hlen, const std::string& peer) {
  if (total < 4 || total > 4 + kMaxHeader + kMaxBody)
    throw Error(strfmt("%s: frame of %u bytes", stream_from(peer).c_str(), total));
  if (hlen > kMaxHeader || hlen > total - 4)
    throw Error(strfmt("%s: header of %u bytes in a frame of %u bytes", stream_from(peer).c_str(),
                       hlen, total));
}

void parse_header(const void* p, size_t len, mig::Envelope& m, const std::string& peer) {
  if (!m.ParseFromArray(p, static_cast<int>(len)))
    throw Error(stream_from(peer) + ": a frame header that does not parse");
}

// Splits "HOST:PORT" or "[V6]:PORT".
void split_host_port(const std::string& s, std::string& host, std::string& port) {
  size_t colon;
  if (!s.empty() && s[0] == '[') {
    size_t close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
      throw Error("bad address '" + s + "' (want HOST:PORT or [IPV6]:PORT)");
    host = s.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = s.rfind(':');
    if (colon == std::string::npos || s.find(':') != colon)
      throw Error("bad address '" + s + "' (want HOST:PORT or [IPV6]:PORT)");
    host = s.substr(0, colon);
  }
  port = s.substr(colon + 1);
  if (host.empty() || port.empty() || port.find_first_not_of("0123456789") != std::string::npos ||
      port.size() > 5 || std::stoul(port) > 65535)
    throw Error("bad address '" + s + "' (want HOST:PORT or [IPV6]:PORT)");
}

struct AddrInfo {
  addrinfo* ai = nullptr;
  ~AddrInfo() {
    if (ai) freeaddrinfo(ai);
  }
};

void resolve(const std::string& host_port, bool passive, AddrInfo& out) {
  std::string host, port;
  split_host_port(host_port, host, port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &out.ai);
  if (rc != 0) throw Error("resolve " + host_port + ": " + gai_strerror(rc));
}

std::string format_addr(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET) {
    auto& a = reinterpret_cast<const sockaddr_in&>(ss);
    inet_ntop(AF_INET, &a.sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(ntohs(a.sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; say a.b.c.d.
    if (IN6_IS_ADDR_V4MAPPED(&a.sin6_addr)) {
      inet_ntop(AF_INET, &a.sin6_addr.s6_addr[12], buf, sizeof buf);
      return std::string(buf) + ":" + std::to_string(ntohs(a.sin6_port));
    }
    inet_ntop(AF_INET6, &a.sin6_addr, buf, sizeof buf);
    return "[" + std::string(buf) + "]:" + std::to_string(ntohs(a.sin6_port));
  }
  return "(unknown address family " + std::to_string(ss.ss_family) + ")";
}

// Waits for fd to be readable (POLLIN) or writable; false on timeout.
bool wait_fd(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  for (;;) {
    int n = ::poll(&p, 1, timeout_ms);
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) throw_errno("poll");
  }
}

void set_nodelay(int fd, const std::string& peer) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
    throw_errno("TCP_NODELAY on the connection to " + peer);
}

std::string digest_bytes(const Digest& d) {
  return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

std::string mac_for(const std::string& key, const std::string& role, const std::string& own,
                    const std::string& peer) {
  return digest_bytes(hmac_sha256(key, kMacContext + role + own + peer));
}

}  // namespace

// ---- frames -----------------------------------------------------------------

std::string encode_frame(const mig::Envelope& m, const void* body, size_t len) {
  std::string hdr = m.SerializeAsString();
  std::string out(8, '\0');
  put_le32(reinterpret_cast<uint8_t*>(out.data()), uint32_t(4 + hdr.size() + len));
  put_le32(reinterpret_cast<uint8_t*>(out.data()) + 4, uint32_t(hdr.size()));
  out += hdr;
  if (len > 0) out.append(static_cast<const char*>(body), len);
  return out;
}

size_t decode_frame(const void* buf, size_t len, Frame& f, const std::string& peer) {
  auto* p = static_cast<const uint8_t*>(buf);
  if (len < 8) return 0;
  uint32_t total = get_le32(p), hlen = get_le32(p + 4);
  check_lengths(total, hlen, peer);
  if (len - 4 < total) return 0;
  f.msg.Clear();
  parse_header(p + 8, hlen, f.msg, peer);
  f.body.assign(reinterpret_cast<const char*>(p + 8 + hlen), total - 4 - hlen);
  return 4 + size_t(total);
}

// ---- Channel ----------------------------------------------------------------

Channel::Channel(UniqueFd sock, std::string peer) : sock_(std::move(sock)), peer_(std::move(peer)) {
  // A blocked send fails after kStallMs instead of hanging on a peer that
  // stopped reading (EAGAIN below).
  timeval tv{kStallMs / 1000, 0};
  setsockopt(sock_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

Channel::Channel(Channel&& o) noexcept
    : sock_(std::move(o.sock_)),
      peer_(std::move(o.peer_)),
      sent_(o.sent_.load()),
      received_(o.received_.load()) {}

Channel Channel::connect(const std::string& host_port, int timeout_ms) {
  return in_context("connect to " + host_port, [&] {
    AddrInfo ai;
    resolve(host_port, false, ai);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    int err = ECONNREFUSED;
    for (addrinfo* a = ai.ai; a; a = a->ai_next) {
      UniqueFd s(::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
      if (!s) throw_errno("socket");
      if (::connect(s.get(), a->ai_addr, a->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) {
          err = errno;
          continue;
        }
        int left = -1;
        if (timeout_ms >= 0) {
          auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now())
                        .count();
          left = ms > 0 ? int(ms) : 0;
        }
        if (!wait_fd(s.get(), POLLOUT, left))
          throw Error(strfmt("no answer within %d ms", timeout_ms), ETIMEDOUT);
        socklen_t l = sizeof err;
        if (getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &l) < 0) throw_errno("SO_ERROR");
        if (err != 0) continue;
      }
      int fl = fcntl(s.get(), F_GETFL);
      if (fl < 0 || fcntl(s.get(), F_SETFL, fl & ~O_NONBLOCK) < 0) throw_errno("fcntl");
      sockaddr_storage ss{};
      socklen_t sl = sizeof ss;
      std::string peer = host_port;
      if (getpeername(s.get(), reinterpret_cast<sockaddr*>(&ss), &sl) == 0) peer = format_addr(ss);
      set_nodelay(s.get(), peer);
      return Channel(std::move(s), peer);
    }
    throw_errno(err, "connect");
  });
}

void Channel::send(const mig::Envelope& m, const void* body, size_t len) {
  if (!body) len = 0;
  std::string hdr = m.SerializeAsString();
  if (len > kMaxBody)
    throw Error(strfmt("migration stream to %s: a body of %zu bytes (at most %zu)", peer_.c_str(),
                       len, kMaxBody));
  if (hdr.size() > kMaxHeader)
    throw Error(strfmt("migration stream to %s: a header of %zu bytes (at most %zu)", peer_.c_str(),
                       hdr.size(), kMaxHeader));
  uint8_t pre[8];
  put_le32(pre, uint32_t(4 + hdr.size() + len));
  put_le32(pre + 4, uint32_t(hdr.size()));
  iovec iov[3] = {
      {pre, sizeof pre}, {hdr.data(), hdr.size()}, {const_cast<void*>(body), body ? len : 0}};
  size_t total = sizeof pre + hdr.size() + (body ? len : 0);
  std::lock_guard lock(send_mu_);
  iovec* v = iov;
  int nv = 3;
  size_t done = 0;
  while (done < total) {
    msghdr mh{};
    mh.msg_iov = v;
    mh.msg_iovlen = size_t(nv);
    // MSG_NOSIGNAL: a peer gone is an Error, not a SIGPIPE.
    ssize_t n = ::sendmsg(sock_.get(), &mh, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        throw Error(strfmt("migration stream to %s: the peer read nothing for %d s", peer_.c_str(),
                           kStallMs / 1000),
                    ETIMEDOUT);
      throw_errno("send to " + peer_);
    }
    done += size_t(n);
    sent_.fetch_add(uint64_t(n), std::memory_order_relaxed);
    auto left = size_t(n);
    while (nv > 0 && left >= v->iov_len) {
      left -= v->iov_len;
      v++;
      nv--;
    }
    if (nv > 0) {
      v->iov_base = static_cast<char*>(v->iov_base) + left;
      v->iov_len -= left;
    }
  }
}

// Reads exactly len bytes of the frame being received; got_before is how
// much of the frame came before (0: EOF here is a clean close).
void Channel::read_exact(void* buf, size_t len, size_t got_before, size_t frame_len) {
  auto* p = static_cast<char*>(buf);
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::recv(sock_.get(), p + got, len - got, MSG_DONTWAIT);
    if (n > 0) {
      got += size_t(n);
      received_.fetch_add(uint64_t(n), std::memory_order_relaxed);
      continue;
    }
    if (n == 0) {
      if (got_before + got == 0) throw Error("connection to " + peer_ + " closed");
      throw Error(strfmt("%s: connection closed inside a frame (after %zu of %zu bytes)",
                         stream_from(peer_).c_str(), got_before + got, frame_len));
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) throw_errno(stream_from(peer_));
    if (!wait_fd(sock_.get(), POLLIN, got_before + got == 0 ? -1 : kStallMs))
      throw Error(strfmt("%s: nothing received for %d s inside a frame", stream_from(peer_).c_str(),
                         kStallMs / 1000),
                  ETIMEDOUT);
  }
}

bool Channel::recv(Frame& f, int timeout_ms) {
  size_t body = 0;
  if (!recv_header(f, &body, timeout_ms)) return false;
  f.body.resize(body);
  recv_body(f.body.data(), body);
  return true;
}

bool Channel::recv_header(Frame& f, size_t* body_len, int timeout_ms) {
  if (body_left_ > 0)
    throw Error(strfmt("migration stream from %s: a frame's body was not read", peer_.c_str()));
  if (!wait_fd(sock_.get(), POLLIN, timeout_ms)) return false;
  uint8_t pre[8];
  read_exact(pre, sizeof pre, 0, sizeof pre);
  uint32_t total = get_le32(pre), hlen = get_le32(pre + 4);
  check_lengths(total, hlen, peer_);
  size_t frame_len = 4 + size_t(total);
  hdr_buf_.resize(hlen);
  read_exact(hdr_buf_.data(), hlen, sizeof pre, frame_len);
  f.msg.Clear();
  f.body.clear();
  parse_header(hdr_buf_.data(), hlen, f.msg, peer_);
  body_left_ = total - 4 - hlen;
  frame_len_ = frame_len;
  body_at_ = sizeof pre + hlen;
  *body_len = body_left_;
  return true;
}

void Channel::recv_body(void* dst, size_t len) {
  if (len != body_left_)
    throw Error(strfmt("migration stream from %s: body of %zu bytes read as %zu", peer_.c_str(),
                       body_left_, len));
  body_left_ = 0;
  read_exact(dst, len, body_at_, frame_len_);
}

void Channel::shutdown() {
  if (sock_) ::shutdown(sock_.get(), SHUT_RDWR);
}

// ---- Listener ---------------------------------------------------------------

Listener Listener::bind(const std::string& addr_port) {
  return in_context("listen on " + addr_port, [&] {
    AddrInfo ai;
    resolve(addr_port, true, ai);
    int err = EADDRNOTAVAIL;
    for (addrinfo* a = ai.ai; a; a = a->ai_next) {
      UniqueFd s(::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!s) throw_errno("socket");
      int one = 1;
      if (setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        throw_errno("SO_REUSEADDR");
      if (::bind(s.get(), a->ai_addr, a->ai_addrlen) < 0 || ::listen(s.get(), 8) < 0) {
        err = errno;
        continue;
      }
      Listener l;
      l.sock_ = std::move(s);
      return l;
    }
    throw_errno(err, "bind");
  });
}

uint64_t realtime_us() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000 + uint64_t(ts.tv_nsec) / 1000;
}

mig::Envelope control(const std::string& what, uint64_t a, uint64_t b, const std::string& text) {
  mig::Envelope e;
  auto* c = e.mutable_control();
  c->set_what(what);
  c->set_a(a);
  c->set_b(b);
  c->set_text(text);
  return e;
}

void Channel::try_send_fail(const std::string& why) {
  mig::Envelope e;
  e.mutable_fail()->set_error(why);
  try {
    send(e);
  } catch (const Error&) {
  }
}

Channel Listener::accept(int timeout_ms) {
  // In slices, so that Ctrl-C or SIGTERM ends a listener that waits (the
  // handlers only set a flag, and poll is restarted after them).
  constexpr int kSliceMs = 250;
  for (int waited = 0;;) {
    cancel::check();
    int slice = timeout_ms < 0 ? kSliceMs : std::min(kSliceMs, timeout_ms - waited);
    if (wait_fd(sock_.get(), POLLIN, slice)) break;
    waited += slice;
    if (timeout_ms >= 0 && waited >= timeout_ms)
      throw Error(strfmt("no connection on %s within %g s", address().c_str(), timeout_ms / 1000.0),
                  ETIMEDOUT);
  }
  sockaddr_storage ss{};
  socklen_t sl = sizeof ss;
  int fd = retry_eintr(
      [&] { return ::accept4(sock_.get(), reinterpret_cast<sockaddr*>(&ss), &sl, SOCK_CLOEXEC); });
  if (fd < 0) throw_errno("accept on " + address());
  UniqueFd s(fd);
  std::string peer = format_addr(ss);
  set_nodelay(s.get(), peer);
  return Channel(std::move(s), peer);
}

std::string Listener::address() const {
  sockaddr_storage ss{};
  socklen_t sl = sizeof ss;
  if (getsockname(sock_.get(), reinterpret_cast<sockaddr*>(&ss), &sl) < 0)
    throw_errno("getsockname");
  return format_addr(ss);
}

// ---- key and handshake ------------------------------------------------------

std::string read_psk_file(const std::string& path) {
  return in_context("key file " + path, [&] {
    UniqueFd fd = open_or_throw(path, O_RDONLY);
    std::string key(kMaxKeyFile + 1, '\0');
    size_t got = 0;
    for (;;) {
      ssize_t n = retry_eintr([&] { return ::read(fd.get(), key.data() + got, key.size() - got); });
      if (n < 0) throw_errno("read");
      if (n == 0 || (got += size_t(n)) == key.size()) break;
    }
    if (got > kMaxKeyFile) throw Error(strfmt("longer than %zu bytes", kMaxKeyFile));
    key.resize(got);
    if (!key.empty() && key.back() == '\n') key.pop_back();
    if (key.empty()) throw Error("empty");
    return key;
  });
}

PeerInfo handshake(Channel& ch, const mig::Hello& mine_in, const std::string& key) {
  const std::string& peer = ch.peer();
  if (mine_in.role().empty()) throw Error("migration handshake: no role given");
  mig::Hello mine = mine_in;
  mine.set_version(kProtocolVersion);
  mine.set_auth(!key.empty());
  if (mine.challenge().empty()) {
    std::string c(kChallengeLen, '\0');
    if (getrandom(c.data(), c.size(), 0) != ssize_t(c.size())) throw_errno("getrandom");
    mine.set_challenge(c);
  }
  if (mine.hostname().empty()) {
    char h[256] = {};
    gethostname(h, sizeof h - 1);
    mine.set_hostname(h);
  }

  // Tells the peer why we stop; it may be gone already, so errors are ignored.
  auto fail = [&](const std::string& why, const std::string& error) {
    ch.try_send_fail(why);
    throw Error(error);
  };
  // The next message, which must be of kind `want`.
  auto expect = [&](mig::Envelope::MsgCase want, const char* what) {
    Frame f;
    if (!ch.recv(f, kHandshakeStepMs))
      throw Error(strfmt("no %s from %s within %d s", what, peer.c_str(), kHandshakeStepMs / 1000),
                  ETIMEDOUT);
    if (f.msg.has_fail()) throw Error(peer + ": " + f.msg.fail().error());
    if (f.msg.msg_case() != want)
      throw Error(strfmt("%s: expected %s, got message %d", stream_from(peer).c_str(), what,
                         int(f.msg.msg_case())));
    return f;
  };

  mig::Envelope out;
  uint64_t hello_sent = realtime_us();
  mine.set_realtime_us(hello_sent);
  *out.mutable_hello() = mine;
  ch.send(out);

  Frame hf = expect(mig::Envelope::kHello, "hello");
  uint64_t hello_received = realtime_us();
  PeerInfo info;
  info.hello = hf.msg.hello();
  const mig::Hello& theirs = info.hello;
  if (theirs.version() != kProtocolVersion)
    fail(strfmt("migration protocol version %u expected, got %u", kProtocolVersion,
                theirs.version()),
         strfmt("%s speaks migration protocol version %u, this ckpt speaks %u", peer.c_str(),
                theirs.version(), kProtocolVersion));
  if (theirs.role() == mine.role())
    fail("both ends are the " + mine.role(), peer + " is also the " + mine.role());
  if (theirs.challenge().size() < 16)
    fail("authentication failed", stream_from(peer) + ": a hello without a challenge");
  const std::string auth_failed = "authentication with " + peer + " failed: ";
  if (!key.empty() && !theirs.auth())
    fail("authentication failed", auth_failed + "the peer has no key");
  if (key.empty() && theirs.auth()) fail("authentication failed", auth_failed + "we have no key");

  out.Clear();
  auto* a = out.mutable_auth();
  if (!key.empty()) a->set_mac(mac_for(key, mine.role(), mine.challenge(), theirs.challenge()));
  a->set_hello_received_us(hello_received);
  uint64_t auth_sent = realtime_us();
  a->set_realtime_us(auth_sent);
  ch.send(out);

  Frame af = expect(mig::Envelope::kAuth, "authentication");
  uint64_t auth_received = realtime_us();
  if (!key.empty()) {
    std::string want = mac_for(key, theirs.role(), theirs.challenge(), mine.challenge());
    if (!equal_constant_time(af.msg.auth().mac(), want))
      fail("authentication failed", auth_failed + "wrong key");
  }
  // NTP's estimate (it assumes the peer read our Hello as it arrived, true
  // when both call handshake() right after connect/accept): our Hello went out at hello_sent and
  // reached the peer at its hello_received_us; its Auth left at its realtime_us and arrived at
  // auth_received. Half the difference of the two one-way gaps is the offset.
  const auto& pa = af.msg.auth();
  if (pa.hello_received_us() != 0 && pa.realtime_us() != 0) {
    int64_t there = int64_t(pa.hello_received_us()) - int64_t(hello_sent);
    int64_t back = int64_t(pa.realtime_us()) - int64_t(auth_received);
    info.clock_offset_us = (there + back) / 2;
  }
  // That estimate is off by half the difference of the two one-way
  // delays, which include each side's way to its read (ms on a busy
  // machine). The source refines it with a few pings answered at once and
  // keeps the one with the shortest round trip (its error is at most half
  // of that): the downtime it reports spans both clocks.
  bool pings = mine.role() == "source", answers = theirs.role() == "source";
  int64_t best_rtt = INT64_MAX;
  for (int i = 0; i < kClockPings && (pings || answers); i++) {
    if (pings) {
      int64_t t1 = static_cast<int64_t>(realtime_us());
      ch.send(control("clock", static_cast<uint64_t>(t1)));
      Frame f = expect(mig::Envelope::kControl, "clock reply");
      int64_t t4 = static_cast<int64_t>(realtime_us());
      const auto& c = f.msg.control();
      if (c.what() != "clock" || int64_t(c.a()) != t1)
        throw Error(stream_from(peer) + ": a clock reply that answers no ping");
      int64_t t2 = static_cast<int64_t>(c.b()), t3 = static_cast<int64_t>(c.c());
      int64_t rtt = (t4 - t1) - (t3 - t2);
      if (rtt >= 0 && rtt < best_rtt) {
        best_rtt = rtt;
        info.clock_offset_us = ((t2 - t1) + (t3 - t4)) / 2;
      }
    } else {
      Frame f = expect(mig::Envelope::kControl, "clock ping");
      uint64_t t2 = realtime_us();
      if (f.msg.control().what() != "clock")
        throw Error(stream_from(peer) + ": expected a clock ping");
      mig::Envelope reply = control("clock", f.msg.control().a(), t2);
      reply.mutable_control()->set_c(realtime_us());
      ch.send(reply);
    }
  }
  return info;
}

}  // namespace ckpt::migrate
