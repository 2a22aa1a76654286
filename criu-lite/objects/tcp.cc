// TCP sockets, IPv4 and IPv6.
//
// Dump: sock_diag (by the socket's inode) gives the state, addresses and
// queue lengths; options are read with getsockopt on our pidfd_getfd
// duplicate (the same socket). A connection (ESTABLISHED, or half-closed:
// FIN_WAIT1/2, CLOSE_WAIT, CLOSING, LAST_ACK) needs --tcp-established: its
// packets are locked out first (net_lock.h), then the socket is put in
// repair mode (sys/tcp_repair.h) and its sequence numbers, negotiated
// options, window, timestamp clock and both queues are read. It stays in
// repair mode until the dump ends: killed with the tree it closes silently;
// with --leave-running it leaves repair mode before the thaw.
//
// Restore, all sockets at the first open() (in the controller): listening
// and unconnected sockets first, so that a connection bound to a
// listener's port never stands in the listener's way; then each connection
// in repair mode: bind, both queue sequence numbers, connect (no SYN),
// negotiated options, timestamp clock, the receive queue, the send queue
// (the part the peer may have seen as sent, the rest sent normally, which
// the lock drops), the window, then the shutdowns of a half-closed one.
// before_resume() takes them out of repair mode.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "image/record_file.h"
#include "objects/fd_kind.h"
#include "objects/inet_sockets.h"
#include "objects/net_lock.h"
#include "objects/tcp_accept_queue.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/tcp_repair.h"

namespace ckpt {

namespace {

constexpr uint32_t kSettable = O_NONBLOCK | O_ASYNC;
constexpr size_t kChunk = 64 * 1024;

const char* state_name(uint32_t s) {
  switch (s) {
    case TCP_ESTABLISHED:
      return "ESTABLISHED";
    case TCP_SYN_SENT:
      return "SYN_SENT";
    case TCP_SYN_RECV:
      return "SYN_RECV";
    case TCP_FIN_WAIT1:
      return "FIN_WAIT1";
    case TCP_FIN_WAIT2:
      return "FIN_WAIT2";
    case TCP_TIME_WAIT:
      return "TIME_WAIT";
    case TCP_CLOSE:
      return "CLOSE";
    case TCP_CLOSE_WAIT:
      return "CLOSE_WAIT";
    case TCP_LAST_ACK:
      return "LAST_ACK";
    case TCP_LISTEN:
      return "LISTEN";
    case TCP_CLOSING:
      return "CLOSING";
  }
  return "unknown";
}

// A connection: something repair mode can save.
bool connected_state(uint32_t s) {
  switch (s) {
    case TCP_ESTABLISHED:
    case TCP_FIN_WAIT1:
    case TCP_FIN_WAIT2:
    case TCP_CLOSE_WAIT:
    case TCP_CLOSING:
    case TCP_LAST_ACK:
      return true;
  }
  return false;
}
// We sent a FIN (it holds one sequence number after our data).
bool our_fin(uint32_t s) {
  return s == TCP_FIN_WAIT1 || s == TCP_FIN_WAIT2 || s == TCP_CLOSING || s == TCP_LAST_ACK;
}
// ... and the peer has not acknowledged it yet (it is still in the queue).
bool our_fin_unacked(uint32_t s) {
  return s == TCP_FIN_WAIT1 || s == TCP_CLOSING || s == TCP_LAST_ACK;
}
// The peer sent a FIN: reads end at EOF once the queue is read.
bool peer_fin(uint32_t s) {
  return s == TCP_CLOSE_WAIT || s == TCP_CLOSING || s == TCP_LAST_ACK;
}

std::string conn_text(const img::TcpSocket& t) {
  return inet::addr_port(t.family(), t.src_addr(), t.src_port()) + " <-> " +
         inet::addr_port(t.family(), t.dst_addr(), t.dst_port());
}

std::string conn_text(uint32_t family, const img::QueuedConn& q) {
  return inet::addr_port(family, q.peer_addr(), q.peer_port()) + " -> " +
         inet::addr_port(family, q.local_addr(), q.local_port());
}

// The packets of a connection as the lock matches them: a v4-mapped IPv6
// socket sends and receives IPv4 packets.
img::LockedConn locked_conn(const img::TcpSocket& t) {
  img::LockedConn c;
  c.set_protocol(IPPROTO_TCP);
  c.set_family(t.family());
  c.set_local_addr(t.src_addr());
  c.set_remote_addr(t.dst_addr());
  if (t.family() == AF_INET6 && inet::v4_mapped(t.src_addr())) {
    c.set_family(AF_INET);
    c.set_local_addr(t.src_addr().substr(12));
    c.set_remote_addr(t.dst_addr().substr(12));
  }
  c.set_local_port(t.src_port());
  c.set_remote_port(t.dst_port());
  return c;
}

void send_chunks(int fd, const std::string& data, size_t from, size_t len, const char* what) {
  size_t done = 0;
  while (done < len) {
    size_t n = std::min(kChunk, len - done);
    ssize_t r = retry_eintr(
        [&] { return send(fd, data.data() + from + done, n, MSG_DONTWAIT | MSG_NOSIGNAL); });
    if (r < 0) throw_errno(strfmt("%s: refill %zu bytes at %zu", what, len, done));
    done += static_cast<size_t>(r);
  }
}

// bind(), also to an address this host does not have (yet): a migrated
// container's address may come up after its sockets.
void bind_to(int fd, const img::TcpSocket& t) {
  sockaddr_storage a;
  socklen_t len = inet::make_sockaddr(t.family(), t.src_addr(), t.src_port(), &a, t.ifindex());
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), len) == 0) return;
  if (errno != EADDRNOTAVAIL)
    throw_errno("bind " + inet::addr_port(t.family(), t.src_addr(), t.src_port()));
  int one = 1;
  if (setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one)) != 0)
    throw_errno("setsockopt IP_FREEBIND");
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0)
    throw_errno("bind " + inet::addr_port(t.family(), t.src_addr(), t.src_port()));
  int saved = static_cast<int>(inet::opt_value(t.opts(), "IP_FREEBIND", 0));
  if (setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &saved, sizeof(saved)) != 0)
    throw_errno("setsockopt IP_FREEBIND");
}

