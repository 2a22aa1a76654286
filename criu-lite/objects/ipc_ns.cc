// The IPC namespace as a whole: sysctls, the order of the kinds, the
// messages image. Each kind is in its own file (ipc_shm.cc, ipc_msg.cc,
// ipc_sem.cc, ipc_mqueue.cc).
#include "objects/ipc_ns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <map>

#include "image/page_store.h"
#include "image/record_file.h"
#include "objects/ipc_common.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"
#include "sys/ns_thread.h"

namespace ckpt {

namespace ipc {

img::SysvPerm perm_of(const struct ipc_perm& p, int id) {
  img::SysvPerm o;
  o.set_id(id);
  o.set_key(p.__key);
  o.set_uid(p.uid);
  o.set_gid(p.gid);
  o.set_cuid(p.cuid);
  o.set_cgid(p.cgid);
  o.set_mode(p.mode & 0777);
  return o;
}

std::string describe(const char* kind, const img::SysvPerm& p) {
  return strfmt("%s id %d key %#x", kind, p.id(), static_cast<unsigned>(p.key()));
}

std::string read_sysctl(const std::string& name) {
  std::string v = read_file("/proc/sys/" + name);
  while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
  return v;
}

void write_sysctl(const std::string& name, const std::string& value) {
  // Opened and written by this thread: the file is the thread's namespace's.
  UniqueFd f = open_or_throw("/proc/sys/" + name, O_WRONLY);
  write_full(f.get(), value.data(), value.size(), "sysctl " + name + " = " + value);
}

}  // namespace ipc

namespace {

using ipc::read_sysctl;
using ipc::write_sysctl;

// Every sysctl of an IPC namespace but the obsolete kernel.auto_msgmni. The
// *_next_id ones are saved too (a value set and not used yet) and written
// last at restore, since the restore itself uses them.
const char* const kSysctls[] = {"kernel/shmmax",
                                "kernel/shmall",
                                "kernel/shmmni",
                                "kernel/shm_rmid_forced",
                                "kernel/msgmax",
                                "kernel/msgmnb",
                                "kernel/msgmni",
                                "kernel/sem",
                                "fs/mqueue/queues_max",
                                "fs/mqueue/msg_max",
                                "fs/mqueue/msgsize_max",
                                "fs/mqueue/msg_default",
                                "fs/mqueue/msgsize_default",
                                "kernel/shm_next_id",
                                "kernel/msg_next_id",
                                "kernel/sem_next_id"};

bool is_next_id(const std::string& name) {
  return name.size() > 8 && name.compare(name.size() - 8, 8, "_next_id") == 0;
}

std::vector<uint64_t> parse_numbers(const std::string& name, const std::string& v) {
  std::vector<uint64_t> out;
  const char* p = v.c_str();
  while (*p) {
    while (*p == ' ' || *p == '\t') p++;
    if (!*p) break;
    char* end = nullptr;
    errno = 0;
    unsigned long long n = strtoull(p, &end, 10);
    if (end == p || errno) throw Error("sysctl " + name + ": bad value '" + v + "'");
    out.push_back(n);
    p = end;
  }
  return out;
}

std::string join(const std::vector<uint64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++)
    s += (i ? "\t" : "") + std::to_string(static_cast<unsigned long long>(v[i]));
  return s;
}

// The limits the objects of ns need, whatever the namespace's own sysctls
// say (they may have been lowered after the objects were made): raised
// while the objects are recreated, then set to the saved values.
std::map<std::string, std::vector<uint64_t>> needed_limits(
    const img::IpcNs& ns, const std::vector<img::IpcMessage>& msgs) {
  std::map<std::string, std::vector<uint64_t>> need;
  uint64_t shm_pages = 0, shm_max = 0;
  for (const auto& s : ns.shm()) {
    shm_pages += (s.size() + 4095) / 4096;
    shm_max = std::max<uint64_t>(shm_max, s.size());
  }
  need["kernel/shmmni"] = {static_cast<uint64_t>(ns.shm_size())};
  need["kernel/shmall"] = {shm_pages};
  need["kernel/shmmax"] = {shm_max};
  uint64_t qbytes = 0, msg_max = 0;
  for (const auto& q : ns.msg()) qbytes = std::max<uint64_t>(qbytes, q.qbytes());
  for (const auto& m : msgs)
    if (m.mq_name().empty()) msg_max = std::max<uint64_t>(msg_max, m.data().size());
  need["kernel/msgmni"] = {static_cast<uint64_t>(ns.msg_size())};
  need["kernel/msgmnb"] = {qbytes};
  need["kernel/msgmax"] = {msg_max};
  uint64_t semmsl = 0, semmns = 0;
  for (const auto& s : ns.sem()) {
    semmsl = std::max<uint64_t>(semmsl, static_cast<uint64_t>(s.values_size()));
    semmns += static_cast<uint64_t>(s.values_size());
  }
  need["kernel/sem"] = {semmsl, semmns, 0, static_cast<uint64_t>(ns.sem_size())};
  uint64_t mq_maxmsg = 0, mq_msgsize = 0;
  for (const auto& q : ns.mqueues()) {
    mq_maxmsg = std::max<uint64_t>(mq_maxmsg, static_cast<uint64_t>(q.maxmsg()));
    mq_msgsize = std::max<uint64_t>(mq_msgsize, static_cast<uint64_t>(q.msgsize()));
  }
  need["fs/mqueue/queues_max"] = {static_cast<uint64_t>(ns.mqueues_size())};
  need["fs/mqueue/msg_max"] = {mq_maxmsg};
  need["fs/mqueue/msgsize_max"] = {mq_msgsize};
  return need;
}

void raise_limits(const std::map<std::string, std::vector<uint64_t>>& need) {
  for (const auto& [name, want] : need) {
    std::vector<uint64_t> cur = parse_numbers(name, read_sysctl(name));
    if (cur.size() != want.size())
      throw Error("sysctl " + name + ": unexpected value '" + join(cur) + "'");
    bool raise = false;
    for (size_t i = 0; i < cur.size(); i++)
      if (want[i] > cur[i]) {
        cur[i] = want[i];
        raise = true;
      }
    if (raise) in_context("raise limit for the restore", [&] { write_sysctl(name, join(cur)); });
  }
}

std::vector<img::IpcMessage> load_messages(const img::IpcNs& ns, const image::ImageSource& src) {
  std::vector<img::IpcMessage> out;
  image::RecordReader r(src, ipc::msgs_image(ns.ns_id()), image::Kind::IpcMsgs);
  img::IpcMessage m;
  while (r.next(m)) out.push_back(m);
  return out;
}

}  // namespace

