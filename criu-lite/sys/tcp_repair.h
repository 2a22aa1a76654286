// TCP repair mode (TCP_REPAIR and friends): read and set the state of an
// established connection without the peer seeing anything. Thin wrappers,
// each throwing Error with the option's name; the logic is in
// objects/tcp.cc.
//
// Dump, on a socket that is ours or a duplicate (the same socket):
//   on(fd)                        no packet leaves it from now on; a close
//                                 while on sends neither FIN nor RST
//   info(fd), mss(fd), window(fd), timestamp(fd)
//   select_queue(fd, q); queue_seq(fd); peek_queue(fd, len)   for each queue
//   off(fd, false)                to let it carry on (--leave-running)
//
// Restore, on a fresh socket:
//   on(fd); bind
//   select_queue + set_queue_seq for both queues (first byte of each queue)
//   connect                       sets the peer, no SYN; state ESTABLISHED
//   set_options(mss, wscale, sack, timestamps)   before any data is queued
//   set_timestamp
//   select_queue + send           refills each queue (the receive queue as
//                                 if received, the send queue as sent)
//   set_window                    needs the final rcv_nxt
//   off(fd, true)                 when the task is about to run; sends a
//                                 window probe so the peer answers at once
#pragma once

#include <netinet/tcp.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ckpt::tcp_repair {

void on(int fd);
// with_probe: TCP_REPAIR_OFF (a window probe goes out) or TCP_REPAIR_OFF_NO_WP.
void off(int fd, bool with_probe);
// Like off(), but returns errno instead of throwing (for destructors).
int off_noexcept(int fd, bool with_probe);

void select_queue(int fd, int queue);  // TCP_RECV_QUEUE, TCP_SEND_QUEUE, TCP_NO_QUEUE
uint32_t queue_seq(int fd);            // of the selected queue
void set_queue_seq(int fd, uint32_t seq);
// Copies len bytes of the selected queue (MSG_PEEK: nothing is consumed).
std::string peek_queue(int fd, size_t len);

tcp_info info(int fd);
// TCP_MAXSEG; in repair mode the kernel returns the negotiated mss_clamp.
uint32_t mss(int fd);
tcp_repair_window window(int fd);
void set_window(int fd, const tcp_repair_window& w);
uint32_t timestamp(int fd);
void set_timestamp(int fd, uint32_t ts);
// TCP_REPAIR_OPTIONS: TCPOPT_MAXSEG / TCPOPT_WINDOW / TCPOPT_SACK_PERM /
// TCPOPT_TIMESTAMP entries, as the handshake would have negotiated them.
void set_options(int fd, const std::vector<tcp_repair_opt>& opts);

// Queue lengths: bytes not yet read (SIOCINQ), not yet acknowledged
// (SIOCOUTQ), and of those never sent (SIOCOUTQNSD).
uint32_t inq(int fd);
uint32_t outq(int fd);
uint32_t outq_unsent(int fd);

// Whether this kernel lets us use TCP_REPAIR (CAP_NET_ADMIN, CONFIG), for
// `ckpt check`.
bool available();

}  // namespace ckpt::tcp_repair