class TcpSocketKind : public FdKind {
 public:
  const char* name() const override { return "tcp socket"; }

  // ---------------- dump ----------------

  bool matches(const FdProbe& p) const override {
    return p.is_inet() && p.sock_type == SOCK_STREAM && p.sock_protocol == IPPROTO_TCP &&
           diag_.find(p.st.st_ino);
  }

  void dump(const FdDumpArgs& a, img::FileDesc* d) override {
    const sockdiag::InetInfo* info = diag_.find(a.st.st_ino);
    if (!info) throw Error("socket vanished from sock_diag");
    auto* t = d->mutable_tcp_sk();
    t->set_ino(info->ino);
    t->set_family(info->family);
    t->set_state(info->state);
    t->set_shutdown(info->shutdown);
    t->set_src_port(info->sport);
    t->set_dst_port(info->dport);
    t->set_ifindex(info->ifindex);
    if (info->sport) t->set_src_addr(info->src);
    if (info->dport) t->set_dst_addr(info->dst);
    std::string who = strfmt("pid %d fd %d", a.task.pid, a.fd);
    inet::check_unsupported(a.local, IPPROTO_TCP);
    inet::save_opts(a.local, info->family, IPPROTO_TCP, info->state == TCP_LISTEN,
                    t->mutable_opts());

    uint32_t st = info->state;
    if (st == TCP_LISTEN) {
      t->set_backlog(info->wqueue);
      if (info->rqueue > 0) save_accept_queue(a, *info, t);
      return;
    }
    if (st == TCP_CLOSE) {
      t->set_bound(info->sport != 0);
      return;
    }
    if (!connected_state(st))
      throw Error(strfmt("TCP socket %s in state %s cannot be saved", conn_text(*t).c_str(),
                         state_name(st)));
    std::string conn = strfmt("%s %s (%s)", who.c_str(), conn_text(*t).c_str(), state_name(st));
    if (a.ctx.opts.tcp_close) {
      t->set_closed(true);
      return;
    }
    if (!a.ctx.opts.tcp_established) {
      unflagged_.push_back(conn);
      return;
    }
    if (!a.ctx.net_lock || !a.ctx.repaired) throw Error("no network lock in this dump");
    // Nothing may arrive (and be acknowledged) once we start reading.
    a.ctx.net_lock->add(lock_table_name(a.ctx.tasks.front()->pid), locked_conn(*t));
    tcp_repair::on(a.local);
    int dup = fcntl(a.local, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) throw_errno("dup");
    a.ctx.repaired->add(UniqueFd(dup), conn);
    img::InetQueue q;
    q.set_ino(info->ino);
    read_repair(a.local, st, t->mutable_repair(), &q);
    if (!q.recv().empty() || !q.send().empty()) queues_.push_back(std::move(q));
    LOG_DEBUG("%s: seq rcv %u snd %u, %u bytes to read, %u to send (%u never sent)", conn.c_str(),
              t->repair().rcv_seq(), t->repair().snd_seq(), t->repair().recv_len(),
              t->repair().send_len(), t->repair().unsent_len());
  }

