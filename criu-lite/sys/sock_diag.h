// sock_diag over netlink: what the kernel says about unix sockets (names,
// peers, queue lengths, connections waiting in accept queues) and inet
// sockets (TCP state, addresses, queue lengths, shutdown), found by inode.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "sys/fd.h"

namespace ckpt::sockdiag {

// One unix socket as sock_diag reports it.
struct UnixInfo {
  uint64_t ino = 0;
  uint8_t type = 0;      // SOCK_STREAM, ...
  uint8_t state = 0;     // TCP_LISTEN, TCP_ESTABLISHED, TCP_CLOSE
  uint8_t shutdown = 0;  // bit 0 RCV_SHUTDOWN, bit 1 SEND_SHUTDOWN
  bool has_name = false;
  std::string name;  // sun_path bytes (abstract: leading NUL), exact length
  bool has_peer = false;
  uint32_t peer = 0;  // peer inode; 0 for an embryo or a closed peer
  bool has_rqlen = false;
  uint32_t rqueue = 0;          // listen: connections queued; else bytes readable
  uint32_t wqueue = 0;          // listen: backlog; else bytes sent not yet read
  std::vector<uint32_t> icons;  // listen: client inodes waiting to be accepted
  bool has_vfs = false;
  uint32_t vfs_dev = 0, vfs_ino = 0;  // the bound file
};

// Parses a buffer of netlink messages answering a unix_diag dump, appending
// to out. Returns true once NLMSG_DONE is seen. Throws Error on an
// NLMSG_ERROR reply or a malformed message.
bool parse_unix_replies(const void* buf, size_t len, std::vector<UnixInfo>* out);

// One TCP or UDP socket (IPv4 or IPv6) as inet_diag reports it.
struct InetInfo {
  uint64_t ino = 0;
  uint8_t family = 0;    // AF_INET, AF_INET6
  uint8_t protocol = 0;  // IPPROTO_TCP, IPPROTO_UDP (as asked)
  uint8_t state = 0;     // TCP_* numbering (UDP: TCP_ESTABLISHED when connected, else TCP_CLOSE)
  uint8_t shutdown = 0;  // bit 0 RCV_SHUTDOWN, bit 1 SEND_SHUTDOWN
  std::string src, dst;  // raw address bytes: 4 (AF_INET) or 16 (AF_INET6)
  uint16_t sport = 0, dport = 0;  // host order
  uint32_t rqueue = 0;            // listen: connections in the accept queue; else bytes unread
  uint32_t wqueue = 0;            // listen: backlog; else bytes not yet acknowledged
  uint32_t ifindex = 0;           // bound device, 0 if none
  bool has_v6only = false, v6only = false;
};

// Parses a buffer of inet_diag replies (family and protocol as asked),
// appending to out; true once NLMSG_DONE is seen. Throws like
// parse_unix_replies.
bool parse_inet_replies(const void* buf, size_t len, uint8_t protocol, std::vector<InetInfo>* out);

// A NETLINK_SOCK_DIAG socket.
class SockDiag {
 public:
  SockDiag();
  // Every unix socket of our network namespace, with name, peer, queue
  // lengths, accept-queue inodes and the bound file.
  std::vector<UnixInfo> dump_unix();
  // Every socket of family (AF_INET, AF_INET6) and protocol (IPPROTO_TCP,
  // IPPROTO_UDP) in our network namespace, in every state.
  std::vector<InetInfo> dump_inet(uint8_t family, uint8_t protocol);

 private:
  // Sends a dump request and feeds every reply buffer to parse until it
  // returns true.
  template <class Parse>
  void request(const void* req, size_t len, Parse&& parse);
  UniqueFd fd_;
  uint32_t seq_ = 0;
};

}  // namespace ckpt::sockdiag
