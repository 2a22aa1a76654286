// Unix domain sockets.
//
// Dump: sock_diag says what a process cannot read from its fd: the bound
// name, the peer inode, queue lengths and the clients waiting in a
// listener's accept queue. The bytes and messages queued for reading are
// peeked from our pidfd_getfd duplicate (the same socket) with SO_PEEK_OFF,
// which is put back as it was; they go to unix-queues.img in finish_dump.
//
// Restore, all at once when the first unix description is opened (in the
// controller, before the tree is forked):
//   1. every socket that was bound by bind() is bound again (a stale socket
//      file is unlinked first, mode and owner are set again); listeners
//      listen;
//   2. connected stream/seqpacket pairs: a client is connected to its
//      listener and the server side accepted from it, so both ends get their
//      real names; unnamed pairs are socketpair()s; a socket whose peer was
//      closed is one end of a pair whose other end is closed once its queue
//      is refilled;
//   3. connections that waited in an accept queue connect again, in order;
//   4. datagram sockets are connected again by name;
//   5. queues are refilled by sending the saved data from the peer (or, for
//      a datagram socket anyone may send to, from the named sender or an
//      unbound helper socket);
//   6. options: SO_PASSCRED, buffer sizes, backlog, shutdown, SO_PEEK_OFF.
#include <fcntl.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <map>
#include <set>

#include "image/record_file.h"
#include "objects/fd_kind.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/sock_diag.h"

namespace ckpt {

namespace {

constexpr const char* kUnixQueuesImage = "unix-queues.img";
constexpr uint32_t kSettable = O_NONBLOCK | O_ASYNC;
// Socket states as sock_diag reports them (the TCP numbering).
constexpr uint32_t TCP_ESTABLISHED = 1;
constexpr uint32_t TCP_LISTEN = 10;

bool stream_like(uint32_t type) {
  return type == SOCK_STREAM || type == SOCK_SEQPACKET;
}

std::string sk_label(uint64_t ino) {
  return strfmt("socket:[%llu]", static_cast<unsigned long long>(ino));
}

// A printable socket name: "@abstract" or the path.
std::string printable(const std::string& name) {
  if (name.empty()) return "(unbound)";
  std::string out = name[0] == '\0' ? "@" + name.substr(1) : name;
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20) c = '?';
  return out;
}

bool is_path(const std::string& name) {
  return !name.empty() && name[0] != '\0';
}

socklen_t make_addr(const std::string& name, sockaddr_un* a) {
  *a = sockaddr_un{};
  a->sun_family = AF_UNIX;
  if (name.size() > sizeof(a->sun_path)) throw Error("socket name too long: " + printable(name));
  memcpy(a->sun_path, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
}

int get_int_opt(int fd, int level, int opt, const char* what) {
  int v = 0;
  socklen_t len = sizeof(v);
  if (getsockopt(fd, level, opt, &v, &len) != 0) throw_errno(std::string("getsockopt ") + what);
  return v;
}

void set_int_opt(int fd, int level, int opt, int v, const char* what) {
  if (setsockopt(fd, level, opt, &v, sizeof(v)) != 0)
    throw_errno(strfmt("setsockopt %s %d", what, v));
}

// Sets SO_SNDBUF/SO_RCVBUF so that getsockopt says `want` (the kernel
// doubles what is set). The FORCE variants need CAP_NET_ADMIN; without it
// the plain ones are clamped by net.core.[wr]mem_max.
void set_buf(int fd, bool snd, uint32_t want) {
  int opt = snd ? SO_SNDBUF : SO_RCVBUF;
  if (want == 0 || get_int_opt(fd, SOL_SOCKET, opt, "buf") == static_cast<int>(want)) return;
  int v = static_cast<int>(want / 2);
  if (setsockopt(fd, SOL_SOCKET, snd ? SO_SNDBUFFORCE : SO_RCVBUFFORCE, &v, sizeof(v)) == 0) return;
  set_int_opt(fd, SOL_SOCKET, opt, v, snd ? "SO_SNDBUF" : "SO_RCVBUF");
}

// Any fds or unexpected control data in a peeked message: refuse.
void check_cmsgs(msghdr& m) {
  bool rights = false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      rights = true;
      size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      auto* fds = reinterpret_cast<int*>(CMSG_DATA(c));
      for (size_t i = 0; i < n; i++) close(fds[i]);
    }
  }
  if (rights || (m.msg_flags & MSG_CTRUNC))
    throw Error("file descriptors are queued in it (SCM_RIGHTS): fds in flight are not supported");
}