img::IpcNs dump_ipcns(int ipcns_fd, image::ImageSink& sink, int zstd_level) {
  img::IpcNs ns;
  in_context("ipc namespace", [&] {
    struct stat st {};
    if (fstat(ipcns_fd, &st) != 0) throw_errno("fstat namespace");
    ns.set_ns_id(st.st_ino);
    ipc::QueuedMessages msgs;
    run_in_namespace(ipcns_fd, CLONE_NEWIPC, [&] {
      for (const char* name : kSysctls) {
        std::string v;
        // An older kernel may lack one: it then has nothing to restore.
        if (!try_read_file(std::string("/proc/sys/") + name, &v)) continue;
        while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
        auto* s = ns.add_sysctls();
        s->set_name(name);
        s->set_value(v);
      }
      in_context("SysV shared memory", [&] { ipc::dump_shm(ns, sink, zstd_level); });
      in_context("SysV message queues", [&] { ipc::dump_msg(ns, msgs); });
      in_context("SysV semaphores", [&] { ipc::dump_sem(ns); });
      in_context("POSIX message queues", [&] { ipc::dump_mqueues(ns, msgs); });
    });
    image::RecordWriter w(ipc::msgs_image(ns.ns_id()), image::Kind::IpcMsgs);
    for (const auto& m : msgs.all) w.add(m);
    w.save(sink);
  });
  return ns;
}

void check_ipcns_images(const img::IpcNs& ns, const image::ImageSource& src) {
  in_context("ipc namespace", [&] {
    std::map<int, uint64_t> sysv;
    std::map<std::string, uint64_t> posix;
    for (const auto& m : load_messages(ns, src)) {
      if (m.mq_name().empty())
        sysv[m.msq_id()]++;
      else
        posix[m.mq_name()]++;
    }
    for (const auto& q : ns.msg())
      if (sysv[q.perm().id()] != q.qnum())
        throw Error(ipc::describe("msg", q.perm()) + ": message count differs from the image");
    for (const auto& q : ns.mqueues())
      if (posix[q.name()] != q.curmsgs())
        throw Error("POSIX queue /" + q.name() + ": message count differs from the image");
    for (const auto& s : ns.shm()) {
      if (!s.pages()) continue;
      image::PageReader r(src, ipc::shm_pages_id(ns.ns_id(), s.perm().id()));
      const auto& runs = r.pagemap().runs();
      if (!runs.empty()) {
        const auto& last = runs[runs.size() - 1];
        if (last.vaddr() + last.nr_pages() * 4096 > (s.size() + 4095) / 4096 * 4096)
          throw Error(ipc::describe("shm", s.perm()) + ": pages beyond the segment's size");
      }
    }
  });
}

void restore_ipcns(int ipcns_fd, const img::IpcNs& ns, const image::ImageSource& src) {
  in_context("ipc namespace", [&] {
    std::vector<img::IpcMessage> msgs = load_messages(ns, src);
    auto need = needed_limits(ns, msgs);
    run_in_namespace(ipcns_fd, CLONE_NEWIPC, [&] {
      raise_limits(need);
      in_context("SysV shared memory", [&] { ipc::restore_shm(ns, src); });
      in_context("SysV message queues", [&] { ipc::restore_msg(ns, msgs); });
      in_context("SysV semaphores", [&] { ipc::restore_sem(ns); });
      in_context("POSIX message queues", [&] { ipc::restore_mqueues(ns, msgs); });
      // The saved values; shm_rmid_forced=1 waits for finish_ipcns_restore.
      for (const auto& s : ns.sysctls())
        if (!is_next_id(s.name()) && !(s.name() == "kernel/shm_rmid_forced" && s.value() != "0"))
          write_sysctl(s.name(), s.value());
      // -1 (none pending) is what the kernel leaves after use, and cannot be written.
      for (const auto& s : ns.sysctls())
        if (is_next_id(s.name()) && s.value() != "-1") write_sysctl(s.name(), s.value());
    });
  });
}

void finish_ipcns_restore(int ipcns_fd, const img::IpcNs& ns) {
  // Usually nothing is left to do: no thread then (0.5 ms of the stop).
  bool todo = false;
  for (const auto& s : ns.shm()) todo = todo || s.dest();
  for (const auto& s : ns.sysctls())
    todo = todo || (s.name() == "kernel/shm_rmid_forced" && s.value() != "0");
  if (!todo) return;
  in_context("ipc namespace", [&] {
    run_in_namespace(ipcns_fd, CLONE_NEWIPC, [&] {
      ipc::finish_shm(ns);
      for (const auto& s : ns.sysctls())
        if (s.name() == "kernel/shm_rmid_forced" && s.value() != "0")
          write_sysctl(s.name(), s.value());
    });
  });
}

}  // namespace ckpt
