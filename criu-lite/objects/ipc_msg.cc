// SysV message queues: every message is read without taking it off the
// queue (msgrcv with MSG_COPY, the message's position as msgtyp; needs
// CONFIG_CHECKPOINT_RESTORE) and sent again, in order, at restore.
#include <sys/msg.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "objects/ipc_common.h"
#include "sys/error.h"
#include "sys/ns_thread.h"

namespace ckpt::ipc {

namespace {

// MSG_COPY copies at most kernel.msgmax bytes: if that was lowered below
// the size of a queued message, it is raised while the queues are read.
class MsgmaxAtLeast {
 public:
  explicit MsgmaxAtLeast(uint64_t need) {
    old_ = read_sysctl("kernel/msgmax");
    if (need > std::stoull(old_)) {
      write_sysctl("kernel/msgmax", std::to_string(need));
      raised_ = true;
    }
  }
  ~MsgmaxAtLeast() {
    if (raised_) {
      try {
        write_sysctl("kernel/msgmax", old_);
      } catch (const Error&) {
      }
    }
  }
  MsgmaxAtLeast(const MsgmaxAtLeast&) = delete;
  MsgmaxAtLeast& operator=(const MsgmaxAtLeast&) = delete;

 private:
  std::string old_;
  bool raised_ = false;
};

struct MsgBuf {
  explicit MsgBuf(size_t text) : bytes(sizeof(long) + text), buf(new char[bytes]) {}
  long* mtype() { return reinterpret_cast<long*>(buf.get()); }
  char* mtext() { return buf.get() + sizeof(long); }
  size_t bytes;
  std::unique_ptr<char[]> buf;
};

}  // namespace

void dump_msg(img::IpcNs& ns, QueuedMessages& out) {
  msginfo info{};
  int max = msgctl(0, MSG_INFO, reinterpret_cast<msqid_ds*>(&info));
  if (max < 0) throw_errno("msgctl(MSG_INFO)");
  std::vector<std::pair<int, msqid_ds>> queues;
  uint64_t biggest = 0;
  for (int idx = 0; idx <= max; idx++) {
    msqid_ds ds{};
    int id = msgctl(idx, MSG_STAT_ANY, &ds);
    if (id < 0) {
      if (errno == EINVAL || errno == EIDRM) continue;
      throw_errno(strfmt("msgctl(%d, MSG_STAT_ANY)", idx));
    }
    queues.push_back({id, ds});
    biggest = std::max<uint64_t>(biggest, ds.__msg_cbytes);
  }
  MsgmaxAtLeast msgmax(biggest);
  for (auto& [id, ds] : queues) {
    img::SysvMsgQueue* q = ns.add_msg();
    *q->mutable_perm() = perm_of(ds.msg_perm, id);
    q->set_qbytes(ds.msg_qbytes);
    q->set_qnum(ds.msg_qnum);
    q->set_cbytes(ds.__msg_cbytes);
    in_context(describe("msg", q->perm()), [&] {
      // No message is longer than all the bytes in the queue.
      MsgBuf b(std::max<size_t>(ds.__msg_cbytes, 1));
      uint64_t bytes = 0;
      for (uint64_t i = 0;; i++) {
        ssize_t n = msgrcv(id, b.buf.get(), b.bytes - sizeof(long), static_cast<long>(i),
                           IPC_NOWAIT | MSG_COPY);
        if (n < 0) {
          if (errno == ENOMSG) {
            if (i != ds.msg_qnum)
              throw Error(
                  strfmt("the queue holds %llu messages, not %llu: it changed while it "
                         "was read (is every process that uses it stopped?)",
                         static_cast<unsigned long long>(i),
                         static_cast<unsigned long long>(ds.msg_qnum)));
            break;
          }
          if (errno == ENOSYS)
            throw Error("msgrcv(MSG_COPY) needs a kernel with CONFIG_CHECKPOINT_RESTORE");
          throw_errno(
              strfmt("msgrcv(MSG_COPY) of message %llu", static_cast<unsigned long long>(i)));
        }
        img::IpcMessage m;
        m.set_msq_id(id);
        m.set_mtype(*b.mtype());
        m.set_data(b.mtext(), static_cast<size_t>(n));
        out.all.push_back(std::move(m));
        bytes += static_cast<uint64_t>(n);
      }
      if (bytes != ds.__msg_cbytes)
        throw Error("the queue changed while it was read (is every process that uses it stopped?)");
    });
  }
}

void restore_msg(const img::IpcNs& ns, const std::vector<img::IpcMessage>& msgs) {
  for (const auto& q : ns.msg()) {
    const img::SysvPerm& p = q.perm();
    in_context(describe("msg", p), [&] {
      write_sysctl("kernel/msg_next_id", std::to_string(p.id()));
      int id;
      {
        ThreadIdsAs as(p.cuid(), p.cgid());
        id = msgget(p.key(), IPC_CREAT | IPC_EXCL | static_cast<int>(p.mode() & 0777));
      }
      if (id < 0) throw_errno("msgget");
      if (id != p.id()) {
        msgctl(id, IPC_RMID, nullptr);
        throw Error(
            strfmt("msgget gave id %d (the slot is taken: restore into a fresh namespace)", id));
      }
      msqid_ds ds{};
      if (msgctl(id, IPC_STAT, &ds) != 0) throw_errno("msgctl(IPC_STAT)");
      ds.msg_perm.uid = p.uid();
      ds.msg_perm.gid = p.gid();
      ds.msg_perm.mode = static_cast<unsigned short>(p.mode());
      ds.msg_qbytes = q.qbytes();
      if (msgctl(id, IPC_SET, &ds) != 0) throw_errno("msgctl(IPC_SET)");
      uint64_t n = 0;
      for (const auto& m : msgs) {
        if (!m.mq_name().empty() || m.msq_id() != id) continue;
        MsgBuf b(std::max<size_t>(m.data().size(), 1));
        *b.mtype() = static_cast<long>(m.mtype());
        memcpy(b.mtext(), m.data().data(), m.data().size());
        if (retry_eintr([&] { return msgsnd(id, b.buf.get(), m.data().size(), IPC_NOWAIT); }) != 0)
          throw_errno(strfmt("msgsnd of message %llu (type %lld, %zu bytes)",
                             static_cast<unsigned long long>(n), static_cast<long long>(m.mtype()),
                             m.data().size()));
        n++;
      }
    });
  }
}

}  // namespace ckpt::ipc