// Reads the receive queue of fd without consuming it, using SO_PEEK_OFF,
// and puts the peek offset back as it was.
img::UnixQueue read_queue(int fd, const sockdiag::UnixInfo& u, int saved_peek_off) {
  img::UnixQueue q;
  q.set_ino(u.ino);
  struct PutBack {
    int fd, off;
    ~PutBack() { setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off)); }
  } put_back{fd, saved_peek_off};

  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 253) + CMSG_SPACE(64) * 2];
  std::string buf(u.type == SOCK_STREAM ? std::max<size_t>(u.rqueue, 1) : 65536, '\0');
  size_t off = 0;
  for (int guard = 0;; guard++) {
    if (guard > 10000000) throw Error("peek: too many messages");
    if (u.type == SOCK_STREAM && off >= u.rqueue) break;
    set_int_opt(fd, SOL_SOCKET, SO_PEEK_OFF, static_cast<int>(off), "SO_PEEK_OFF");
    sockaddr_un from{};
    iovec iov{buf.data() + (u.type == SOCK_STREAM ? off : 0),
              u.type == SOCK_STREAM ? u.rqueue - off : buf.size()};
    msghdr m{};
    m.msg_name = &from;
    m.msg_namelen = sizeof(from);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = cbuf;
    m.msg_controllen = sizeof(cbuf);
    int flags = MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC;
    if (u.type != SOCK_STREAM) flags |= MSG_TRUNC;
    ssize_t n = retry_eintr([&] { return recvmsg(fd, &m, flags); });
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0) throw_errno("peek at the receive queue");
    check_cmsgs(m);
    if (u.type == SOCK_STREAM) {
      if (n == 0) break;
      off += static_cast<size_t>(n);
      continue;
    }
    if (m.msg_flags & MSG_TRUNC) {  // n is the real length: peek it again
      buf.resize(static_cast<size_t>(n));
      continue;
    }
    if (n == 0) throw Error("an empty message is queued in it: not supported");
    auto* p = q.add_packets();
    p->set_data(buf.data(), static_cast<size_t>(n));
    if (m.msg_namelen > offsetof(sockaddr_un, sun_path))
      p->set_sender(from.sun_path, m.msg_namelen - offsetof(sockaddr_un, sun_path));
    off += static_cast<size_t>(n);
  }
  if (u.type == SOCK_STREAM) {
    if (off != u.rqueue)
      throw Error(strfmt("read %zu of the %u bytes queued in it", off, u.rqueue));
    buf.resize(off);
    q.set_stream(std::move(buf));
  }
  return q;
}

// Sends all of data on fd (never blocks: the sender's buffer is made large
// enough first).
void send_all(int fd, const std::string& data, const std::string* to, const std::string& what) {
  sockaddr_un a;
  socklen_t alen = to ? make_addr(*to, &a) : 0;
  size_t done = 0;
  do {
    ssize_t n = retry_eintr([&] {
      return sendto(fd, data.data() + done, data.size() - done, MSG_DONTWAIT | MSG_NOSIGNAL,
                    to ? reinterpret_cast<sockaddr*>(&a) : nullptr, alen);
    });
    if (n < 0) throw_errno(what + ": refill the queue");
    done += static_cast<size_t>(n);
  } while (done < data.size());
}