  void finish_dump(DumpContext& ctx,
                   const std::vector<std::pair<const img::FileDesc*, int>>& descs) override {
    if (!unflagged_.empty()) {
      std::string list;
      for (const auto& c : unflagged_) list += (list.empty() ? "" : ", ") + c;
      throw Error(
          strfmt("%zu established TCP connection(s): %s; dump with --tcp-established to "
                 "save them (or --tcp-close to let them close)",
                 unflagged_.size(), list.c_str()));
    }
    if (queues_.empty()) return;
    image::RecordWriter w(kTcpQueuesImage, image::Kind::InetQueues);
    for (const auto& q : queues_) w.add(q);
    w.save(*ctx.sink);
  }

  // ---------------- restore ----------------

  bool owns(const img::FileDesc& d) const override { return d.has_tcp_sk(); }

  void load(const image::ImageSource& src) override {
    if (!src.exists(kTcpQueuesImage)) return;
    image::RecordReader r(src, kTcpQueuesImage, image::Kind::InetQueues);
    img::InetQueue q;
    while (r.next(q)) queues_in_[q.ino()] = q;
  }

  UniqueFd open(const img::FileDesc& d, FdRestoreState& st) override {
    if (!built_) {
      built_ = true;
      build(st);
    }
    auto it = fds_.find(d.tcp_sk().ino());
    if (it == fds_.end() || !it->second) throw Error("socket was not created");
    UniqueFd out = std::move(it->second);
    if (fcntl(out.get(), F_SETFL, d.flags() & kSettable) != 0) throw_errno("set flags");
    return out;
  }

  void before_resume() override {
    for (auto& r : repaired_)
      in_context(r.who, [&] {
        tcp_repair::off(r.fd.get(), true);
        // Leaving repair mode forgets SO_REUSEADDR.
        int reuse = static_cast<int>(inet::opt_value(r.t->opts(), "SO_REUSEADDR", 0));
        if (reuse && setsockopt(r.fd.get(), SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof(reuse)) != 0)
          throw_errno("setsockopt SO_REUSEADDR");
      });
    repaired_.clear();
  }

