// POSIX message queues of a namespace. They are listed through a detached
// mount of the namespace's mqueue file system (fsopen/fsmount from a thread
// in the namespace: no mount namespace or mount point is needed), and read
// by receiving every message, which is the only way the kernel offers:
// each queue is emptied and refilled in the same order at once, so the
// processes using it must be stopped.
#include <dirent.h>
#include <fcntl.h>
#include <mqueue.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "objects/ipc_common.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"
#include "sys/ns_thread.h"

namespace ckpt::ipc {

namespace {

UniqueFd mount_mqueue_fs() {
  UniqueFd fs(fsopen("mqueue", FSOPEN_CLOEXEC));
  if (!fs) throw_errno("fsopen mqueue");
  if (fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0)
    throw_errno("fsconfig mqueue");
  UniqueFd mnt(fsmount(fs.get(), FSMOUNT_CLOEXEC, 0));
  if (!mnt) throw_errno("fsmount mqueue");
  return mnt;
}

std::vector<std::string> list_queues(int mnt) {
  UniqueFd dfd = openat_or_throw(mnt, ".", O_RDONLY | O_DIRECTORY);
  DIR* d = fdopendir(dfd.get());
  if (!d) throw_errno("fdopendir");
  dfd.release();
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

// The value of "NAME:" in a queue's status line ("QSIZE:0 NOTIFY:0 SIGNO:0
// NOTIFY_PID:0"), or -1.
long status_field(const std::string& status, const std::string& name) {
  size_t at = status.find(name + ":");
  if (at == std::string::npos) return -1;
  return atol(status.c_str() + at + name.size() + 1);
}

}  // namespace

void dump_mqueues(img::IpcNs& ns, QueuedMessages& out) {
  UniqueFd mnt = mount_mqueue_fs();
  for (const std::string& name : list_queues(mnt.get())) {
    in_context("POSIX queue /" + name, [&] {
      UniqueFd q = openat_or_throw(mnt.get(), name, O_RDWR | O_NONBLOCK);
      struct stat st {};
      if (fstat(q.get(), &st) != 0) throw_errno("fstat");
      mq_attr attr{};
      if (mq_getattr(q.get(), &attr) != 0) throw_errno("mq_getattr");
      char status[128] = {};
      if (pread(q.get(), status, sizeof status - 1, 0) < 0) throw_errno("read status");
      if (status_field(status, "NOTIFY_PID") > 0)
        throw Error("a process is registered for notification (mq_notify): not supported");
      img::PosixMqueue* m = ns.add_mqueues();
      m->set_name(name);
      m->set_mode(st.st_mode & 07777);
      m->set_uid(st.st_uid);
      m->set_gid(st.st_gid);
      m->set_maxmsg(attr.mq_maxmsg);
      m->set_msgsize(attr.mq_msgsize);
      // Take every message off, then put them back in the order they came
      // (highest priority first, oldest first within one): the queue is as
      // it was. Whatever was taken goes back even if something fails.
      std::vector<img::IpcMessage> taken;
      std::unique_ptr<char[]> buf(new char[static_cast<size_t>(attr.mq_msgsize) + 1]);
      auto put_back = [&](size_t from) {
        for (size_t i = from; i < taken.size(); i++)
          if (mq_send(q.get(), taken[i].data().data(), taken[i].data().size(), taken[i].prio()) !=
              0)
            throw_errno(strfmt("put message %zu back", i));
      };
      try {
        for (;;) {
          unsigned prio = 0;
          ssize_t n = mq_receive(q.get(), buf.get(), static_cast<size_t>(attr.mq_msgsize), &prio);
          if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            throw_errno("mq_receive");
          }
          img::IpcMessage msg;
          msg.set_mq_name(name);
          msg.set_prio(prio);
          msg.set_data(buf.get(), static_cast<size_t>(n));
          taken.push_back(std::move(msg));
        }
      } catch (const Error&) {
        put_back(0);
        throw;
      }
      put_back(0);
      m->set_curmsgs(taken.size());
      if (taken.size() != static_cast<size_t>(attr.mq_curmsgs))
        throw Error(
            strfmt("held %zu messages, not %ld: it changed while it was read (is every "
                   "process that uses it stopped?)",
                   taken.size(), static_cast<long>(attr.mq_curmsgs)));
      for (auto& msg : taken) out.all.push_back(std::move(msg));
    });
  }
}

void restore_mqueues(const img::IpcNs& ns, const std::vector<img::IpcMessage>& msgs) {
  for (const auto& m : ns.mqueues()) {
    in_context("POSIX queue /" + m.name(), [&] {
      if (m.name().empty() || m.name().find('/') != std::string::npos)
        throw Error("bad queue name in the image");
      mq_attr attr{};
      attr.mq_maxmsg = m.maxmsg();
      attr.mq_msgsize = m.msgsize();
      std::string path = "/" + m.name();
      int fd;
      {
        // Owned by, and charged (RLIMIT_MSGQUEUE) to, its user, as before.
        ThreadIdsAs as(m.uid(), m.gid());
        fd = mq_open(path.c_str(), O_RDWR | O_NONBLOCK | O_CREAT | O_EXCL | O_CLOEXEC,
                     static_cast<mode_t>(m.mode() & 0777), &attr);
      }
      if (fd < 0) throw_errno("mq_open");
      UniqueFd q(fd);
      // mq_open applied ckpt's umask.
      if (fchmod(q.get(), m.mode() & 07777) != 0) throw_errno("fchmod");
      size_t n = 0;
      for (const auto& msg : msgs) {
        if (msg.mq_name() != m.name()) continue;
        if (retry_eintr([&] {
              return mq_send(q.get(), msg.data().data(), msg.data().size(), msg.prio());
            }) != 0)
          throw_errno(strfmt("mq_send of message %zu (priority %u, %zu bytes)", n, msg.prio(),
                             msg.data().size()));
        n++;
      }
    });
  }
}

}  // namespace ckpt::ipc
