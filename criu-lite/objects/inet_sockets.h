// What the TCP (tcp.cc) and UDP (udp.cc) kinds share: sock_diag lookups by
// inode, addresses, the socket options saved and set again, buffer sizes,
// and the sockets the dump put in repair mode.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "files.pb.h"
#include "sys/fd.h"
#include "sys/sock_diag.h"

namespace ckpt {

constexpr const char* kTcpQueuesImage = "tcp-queues.img";
constexpr const char* kUdpQueuesImage = "udp-queues.img";

namespace inet {

// sock_diag's view of every TCP or UDP socket (both families), read again
// when an inode is not found (a socket created since the last read).
class Diag {
 public:
  explicit Diag(uint8_t protocol) : protocol_(protocol) {}
  const sockdiag::InetInfo* find(uint64_t ino) const;

 private:
  uint8_t protocol_;
  mutable std::map<uint64_t, sockdiag::InetInfo> by_ino_;
  mutable std::set<uint64_t> refreshed_for_;
};

// "10.0.0.1:80", "[fd00::1]:80"
std::string addr_port(uint32_t family, const std::string& raw, uint32_t port);
// A sockaddr_in / sockaddr_in6 for raw (4 or 16 bytes, empty: any address);
// scope: the interface of an IPv6 link-local address.
socklen_t make_sockaddr(uint32_t family, const std::string& raw, uint32_t port,
                        sockaddr_storage* out, uint32_t scope = 0);
// Whether raw (16 bytes) is an IPv4-mapped IPv6 address (::ffff:a.b.c.d).
bool v4_mapped(const std::string& raw);

// Saves the options of the list (inet_sockets.cc) that apply to a socket of
// this family and protocol (listening or not).
void save_opts(int fd, uint32_t family, int protocol, bool listening,
               google::protobuf::RepeatedPtrField<img::SockOpt>* out);
// Sets them again; buffer sizes are set with SO_*BUFFORCE.
void restore_opts(int fd, const google::protobuf::RepeatedPtrField<img::SockOpt>& opts);
// The value of a saved option, or def.
int64_t opt_value(const google::protobuf::RepeatedPtrField<img::SockOpt>& opts, const char* name,
                  int64_t def);
// Makes SO_SNDBUF / SO_RCVBUF at least `bytes` (getsockopt value).
void grow_buf(int fd, bool snd, uint32_t bytes);
// Refuses what ckpt cannot put back: an attached BPF/classic filter, an
// upper layer protocol (kTLS, MPTCP), TCP MD5 keys are not visible and are
// documented instead.
void check_unsupported(int fd, int protocol);

}  // namespace inet

// Sockets put in repair mode by the dump (our duplicates of them). Unless
// the dump killed the tree, they leave repair mode when this goes (before
// the tree is thawed: declare it after the FrozenTree); after a kill they
// are closed while still in repair mode, so the peers see nothing.
class RepairedSockets {
 public:
  RepairedSockets() = default;
  ~RepairedSockets() { leave_repair(); }
  RepairedSockets(const RepairedSockets&) = delete;
  RepairedSockets& operator=(const RepairedSockets&) = delete;
  // dup is a duplicate of a socket already in repair mode.
  void add(UniqueFd dup, std::string who) { socks_.push_back({std::move(dup), std::move(who)}); }
  // Back to normal, without a window probe (nothing changed); logs failures.
  void leave_repair();
  // The tree was killed: close our duplicates, the last references, in
  // repair mode (no FIN, no RST).
  void close_in_repair() { socks_.clear(); }
  size_t size() const { return socks_.size(); }

 private:
  struct Sock {
    UniqueFd fd;
    std::string who;
  };
  std::vector<Sock> socks_;
};

}  // namespace ckpt