UniqueFd new_socket(uint32_t type) {
  int fd = socket(AF_UNIX, static_cast<int>(type) | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_errno("socket(AF_UNIX)");
  return UniqueFd(fd);
}

class UnixSocketKind : public FdKind {
 public:
  const char* name() const override { return "unix socket"; }

  // ---------------- dump ----------------

  bool matches(const FdProbe& p) const override {
    return p.sock_family == AF_UNIX && lookup(p.st.st_ino) != nullptr;
  }

  void dump(const FdDumpArgs& a, img::FileDesc* d) override {
    const sockdiag::UnixInfo* info = lookup(a.st.st_ino);
    if (!info) throw Error("socket vanished from sock_diag");
    const sockdiag::UnixInfo& u = *info;
    owner_[u.ino] = strfmt("pid %d fd %d", a.task.pid, a.fd);
    auto* s = d->mutable_unix_sk();
    s->set_ino(u.ino);
    s->set_type(u.type);
    s->set_state(u.state);
    s->set_name(u.name);
    s->set_shutdown(u.shutdown);
    s->set_passcred(get_int_opt(a.local, SOL_SOCKET, SO_PASSCRED, "SO_PASSCRED") != 0);
    s->set_sndbuf(static_cast<uint32_t>(get_int_opt(a.local, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF")));
    s->set_rcvbuf(static_cast<uint32_t>(get_int_opt(a.local, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF")));
    int peek_off = get_int_opt(a.local, SOL_SOCKET, SO_PEEK_OFF, "SO_PEEK_OFF");
    s->set_peek_off(peek_off);
    if (u.type != SOCK_STREAM && u.type != SOCK_DGRAM && u.type != SOCK_SEQPACKET)
      throw Error(strfmt("unix socket of type %u is not supported", u.type));

    if (u.state == TCP_LISTEN) {
      s->set_backlog(u.wqueue);
      for (uint32_t c : u.icons) s->add_icons(c);
    }
    if (u.has_peer && u.peer != 0) {
      s->set_peer_ino(u.peer);
      if (const auto* p = lookup(u.peer)) s->set_peer_name(p->name);
    } else if (u.has_peer && u.state == TCP_ESTABLISHED) {
      // Peer inode 0: an embryo (we wait in an accept queue) or a closed peer.
      for (const auto& [ino, l] : diag_)
        if (l.state == TCP_LISTEN)
          for (uint32_t c : l.icons)
            if (c == u.ino) {
              s->set_pending(true);
              s->set_listener_ino(ino);
              s->set_peer_name(l.name);
            }
      if (!s->pending()) s->set_peer_gone(true);
      if (s->pending() && u.wqueue != 0)
        throw Error(
            strfmt("%u bytes were sent on a connection that waits in the accept "
                   "queue of %s: not supported",
                   u.wqueue, printable(s->peer_name()).c_str()));
    }
    if (stream_like(u.type) && u.state == TCP_ESTABLISHED && !u.name.empty()) {
      bool listener = false;
      for (const auto& [ino, l] : diag_)
        if (l.state == TCP_LISTEN && l.type == u.type && l.name == u.name) listener = true;
      const sockdiag::UnixInfo* p = s->peer_ino() ? lookup(s->peer_ino()) : nullptr;
      s->set_accepted(listener || s->peer_gone() || (p && p->name.empty()));
    }
    if (is_path(u.name) && !s->accepted()) {
      std::string path = u.name;
      if (path[0] != '/') {
        std::string cwd = read_link(strfmt("/proc/%d/cwd", a.task.pid));
        s->set_bind_dir(cwd);
        path = cwd + "/" + path;
      }
      struct stat fst {};
      if (lstat(path.c_str(), &fst) == 0 && S_ISSOCK(fst.st_mode) &&
          (!u.has_vfs || fst.st_ino == u.vfs_ino)) {
        s->set_file_mode(fst.st_mode & 07777);
        s->set_file_uid(fst.st_uid);
        s->set_file_gid(fst.st_gid);
      } else {
        s->set_file_missing(true);
      }
    }
    if (u.state != TCP_LISTEN) {
      img::UnixQueue q = read_queue(a.local, u, peek_off);
      if (!q.stream().empty() || q.packets_size() > 0) queues_.push_back(std::move(q));
    }
  }

  void finish_dump(DumpContext& ctx,
                   const std::vector<std::pair<const img::FileDesc*, int>>& descs) override {
    std::map<uint64_t, const img::UnixSocket*> tree;
    for (auto& [d, local] : descs)
      if (d->has_unix_sk()) tree[d->unix_sk().ino()] = &d->unix_sk();
    for (const auto& [ino, s] : tree) {
      std::string who = owner_[ino] + ": " + sk_label(ino);
      if (s->peer_ino() && !tree.count(s->peer_ino())) {
        if (s->type() == SOCK_DGRAM && !s->peer_name().empty()) continue;  // reconnected by name
        std::string peer = sk_label(s->peer_ino());
        if (!s->peer_name().empty()) peer += " (" + printable(s->peer_name()) + ")";
        throw Error(
            strfmt("%s is connected to %s outside the dumped tree; dump the "
                   "process at the other end too",
                   who.c_str(), peer.c_str()));
      }
      if (s->pending() && !tree.count(s->listener_ino()))
        throw Error(strfmt("%s waits to be accepted by %s outside the dumped tree", who.c_str(),
                           printable(s->peer_name()).c_str()));
      for (uint64_t c : s->icons())
        if (!tree.count(c))
          throw Error(
              strfmt("%s (%s) has a connection from %s outside the dumped tree in "
                     "its accept queue",
                     who.c_str(), printable(s->name()).c_str(), sk_label(c).c_str()));
      if (s->type() == SOCK_DGRAM && s->peer_ino() && s->peer_name().empty()) {
        const img::UnixSocket* p = tree.at(s->peer_ino());
        if (p->peer_ino() != ino)
          throw Error(who + " is connected to an unnamed socket that is not connected back");
      }
    }
    if (tree.empty()) return;
    image::RecordWriter w(kUnixQueuesImage, image::Kind::UnixQueues);
    for (const auto& q : queues_) w.add(q);
    w.save(*ctx.sink);
  }

  // ---------------- restore ----------------

  bool owns(const img::FileDesc& d) const override { return d.has_unix_sk(); }

  void load(const image::ImageSource& src) override {
    if (!src.exists(kUnixQueuesImage)) return;
    image::RecordReader r(src, kUnixQueuesImage, image::Kind::UnixQueues);
    img::UnixQueue q;
    while (r.next(q)) loaded_queues_[q.ino()] = q;
  }

  UniqueFd open(const img::FileDesc& d, FdRestoreState& st) override {
    if (!built_) {
      built_ = true;
      build(st);
    }
    auto it = sks_.find(d.unix_sk().ino());
    if (it == sks_.end() || !it->second.fd) throw Error("socket was not created");
    UniqueFd out = std::move(it->second.fd);
    if (fcntl(out.get(), F_SETFL, d.flags() & kSettable) != 0) throw_errno("set flags");
    return out;
  }

 private:
  struct Sk {
    uint32_t id = 0;
    const img::UnixSocket* u = nullptr;
    UniqueFd fd;
  };

  Sk& sk(uint64_t ino, const std::string& who) {
    auto it = sks_.find(ino);
    if (it == sks_.end()) throw Error(who + ": its peer " + sk_label(ino) + " is not in the image");
    return it->second;
  }

  // Binds fd to name; a stale socket file at a path is unlinked first.
  void bind_to(int fd, const img::UnixSocket& u, const std::string& name) {
    sockaddr_un a;
    socklen_t len = make_addr(name, &a);
    std::string full = name;
    if (is_path(name) && name[0] != '/' && !u.bind_dir().empty()) full = u.bind_dir() + "/" + name;
    if (is_path(name)) {
      struct stat fst {};
      if (lstat(full.c_str(), &fst) == 0) {
        if (!S_ISSOCK(fst.st_mode))
          throw Error(full + " exists and is not a socket: cannot bind there");
        if (unlink(full.c_str()) != 0) throw_errno("unlink stale socket file " + full);
      }
    }
    int rc;
    if (is_path(name) && name[0] != '/' && !u.bind_dir().empty()) {
      UniqueFd cwd = open_or_throw(".", O_PATH | O_DIRECTORY);
      if (chdir(u.bind_dir().c_str()) != 0) throw_errno("chdir " + u.bind_dir());
      rc = bind(fd, reinterpret_cast<sockaddr*>(&a), len);
      int err = errno;
      if (fchdir(cwd.get()) != 0) throw_errno("fchdir back");
      errno = err;
    } else {
      rc = bind(fd, reinterpret_cast<sockaddr*>(&a), len);
    }
    if (rc != 0) throw_errno("bind " + printable(name));
    if (is_path(name)) {
      if (u.file_missing()) {
        unlink(full.c_str());
      } else {
        if (chmod(full.c_str(), u.file_mode()) != 0) throw_errno("chmod " + full);
        if (lchown(full.c_str(), u.file_uid(), u.file_gid()) != 0) throw_errno("chown " + full);
      }
    }
  }

  void connect_to(int fd, const std::string& name, const std::string& who) {
    sockaddr_un a;
    socklen_t len = make_addr(name, &a);
    if (retry_eintr([&] { return connect(fd, reinterpret_cast<sockaddr*>(&a), len); }) != 0)
      throw_errno(who + ": connect to " + printable(name));
  }

  // The listening socket of the tree at name, or -1.
  int tree_listener(const std::string& name, uint32_t type) {
    for (auto& [ino, s] : sks_)
      if (s.u->state() == TCP_LISTEN && s.u->type() == type && s.u->name() == name && s.fd)
        return s.fd.get();
    return -1;
  }

  // Makes the connected pair (server, client): client connects to the
  // listener at server's name, the server side is accepted from it. client
  // may be nullptr (peer gone): a helper client is returned.
  UniqueFd connect_accepted(Sk& server, Sk* client) {
    const img::UnixSocket& su = *server.u;
    std::string who = sk_label(su.ino());
    int lfd = tree_listener(su.name(), su.type());
    UniqueFd temp_listener;
    if (lfd < 0) {
      // The listener is gone: a helper listener at the same name.
      temp_listener = new_socket(su.type());
      img::UnixSocket none;
      none.set_bind_dir(su.bind_dir());
      none.set_file_missing(true);
      bind_to(temp_listener.get(), none, su.name());
      if (listen(temp_listener.get(), 1) != 0) throw_errno(who + ": listen");
      lfd = temp_listener.get();
    }
    UniqueFd helper;
    int cfd;
    if (client) {
      if (!client->fd) client->fd = new_socket(client->u->type());
      cfd = client->fd.get();
    } else {
      helper = new_socket(su.type());
      cfd = helper.get();
    }
    connect_to(cfd, su.name(), who);
    int afd = retry_eintr([&] { return accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC); });
    if (afd < 0) throw_errno(who + ": accept");
    server.fd.reset(afd);
    return helper;
  }

  void build(FdRestoreState& st) {
    for (auto& [id, d] : st.descs)
      if (d.has_unix_sk()) {
        Sk& s = sks_[d.unix_sk().ino()];
        s.id = id;
        s.u = &d.unix_sk();
      }
    // 1. bound sockets and listeners.
    for (auto& [ino, s] : sks_) {
      const img::UnixSocket& u = *s.u;
      if (u.name().empty() || u.accepted()) continue;
      in_context(sk_label(ino) + " " + printable(u.name()), [&] {
        s.fd = new_socket(u.type());
        bind_to(s.fd.get(), u, u.name());
        if (u.state() == TCP_LISTEN &&
            listen(s.fd.get(), static_cast<int>(u.backlog() + u.icons_size() + 8)) != 0)
          throw_errno("listen");
      });
    }
    // 2. connected stream and seqpacket pairs.
    std::set<uint64_t> filled;
    for (auto& [ino, s] : sks_) {
      const img::UnixSocket& u = *s.u;
      if (!stream_like(u.type()) || u.state() != TCP_ESTABLISHED || u.pending()) continue;
      if (s.fd && !u.peer_gone() && u.peer_ino() && sk(u.peer_ino(), sk_label(ino)).fd) continue;
      std::string who = sk_label(ino);
      in_context(who, [&] {
        if (u.peer_gone()) {
          UniqueFd other;
          if (u.accepted()) {
            other = connect_accepted(s, nullptr);
          } else {
            int sv[2];
            if (socketpair(AF_UNIX, static_cast<int>(u.type()) | SOCK_CLOEXEC, 0, sv) != 0)
              throw_errno("socketpair");
            s.fd.reset(sv[0]);
            other.reset(sv[1]);
          }
          fill(s, other.get(), nullptr);
          filled.insert(ino);
          return;  // closing `other` leaves s with a closed peer, as at dump
        }
        Sk& p = sk(u.peer_ino(), who);
        if (u.accepted() && !p.u->accepted()) {
          connect_accepted(s, &p);
        } else if (p.u->accepted() && !u.accepted()) {
          connect_accepted(p, &s);
        } else if (u.name().empty() && p.u->name().empty()) {
          int sv[2];
          if (socketpair(AF_UNIX, static_cast<int>(u.type()) | SOCK_CLOEXEC, 0, sv) != 0)
            throw_errno("socketpair");
          s.fd.reset(sv[0]);
          p.fd.reset(sv[1]);
        } else {
          throw Error("cannot tell which end of the connection was accepted");
        }
      });
    }
    // 3. connections waiting in accept queues, in their order.
    for (auto& [ino, l] : sks_) {
      if (l.u->state() != TCP_LISTEN) continue;
      for (uint64_t c : l.u->icons()) {
        Sk& cs = sk(c, sk_label(ino));
        in_context(sk_label(c), [&] {
          if (!cs.fd) cs.fd = new_socket(cs.u->type());
          connect_to(cs.fd.get(), l.u->name(), sk_label(c));
        });
      }
    }
    // 4. datagram sockets.
    for (auto& [ino, s] : sks_) {
      const img::UnixSocket& u = *s.u;
      if (u.type() != SOCK_DGRAM || s.fd) continue;
      auto p = sks_.find(u.peer_ino());
      if (p != sks_.end() && !p->second.fd && p->second.u->peer_ino() == ino && u.name().empty() &&
          p->second.u->name().empty()) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) != 0)
          throw_errno(sk_label(ino) + ": socketpair");
        s.fd.reset(sv[0]);
        p->second.fd.reset(sv[1]);
        continue;
      }
      s.fd = new_socket(SOCK_DGRAM);
    }
    for (auto& [ino, s] : sks_) {
      const img::UnixSocket& u = *s.u;
      if (u.type() != SOCK_DGRAM || !u.peer_ino()) continue;
      auto p = sks_.find(u.peer_ino());
      bool pair = p != sks_.end() && p->second.u->peer_ino() == ino && u.name().empty() &&
                  p->second.u->name().empty();
      if (pair) continue;
      if (u.peer_name().empty())
        throw Error(sk_label(ino) + ": connected to an unnamed datagram socket");
      connect_to(s.fd.get(), u.peer_name(), sk_label(ino));
    }
    for (auto& [ino, s] : sks_)
      if (!s.fd) {
        // Unconnected, unbound stream/seqpacket sockets.
        s.fd = new_socket(s.u->type());
      }
    // 5. queues.
    for (auto& [ino, q] : loaded_queues_) {
      if (filled.count(ino)) continue;
      Sk& r = sk(ino, "queue");
      in_context(sk_label(ino), [&] { refill(r, q); });
    }
    // 6. options.
    for (auto& [ino, s] : sks_) in_context(sk_label(ino), [&] { set_options(s); });
  }

  const img::UnixQueue* queue_of(uint64_t ino) const {
    auto it = loaded_queues_.find(ino);
    return it == loaded_queues_.end() ? nullptr : &it->second;
  }

  // Sends r's saved queue from sender_fd (to `to` if given).
  void fill(Sk& r, int sender_fd, const std::string* to) {
    const img::UnixQueue* q = queue_of(r.u->ino());
    if (!q) return;
    size_t total = q->stream().size();
    for (const auto& p : q->packets()) total += p.data().size() + 1024;
    set_buf(sender_fd, true,
            static_cast<uint32_t>(std::max<size_t>(2 * total + (1u << 20), 4u << 20)));
    std::string what = sk_label(r.u->ino());
    if (!q->stream().empty()) send_all(sender_fd, q->stream(), to, what);
    for (const auto& p : q->packets()) send_all(sender_fd, p.data(), to, what);
  }

  void refill(Sk& r, const img::UnixQueue& q) {
    const img::UnixSocket& u = *r.u;
    if (stream_like(u.type())) {
      if (!u.peer_ino()) throw Error("data queued in a socket without a peer");
      Sk& p = sk(u.peer_ino(), sk_label(u.ino()));
      fill(r, p.fd.get(), nullptr);
      return;
    }
    // Datagrams: from the peer if r is connected (only its peer may send).
    if (u.peer_ino() && sks_.count(u.peer_ino())) {
      Sk& p = sks_.at(u.peer_ino());
      if (p.u->peer_ino() == u.ino()) {
        fill(r, p.fd.get(), nullptr);
      } else {
        if (u.name().empty()) throw Error("cannot refill: unnamed and its peer is elsewhere");
        fill(r, p.fd.get(), &u.name());
      }
      return;
    }
    if (u.name().empty())
      throw Error("datagrams are queued in an unbound, unconnected socket: cannot refill");
    // Anyone may send to r: each datagram from its named sender if the tree
    // has it, else from an unbound helper (the receiver sees no address).
    UniqueFd anon;
    size_t total = 0;
    for (const auto& p : q.packets()) total += p.data().size() + 1024;
    for (const auto& p : q.packets()) {
      int from = -1;
      if (!p.sender().empty())
        for (auto& [ino, s] : sks_)
          if (s.u->type() == SOCK_DGRAM && s.u->name() == p.sender() && s.fd) from = s.fd.get();
      if (from < 0) {
        if (!anon) {
          anon = new_socket(SOCK_DGRAM);
          set_buf(anon.get(), true,
                  static_cast<uint32_t>(std::max<size_t>(2 * total + (1u << 20), 4u << 20)));
        }
        from = anon.get();
      } else {
        set_buf(from, true,
                static_cast<uint32_t>(std::max<size_t>(2 * total + (1u << 20), 4u << 20)));
      }
      send_all(from, p.data(), &u.name(), sk_label(u.ino()));
    }
  }

  void set_options(Sk& s) {
    const img::UnixSocket& u = *s.u;
    int fd = s.fd.get();
    if (u.passcred()) set_int_opt(fd, SOL_SOCKET, SO_PASSCRED, 1, "SO_PASSCRED");
    set_buf(fd, true, u.sndbuf());
    set_buf(fd, false, u.rcvbuf());
    if (u.state() == TCP_LISTEN && listen(fd, static_cast<int>(u.backlog())) != 0)
      throw_errno("listen");
    if ((u.shutdown() & 3) && !u.peer_gone() && shutdown(fd, (u.shutdown() & 3) - 1) != 0 &&
        errno != ENOTCONN)
      throw_errno("shutdown");
    if (u.peek_off() >= 0) set_int_opt(fd, SOL_SOCKET, SO_PEEK_OFF, u.peek_off(), "SO_PEEK_OFF");
  }

  const sockdiag::UnixInfo* lookup(uint64_t ino) const {
    auto it = diag_.find(ino);
    if (it == diag_.end() && !refreshed_for_.count(ino)) {
      refreshed_for_.insert(ino);
      diag_.clear();
      for (auto& u : sockdiag::SockDiag().dump_unix()) diag_[u.ino] = std::move(u);
      it = diag_.find(ino);
    }
    return it == diag_.end() ? nullptr : &it->second;
  }

  // dump
  mutable std::map<uint64_t, sockdiag::UnixInfo> diag_;
  mutable std::set<uint64_t> refreshed_for_;
  std::map<uint64_t, std::string> owner_;  // ino -> "pid P fd N"
  std::vector<img::UnixQueue> queues_;
  // restore
  bool built_ = false;
  std::map<uint64_t, img::UnixQueue> loaded_queues_;
  std::map<uint64_t, Sk> sks_;
};

}  // namespace

std::unique_ptr<FdKind> make_unix_socket_kind() {
  return std::make_unique<UnixSocketKind>();
}

}  // namespace ckpt
