// Connections waiting in a TCP listener's accept queue (not accepted yet),
// put back in the queue with the sequence numbers and options they had.
//
// How: a tcx ingress program on `lo` of the listener's network namespace
// calls the kfunc bpf_sk_assign_tcp_reqsk (Linux 6.9, the "arbitrary SYN
// cookie" interface) on a forged final ACK of a handshake, sent from the
// peer's address over a raw socket with the mark kLockBypassMark. The
// kernel then builds the child socket from that ACK and queues it on the
// listener: its initial sequence numbers come from the ACK (seq - 1,
// ack_seq - 1), mss / window scale / SACK / timestamps from the program's
// attributes; the unread bytes ride as the ACK's payload (and further
// segments), a peer FIN as a last segment. Nothing reaches the peer but an
// ACK of what it had already seen acknowledged (the network lock drops it
// anyway).
//
// Call order: available() once; then per listener an Injector (sets up in
// the listener's network namespace: tcp_syncookies on, program attached),
// inject() for each connection in queue order; the destructor detaches the
// program and puts tcp_syncookies back.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <memory>

#include "sockets.pb.h"
#include "sys/fd.h"
#include "sys/sock_diag.h"

namespace ckpt::acceptq {

// One TCP segment as the peer would send it, for the raw socket.
struct Segment {
  int family = 0;                  // of the packet: AF_INET or AF_INET6
  std::string src_addr, dst_addr;  // 4 or 16 bytes
  uint16_t src_port = 0, dst_port = 0;
  uint32_t seq = 0, ack = 0;
  uint16_t window = 0;  // as written in the header (already scaled down)
  bool fin = false;
  bool timestamps = false;
  uint32_t tsval = 0, tsecr = 0;
  std::string_view payload;
};
// The whole packet: IPv4 or IPv6 header, TCP header (with the timestamp
// option if asked), payload; lengths and both checksums filled in.
std::string build_segment(const Segment& s);

// Whether this kernel can put connections back (the kfunc exists and our
// program passes the verifier); why says what is missing. Cached.
bool available(std::string* why = nullptr);

class Injector {
 public:
  // listener: a descriptor of the listening socket (ours or a duplicate);
  // family: its family.
  Injector(int listener, uint32_t family);
  ~Injector();
  Injector(const Injector&) = delete;
  Injector& operator=(const Injector&) = delete;

  // Waits (up to wait_ms) until no handshake to the listener is half done
  // (no SYN_RECV request socket for its address and port): such a
  // connection would join the queue while we take it apart.
  void wait_no_handshakes(const std::string& addr, uint16_t port, int wait_ms);
  // Puts c at the tail of the listener's accept queue; checks with
  // sock_diag that it is there with its unread bytes.
  void inject(const img::QueuedConn& c);

 private:
  struct Prog {
    UniqueFd prog, link;
  };
  void attach(int packet_family);
  uint32_t family_;
  UniqueFd netns_;  // the listener's network namespace
  UniqueFd map_;
  Prog v4_, v6_;
  UniqueFd raw4_, raw6_;
  std::unique_ptr<sockdiag::SockDiag> diag_;  // opened in the namespace
  int lo_ = 0;
  std::string syncookies_saved_;  // non-empty: we changed tcp_syncookies
};

}  // namespace ckpt::acceptq