 private:
  // The connections waiting in a listener's accept queue, oldest first:
  // each is taken out (accept on our duplicate), locked, read in repair
  // mode, and put back at once (objects/tcp_accept_queue.h). At once, not
  // after the dump: with --leave-running, and when the dump fails, the
  // application must find its queue as it was, and only we could put it
  // back.
  void save_accept_queue(const FdDumpArgs& a, const sockdiag::InetInfo& info, img::TcpSocket* t) {
    std::string where = inet::addr_port(info.family, info.src, info.sport);
    std::string why;
    if (!a.ctx.opts.tcp_established)
      throw Error(
          strfmt("listening on %s with %u connection(s) not accepted yet: dump with "
                 "--tcp-established to save them",
                 where.c_str(), info.rqueue));
    if (!acceptq::available(&why))
      throw Error(
          strfmt("listening on %s with %u connection(s) not accepted yet: connections "
                 "waiting in an accept queue cannot be restored on this kernel (%s)",
                 where.c_str(), info.rqueue, why.c_str()));
    if (!a.ctx.net_lock || !a.ctx.repaired) throw Error("no network lock in this dump");
    in_context("accept queue of " + where, [&] {
      acceptq::Injector inj(a.local, info.family);
      inj.wait_no_handshakes(info.src, info.sport, 1000);
      struct Taken {
        UniqueFd fd;  // in repair mode: closing it sends nothing
        img::QueuedConn q;
        bool read = false;
      };
      std::vector<Taken> taken;
      auto put_back = [&] {
        for (auto& k : taken) k.fd.reset();
        for (auto& k : taken)
          if (k.read) {
            in_context(conn_text(info.family, k.q), [&] { inj.inject(k.q); });
            k.read = false;
            *t->add_queued() = k.q;
          }
      };
      try {
        // Exactly as many as were queued: those we put back join the tail.
        for (uint32_t i = 0; i < info.rqueue; i++) {
          int fd = accept4(a.local, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
          if (fd < 0 && errno == EAGAIN) break;  // reset by its peer meanwhile
          if (fd < 0) throw_errno("accept4 on our duplicate of the listener");
          Taken& k = taken.emplace_back();
          k.fd.reset(fd);
          read_queued(a, info.family, k.fd.get(), &k.q);
          k.read = true;
        }
      } catch (...) {
        // What was read goes back; a connection that failed half way is lost.
        try {
          put_back();
        } catch (const std::exception& e) {
          LOG_ERROR("accept queue of %s: %s", where.c_str(), e.what());
        }
        throw;
      }
      put_back();
    });
    LOG_DEBUG("%s: %d connection(s) in the accept queue saved and put back", where.c_str(),
              t->queued_size());
  }

  // One connection just accepted from a queue: locked, in repair mode, read.
  void read_queued(const FdDumpArgs& a, uint32_t family, int fd, img::QueuedConn* q) {
    sockaddr_storage l{}, p{};
    socklen_t ll = sizeof(l), pl = sizeof(p);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&l), &ll) != 0 ||
        getpeername(fd, reinterpret_cast<sockaddr*>(&p), &pl) != 0)
      throw_errno("addresses of a queued connection");
    auto raw = [&](const sockaddr_storage& s, std::string* addr, uint32_t* port) {
      if (s.ss_family == AF_INET6) {
        auto* s6 = reinterpret_cast<const sockaddr_in6*>(&s);
        addr->assign(reinterpret_cast<const char*>(&s6->sin6_addr), 16);
        *port = ntohs(s6->sin6_port);
      } else {
        auto* s4 = reinterpret_cast<const sockaddr_in*>(&s);
        addr->assign(reinterpret_cast<const char*>(&s4->sin_addr), 4);
        *port = ntohs(s4->sin_port);
      }
    };
    uint32_t lport = 0, pport = 0;
    raw(l, q->mutable_local_addr(), &lport);
    raw(p, q->mutable_peer_addr(), &pport);
    q->set_local_port(lport);
    q->set_peer_port(pport);
    img::TcpSocket as;
    as.set_family(family);
    as.set_src_addr(q->local_addr());
    as.set_src_port(q->local_port());
    as.set_dst_addr(q->peer_addr());
    as.set_dst_port(q->peer_port());
    in_context(conn_text(family, *q), [&] {
      // Nothing may arrive (and be acknowledged) once we start reading.
      a.ctx.net_lock->add(lock_table_name(a.ctx.tasks.front()->pid), locked_conn(as));
      tcp_repair::on(fd);
      uint32_t st = tcp_repair::info(fd).tcpi_state;
      if (st != TCP_ESTABLISHED && st != TCP_CLOSE_WAIT)
        throw Error(strfmt("queued connection in state %s cannot be saved", state_name(st)));
      q->set_state(st);
      img::InetQueue iq;
      read_repair(fd, st, q->mutable_repair(), &iq);
      if (q->repair().send_len() != 0)
        throw Error("queued connection with data of ours not acknowledged");
      q->set_recv(iq.recv());
    });
  }

  // Reads what repair mode shows of a connection; q gets both queues.
  void read_repair(int fd, uint32_t st, img::TcpRepair* r, img::InetQueue* q) {
    tcp_repair::select_queue(fd, TCP_RECV_QUEUE);
    r->set_rcv_seq(tcp_repair::queue_seq(fd));
    uint32_t inq = tcp_repair::inq(fd);
    q->set_recv(tcp_repair::peek_queue(fd, inq));
    r->set_recv_len(inq);

    tcp_repair::select_queue(fd, TCP_SEND_QUEUE);
    r->set_snd_seq(tcp_repair::queue_seq(fd));
    uint32_t outq = tcp_repair::outq(fd);
    uint32_t unsent = tcp_repair::outq_unsent(fd);
    // A FIN not acknowledged yet counts one in the queue length but is no byte.
    if (our_fin_unacked(st)) {
      if (outq == 0) throw Error("FIN not acknowledged but the send queue is empty");
      outq--;
      if (unsent > 0) unsent--;
    }
    q->set_send(tcp_repair::peek_queue(fd, outq));
    r->set_send_len(outq);
    r->set_unsent_len(unsent);
    tcp_repair::select_queue(fd, TCP_NO_QUEUE);

    tcp_info ti = tcp_repair::info(fd);
    r->set_sack(ti.tcpi_options & TCPI_OPT_SACK);
    r->set_timestamps(ti.tcpi_options & TCPI_OPT_TIMESTAMPS);
    r->set_wscale(ti.tcpi_options & TCPI_OPT_WSCALE);
    r->set_snd_wscale(ti.tcpi_snd_wscale);
    r->set_rcv_wscale(ti.tcpi_rcv_wscale);
    r->set_mss(tcp_repair::mss(fd));
    if (r->timestamps()) r->set_timestamp(tcp_repair::timestamp(fd));
    tcp_repair_window w = tcp_repair::window(fd);
    r->set_snd_wl1(w.snd_wl1);
    r->set_snd_wnd(w.snd_wnd);
    r->set_max_window(w.max_window);
    r->set_rcv_wnd(w.rcv_wnd);
    r->set_rcv_wup(w.rcv_wup);
  }

  void build(FdRestoreState& st) {
    std::vector<const img::TcpSocket*> first, later;
    for (auto& [id, d] : st.descs)
      if (d.has_tcp_sk()) {
        const img::TcpSocket& t = d.tcp_sk();
        (t.state() == TCP_LISTEN || t.state() == TCP_CLOSE || t.closed() ? first : later)
            .push_back(&t);
      }
    for (const auto* t : first)
      in_context(strfmt("socket:[%llu] %s", static_cast<unsigned long long>(t->ino()),
                        conn_text(*t).c_str()),
                 [&] { fds_[t->ino()] = open_unconnected(*t); });
    for (const auto* t : later)
      in_context(strfmt("socket:[%llu] %s", static_cast<unsigned long long>(t->ino()),
                        conn_text(*t).c_str()),
                 [&] { fds_[t->ino()] = open_connection(*t); });
  }

  static UniqueFd new_socket(const img::TcpSocket& t) {
    int fd = socket(static_cast<int>(t.family()), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw_errno("socket");
    return UniqueFd(fd);
  }

  // Listening, bound or never connected; --tcp-close: a fresh socket that
  // is not connected (reads and writes fail as after a reset).
  UniqueFd open_unconnected(const img::TcpSocket& t) {
    UniqueFd fd = new_socket(t);
    inet::restore_opts(fd.get(), t.opts());
    if (t.closed()) return fd;
    if (t.state() == TCP_LISTEN || t.bound()) bind_to(fd.get(), t);
    if (t.state() == TCP_LISTEN && listen(fd.get(), static_cast<int>(t.backlog())) != 0)
      throw_errno("listen");
    if (t.queued_size() > 0)
      in_context("accept queue", [&] {
        acceptq::Injector inj(fd.get(), t.family());
        for (const auto& q : t.queued())
          in_context(conn_text(t.family(), q), [&] { inj.inject(q); });
      });
    return fd;
  }

  UniqueFd open_connection(const img::TcpSocket& t) {
    if (!t.has_repair()) throw Error("connection without its repair state in the image");
    const img::TcpRepair& r = t.repair();
    static const img::InetQueue kEmpty;
    auto qi = queues_in_.find(t.ino());
    const img::InetQueue& q = qi == queues_in_.end() ? kEmpty : qi->second;
    if (q.recv().size() != r.recv_len() || q.send().size() != r.send_len() ||
        r.unsent_len() > r.send_len())
      throw Error("queue sizes in the image do not match");
    UniqueFd sock = new_socket(t);
    int fd = sock.get();
    // Options first: SO_REUSEADDR would undo the forced reuse repair mode
    // gives (the port may still be bound by the listener it came from).
    inet::restore_opts(fd, t.opts());
    inet::grow_buf(fd, true, 2 * r.send_len() + (1u << 20));
    inet::grow_buf(fd, false, 2 * r.recv_len() + (1u << 20));
    tcp_repair::on(fd);
    bind_to(fd, t);
    uint32_t snd_seq = r.snd_seq() - (our_fin(t.state()) ? 1 : 0);  // FIN comes back last
    tcp_repair::select_queue(fd, TCP_RECV_QUEUE);
    tcp_repair::set_queue_seq(fd, r.rcv_seq() - r.recv_len());
    tcp_repair::select_queue(fd, TCP_SEND_QUEUE);
    tcp_repair::set_queue_seq(fd, snd_seq - r.send_len());
    sockaddr_storage peer;
    socklen_t plen =
        inet::make_sockaddr(t.family(), t.dst_addr(), t.dst_port(), &peer, t.ifindex());
    if (connect(fd, reinterpret_cast<sockaddr*>(&peer), plen) != 0)
      throw_errno("connect in repair mode");

    std::vector<tcp_repair_opt> opts;
    opts.push_back({TCPOPT_MAXSEG, r.mss()});
    if (r.wscale()) opts.push_back({TCPOPT_WINDOW, r.snd_wscale() | (r.rcv_wscale() << 16)});
    if (r.sack()) opts.push_back({TCPOPT_SACK_PERMITTED, 0});
    if (r.timestamps()) opts.push_back({TCPOPT_TIMESTAMP, 0});
    tcp_repair::set_options(fd, opts);
    if (r.timestamps()) tcp_repair::set_timestamp(fd, r.timestamp());

    tcp_repair::select_queue(fd, TCP_RECV_QUEUE);
    send_chunks(fd, q.recv(), 0, q.recv().size(), "receive queue");
    // The part the peer may have seen goes in as sent (it is retransmitted
    // if not acknowledged); the rest was never sent: it is sent normally,
    // out of repair mode, into the lock.
    size_t sent = r.send_len() - r.unsent_len();
    tcp_repair::select_queue(fd, TCP_SEND_QUEUE);
    send_chunks(fd, q.send(), 0, sent, "send queue");
    if (r.unsent_len()) {
      tcp_repair::off(fd, false);
      send_chunks(fd, q.send(), sent, r.unsent_len(), "send queue (unsent part)");
      tcp_repair::on(fd);
    }
    tcp_repair_window w{};
    w.snd_wl1 = r.snd_wl1();
    w.snd_wnd = r.snd_wnd();
    w.max_window = r.max_window();
    w.rcv_wnd = r.rcv_wnd();
    w.rcv_wup = r.rcv_wup();
    tcp_repair::set_window(fd, w);
    if (our_fin(t.state())) {
      // In repair mode with the send queue selected the FIN is queued as
      // sent: it is retransmitted until the peer acknowledges it (again).
      tcp_repair::select_queue(fd, TCP_SEND_QUEUE);
      if (shutdown(fd, SHUT_WR) != 0) throw_errno("shutdown(SHUT_WR)");
    }
    if ((peer_fin(t.state()) || (t.shutdown() & 1)) && shutdown(fd, SHUT_RD) != 0)
      throw_errno("shutdown(SHUT_RD)");
    tcp_repair::select_queue(fd, TCP_NO_QUEUE);
    // The buffer sizes it had (the queues needed larger ones for a moment).
    google::protobuf::RepeatedPtrField<img::SockOpt> bufs;
    for (const auto& o : t.opts())
      if (o.name() == "SO_SNDBUF" || o.name() == "SO_RCVBUF") *bufs.Add() = o;
    inet::restore_opts(fd, bufs);

    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) throw_errno("dup");
    repaired_.push_back({UniqueFd(dup), &t,
                         strfmt("socket:[%llu] %s", static_cast<unsigned long long>(t.ino()),
                                conn_text(t).c_str())});
    return sock;
  }

  // dump
  inet::Diag diag_{IPPROTO_TCP};
  std::vector<std::string> unflagged_;
  std::vector<img::InetQueue> queues_;
  // restore
  struct Repaired {
    UniqueFd fd;
    const img::TcpSocket* t;
    std::string who;
  };
  bool built_ = false;
  std::map<uint64_t, img::InetQueue> queues_in_;
  std::map<uint64_t, UniqueFd> fds_;
  std::vector<Repaired> repaired_;
};

}  // namespace

std::unique_ptr<FdKind> make_tcp_socket_kind() {
  return std::make_unique<TcpSocketKind>();
}

}  // namespace ckpt
