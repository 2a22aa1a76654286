// IPC and UTS namespaces (objects/ipc_ns.h, uts_ns.h): a forked child
// unshares an IPC+UTS namespace and fills it (host and domain name, SysV
// shm segments of several sizes with patterns, a sparse one, a locked one,
// one removed while attached; message queues with messages of several
// types; semaphore sets; POSIX queues with messages of several priorities;
// changed sysctls, some lowered below what the objects use). It is dumped,
// dumped again (the source must be unchanged, and the child checks its own
// state), restored into another fresh namespace, and compared object by
// object and message by message, by dumping the copy and by reading it
// directly. Needs root; skipped otherwise.
#include <fcntl.h>
#include <google/protobuf/util/message_differencer.h>
#include <mqueue.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "image/image_io.h"
#include "image/page_store.h"
#include "image/record_file.h"
#include "objects/ipc_ns.h"
#include "objects/uts_ns.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/ns_thread.h"

namespace ckpt {
namespace {

constexpr size_t kPage = 4096;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/ipc-unit-XXXXXX";
    if (!mkdtemp(tmpl.data())) abort();
    path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_sysctl_here(const char* name, const std::string& v) {
  UniqueFd f = open_or_throw(std::string("/proc/sys/") + name, O_WRONLY);
  write_full(f.get(), v.data(), v.size(), name);
}

std::string read_sysctl_here(const char* name) {
  std::string v = read_file(std::string("/proc/sys/") + name);
  while (!v.empty() && v.back() == '\n') v.pop_back();
  return v;
}

// A child in new IPC and UTS namespaces: setup() runs in it, then it waits;
// check() runs on request and its result is the exit status. Killed when
// the object goes, and if the test process dies.
class NsChild {
 public:
  explicit NsChild(std::function<void()> setup = {}, std::function<int()> check = {}) {
    int ready[2], cmd[2];
    if (pipe2(ready, O_CLOEXEC) || pipe2(cmd, O_CLOEXEC)) abort();
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      char c = 'r';
      try {
        if (unshare(CLONE_NEWIPC | CLONE_NEWUTS) != 0) throw_errno("unshare");
        if (setup) setup();
      } catch (const std::exception& e) {
        fprintf(stderr, "child setup: %s\n", e.what());
        c = 'f';
      }
      if (write(ready[1], &c, 1) != 1 || c != 'r') _exit(3);
      char what = 0;
      if (read(cmd[0], &what, 1) != 1) _exit(0);
      _exit(check ? check() : 0);
    }
    close(ready[1]);
    close(cmd[0]);
    cmd_ = cmd[1];
    char c = 0;
    ok_ = read(ready[0], &c, 1) == 1 && c == 'r';
    close(ready[0]);
  }
  ~NsChild() {
    if (cmd_ >= 0) close(cmd_);
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  NsChild(const NsChild&) = delete;
  NsChild& operator=(const NsChild&) = delete;

  bool ok() const { return ok_; }
  UniqueFd ns(const char* kind) const {
    return open_or_throw(strfmt("/proc/%d/ns/%s", pid_, kind), O_RDONLY);
  }
  // Runs check() in the child; its exit status.
  int check() {
    char c = 'c';
    if (write(cmd_, &c, 1) != 1) return -1;
    int st = 0;
    waitpid(pid_, &st, 0);
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }

 private:
  pid_t pid_ = -1;
  int cmd_ = -1;
  bool ok_ = false;
};

// ---------------------------------------------------------------- the content

unsigned char pattern(int seg, size_t off) {
  return static_cast<unsigned char>((off * 131 + static_cast<size_t>(seg) * 17 + off / kPage) &
                                    0xff);
}

struct Msg {
  long type;
  std::string text;
};
const std::vector<Msg>& sysv_messages() {
  static const std::vector<Msg> m = {
      {1, "first"}, {2, "second, type 2"}, {3, ""}, {1, std::string(9000, 'x')}, {7, "last"}};
  return m;
}
struct MqMsg {
  unsigned prio;
  std::string text;
};
const std::vector<MqMsg>& mq_sent() {
  static const std::vector<MqMsg> m = {{1, "a"}, {5, "b"}, {1, "c"}, {3, "d"}, {5, "e"}, {0, ""}};
  return m;
}
// The order a receiver sees: highest priority first, oldest first within one.
const std::vector<MqMsg>& mq_received() {
  static const std::vector<MqMsg> m = {{5, "b"}, {5, "e"}, {3, "d"}, {1, "a"}, {1, "c"}, {0, ""}};
  return m;
}

struct Ids {
  int shm_a, shm_b, shm_c, shm_high, shm_dest;
  int msg_1, msg_2;
  int sem_1, sem_2;
};
// Written by the child's setup into shared memory, read by the test.
Ids* shared_ids() {
  static Ids* ids = static_cast<Ids*>(
      mmap(nullptr, sizeof(Ids), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  return ids;
}

template <class F>
void as_user(uid_t uid, gid_t gid, F&& f) {
  if (setegid(gid) || seteuid(uid)) throw_errno("seteuid");
  f();
  if (seteuid(0) || setegid(0)) throw_errno("seteuid 0");
}

void fill_shm(int id, int seg, size_t size, const std::vector<size_t>& pages_only = {}) {
  auto* p = static_cast<unsigned char*>(shmat(id, nullptr, 0));
  if (p == reinterpret_cast<void*>(-1)) throw_errno("shmat");
  if (pages_only.empty()) {
    for (size_t i = 0; i < size; i++) p[i] = pattern(seg, i);
  } else {
    for (size_t pg : pages_only)
      for (size_t i = pg * kPage; i < (pg + 1) * kPage; i++) p[i] = pattern(seg, i);
  }
  shmdt(p);
}

int must(int r, const char* what) {
  if (r < 0) throw_errno(what);
  return r;
}

// Everything the tests expect, made in the current (child's) namespaces.
void populate() {
  Ids& ids = *shared_ids();
  if (sethostname("ipc-test-host", 13) || setdomainname("ipc-test.example", 16))
    throw_errno("sethostname");
  write_sysctl_here("kernel/shmmni", "1000");
  write_sysctl_here("kernel/msgmnb", "32768");
  write_sysctl_here("kernel/msgmax", "10000");
  write_sysctl_here("kernel/sem", "250\t32000\t32\t128");
  write_sysctl_here("fs/mqueue/msg_max", "50");

  // Shared memory: a small one with a partial last page, a sparse 1 MiB one,
  // one made by another user and handed to a third, locked; a slot freed to
  // leave a gap; one at a chosen id (another sequence number); one removed
  // while attached (the child keeps it attached).
  ids.shm_a = must(shmget(0x1111, 3 * kPage + 100, IPC_CREAT | 0640), "shmget a");
  fill_shm(ids.shm_a, 1, 3 * kPage + 100);
  ids.shm_b = must(shmget(IPC_PRIVATE, 1 << 20, IPC_CREAT | 0600), "shmget b");
  fill_shm(ids.shm_b, 2, 1 << 20, {0, 7, 200});
  int gap = must(shmget(IPC_PRIVATE, kPage, IPC_CREAT | 0600), "shmget gap");
  as_user(1234, 2345,
          [&] { ids.shm_c = must(shmget(0x3333, 64 << 10, IPC_CREAT | 0660), "shmget c"); });
  fill_shm(ids.shm_c, 3, 64 << 10);
  shmid_ds ds{};
  must(shmctl(ids.shm_c, IPC_STAT, &ds), "IPC_STAT c");
  ds.shm_perm.uid = 1001;
  ds.shm_perm.gid = 1002;
  ds.shm_perm.mode = 0604;
  must(shmctl(ids.shm_c, IPC_SET, &ds), "IPC_SET c");
  must(shmctl(ids.shm_c, SHM_LOCK, nullptr), "SHM_LOCK c");
  must(shmctl(gap, IPC_RMID, nullptr), "rmid gap");
  write_sysctl_here("kernel/shm_next_id", "70000");
  ids.shm_high = must(shmget(0x4444, 2 * kPage, IPC_CREAT | 0600), "shmget high");
  fill_shm(ids.shm_high, 4, 2 * kPage);
  ids.shm_dest = must(shmget(0x5555, 5 * kPage, IPC_CREAT | 0600), "shmget dest");
  fill_shm(ids.shm_dest, 5, 5 * kPage);
  if (shmat(ids.shm_dest, nullptr, 0) == reinterpret_cast<void*>(-1)) throw_errno("shmat dest");
  must(shmctl(ids.shm_dest, IPC_RMID, nullptr), "rmid dest");

  // Message queues.
  ids.msg_1 = must(msgget(0x6666, IPC_CREAT | 0640), "msgget 1");
  for (const auto& m : sysv_messages()) {
    std::vector<char> b(sizeof(long) + m.text.size() + 1);
    memcpy(b.data(), &m.type, sizeof(long));
    memcpy(b.data() + sizeof(long), m.text.data(), m.text.size());
    must(msgsnd(ids.msg_1, b.data(), m.text.size(), IPC_NOWAIT), "msgsnd");
  }
  as_user(1234, 2345, [&] { ids.msg_2 = must(msgget(IPC_PRIVATE, IPC_CREAT | 0620), "msgget 2"); });
  msqid_ds mq{};
  must(msgctl(ids.msg_2, IPC_STAT, &mq), "IPC_STAT msg 2");
  mq.msg_qbytes = 20000;
  mq.msg_perm.uid = 1001;
  must(msgctl(ids.msg_2, IPC_SET, &mq), "IPC_SET msg 2");

  // Semaphores.
  ids.sem_1 = must(semget(0x7777, 5, IPC_CREAT | 0600), "semget 1");
  unsigned short vals[5] = {0, 1, 2, 300, 32767};
  union {
    int val;
    semid_ds* buf;
    unsigned short* array;
  } arg{};
  arg.array = vals;
  must(semctl(ids.sem_1, 0, SETALL, arg), "SETALL");
  as_user(1234, 2345,
          [&] { ids.sem_2 = must(semget(IPC_PRIVATE, 1, IPC_CREAT | 0666), "semget 2"); });
  arg.val = 7;
  must(semctl(ids.sem_2, 0, SETVAL, arg), "SETVAL");

  // POSIX queues.
  mq_attr a{};
  a.mq_maxmsg = 8;
  a.mq_msgsize = 128;
  mode_t old = umask(0);
  int q1 = must(mq_open("/ipc-q1", O_CREAT | O_RDWR, 0640, &a), "mq_open q1");
  for (const auto& m : mq_sent())
    must(mq_send(q1, m.text.data(), m.text.size(), m.prio), "mq_send");
  close(q1);
  a.mq_maxmsg = 50;
  a.mq_msgsize = 16;
  int q2 = must(mq_open("/ipc-q2", O_CREAT | O_RDWR, 0600, &a), "mq_open q2");
  must(fchown(q2, 1001, 1002), "fchown q2");
  close(q2);
  umask(old);

  // Limits lowered below what the objects use: the restore must cope.
  write_sysctl_here("kernel/msgmnb", "16384");
  write_sysctl_here("kernel/msgmax", "8192");
  write_sysctl_here("fs/mqueue/msg_max", "20");
  write_sysctl_here("kernel/shmall", "123456789");
}

// Checks, in the current namespaces, the state populate() made; consumes
// the messages (they are read destructively). Returns "" or what differs.
std::string verify_here(const Ids& ids, bool dest_attached) {
  utsname u{};
  uname(&u);
  if (std::string(u.nodename) != "ipc-test-host") return "hostname " + std::string(u.nodename);
  if (std::string(u.domainname) != "ipc-test.example") return "domainname";
  if (read_sysctl_here("kernel/msgmax") != "8192") return "kernel.msgmax";
  if (read_sysctl_here("kernel/sem") != "250\t32000\t32\t128") return "kernel.sem";
  if (read_sysctl_here("fs/mqueue/msg_max") != "20") return "fs.mqueue.msg_max";
  if (read_sysctl_here("kernel/shmall") != "123456789") return "kernel.shmall";

  struct Seg {
    int id, seg;
    size_t size;
    std::vector<size_t> pages;
  };
  for (const Seg& s : {Seg{ids.shm_a, 1, 3 * kPage + 100, {}},
                       Seg{ids.shm_b, 2, 1 << 20, {0, 7, 200}}, Seg{ids.shm_c, 3, 64 << 10, {}},
                       Seg{ids.shm_high, 4, 2 * kPage, {}}, Seg{ids.shm_dest, 5, 5 * kPage, {}}}) {
    auto* p = static_cast<unsigned char*>(shmat(s.id, nullptr, SHM_RDONLY));
    if (p == reinterpret_cast<void*>(-1)) return strfmt("shmat %d: %s", s.id, strerror(errno));
    std::string err;
    for (size_t i = 0; i < s.size && err.empty(); i++) {
      bool data = s.pages.empty();
      for (size_t pg : s.pages) data |= i / kPage == pg;
      unsigned char want = data ? pattern(s.seg, i) : 0;
      if (p[i] != want) err = strfmt("shm %d byte %zu is %u, not %u", s.id, i, p[i], want);
    }
    shmdt(p);
    if (!err.empty()) return err;
  }
  shmid_ds ds{};
  if (shmctl(ids.shm_c, IPC_STAT, &ds) < 0) return "IPC_STAT c";
  if (ds.shm_perm.__key != 0x3333 || ds.shm_perm.uid != 1001 || ds.shm_perm.gid != 1002 ||
      ds.shm_perm.cuid != 1234 || ds.shm_perm.cgid != 2345 || (ds.shm_perm.mode & 0777) != 0604 ||
      !(ds.shm_perm.mode & SHM_LOCKED) || ds.shm_segsz != (64 << 10))
    return strfmt("shm c: key %#x uid %u gid %u cuid %u cgid %u mode %o", ds.shm_perm.__key,
                  ds.shm_perm.uid, ds.shm_perm.gid, ds.shm_perm.cuid, ds.shm_perm.cgid,
                  ds.shm_perm.mode);
  if (shmctl(ids.shm_dest, IPC_STAT, &ds) < 0) return "IPC_STAT dest";
  if (dest_attached && !(ds.shm_perm.mode & SHM_DEST)) return "shm dest lost SHM_DEST";

  std::vector<char> b(sizeof(long) + 10000);
  for (const auto& m : sysv_messages()) {
    ssize_t n = msgrcv(ids.msg_1, b.data(), 10000, 0, IPC_NOWAIT);
    long type;
    memcpy(&type, b.data(), sizeof type);
    if (n < 0 || type != m.type ||
        std::string(b.data() + sizeof(long), static_cast<size_t>(n)) != m.text)
      return strfmt("msg: got type %ld, %zd bytes; want type %ld, %zu bytes", type, n, m.type,
                    m.text.size());
  }
  if (msgrcv(ids.msg_1, b.data(), 10000, 0, IPC_NOWAIT) >= 0) return "msg: one message too many";
  msqid_ds mq{};
  if (msgctl(ids.msg_2, IPC_STAT, &mq) < 0 || mq.msg_qbytes != 20000 || mq.msg_perm.uid != 1001 ||
      mq.msg_perm.cuid != 1234 || (mq.msg_perm.mode & 0777) != 0620)
    return "msg 2 attributes";

  unsigned short vals[5] = {};
  union {
    int val;
    semid_ds* buf;
    unsigned short* array;
  } arg{};
  arg.array = vals;
  if (semctl(ids.sem_1, 0, GETALL, arg) < 0 || vals[0] != 0 || vals[1] != 1 || vals[2] != 2 ||
      vals[3] != 300 || vals[4] != 32767)
    return "sem 1 values";
  if (semctl(ids.sem_2, 0, GETVAL) != 7) return "sem 2 value";
  semid_ds sd{};
  arg.buf = &sd;
  if (semctl(ids.sem_2, 0, IPC_STAT, arg) < 0 || sd.sem_perm.cuid != 1234 ||
      (sd.sem_perm.mode & 0777) != 0666)
    return "sem 2 attributes";

  int q1 = mq_open("/ipc-q1", O_RDONLY | O_NONBLOCK);
  if (q1 < 0) return "mq_open q1";
  char buf[128];
  for (const auto& m : mq_received()) {
    unsigned prio = 99;
    ssize_t n = mq_receive(q1, buf, sizeof buf, &prio);
    if (n < 0 || prio != m.prio || std::string(buf, static_cast<size_t>(n)) != m.text)
      return strfmt("mq: got prio %u; want prio %u '%s'", prio, m.prio, m.text.c_str());
  }
  if (mq_receive(q1, buf, sizeof buf, nullptr) >= 0) return "mq: one message too many";
  mq_attr a{};
  mq_getattr(q1, &a);
  close(q1);
  if (a.mq_maxmsg != 8 || a.mq_msgsize != 128) return "mq q1 attributes";
  int q2 = mq_open("/ipc-q2", O_RDONLY);
  if (q2 < 0) return "mq_open q2";
  struct stat st {};
  fstat(q2, &st);
  mq_getattr(q2, &a);
  close(q2);
  if (a.mq_maxmsg != 50 || a.mq_msgsize != 16 || st.st_uid != 1001 || st.st_gid != 1002 ||
      (st.st_mode & 0777) != 0600)
    return "mq q2 attributes";
  return "";
}

struct Dumped {
  img::UtsNs uts;
  img::IpcNs ipc;
};

Dumped dump_into(const NsChild& c, const std::string& dir) {
  image::DirSink sink(dir);
  Dumped d;
  d.uts = dump_utsns(c.ns("uts").get());
  d.ipc = dump_ipcns(c.ns("ipc").get(), sink);
  sink.commit();
  return d;
}

std::vector<std::string> messages_of(const std::string& dir, uint64_t ns_id) {
  image::DirSource src(dir);
  image::RecordReader r(src, "ipcns-" + std::to_string(ns_id) + "-msgs.img", image::Kind::IpcMsgs);
  std::vector<std::string> out;
  img::IpcMessage m;
  while (r.next(m)) out.push_back(m.SerializeAsString());
  return out;
}

std::map<uint64_t, std::string> shm_pages_of(const std::string& dir, uint64_t ns_id, int id) {
  image::DirSource src(dir);
  image::PageReader r(src, "ipcns-" + std::to_string(ns_id) + "-shm-" + std::to_string(id));
  std::map<uint64_t, std::string> out;
  r.for_each([&](uint64_t off, const uint8_t* data, size_t n) {
    for (size_t i = 0; i < n; i++)
      out[off + i * kPage] = std::string(reinterpret_cast<const char*>(data) + i * kPage, kPage);
  });
  return out;
}

// The parts of two dumps that must match (ns ids differ; nattch and
// SHM_DEST depend on who attaches).
void expect_same(const std::string& dir_a, const Dumped& a, const std::string& dir_b,
                 const Dumped& b) {
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(a.uts, b.uts))
      << a.uts.DebugString() << b.uts.DebugString();
  img::IpcNs x = a.ipc, y = b.ipc;
  x.clear_ns_id();
  y.clear_ns_id();
  for (auto* ns : {&x, &y})
    for (auto& s : *ns->mutable_shm()) {
      s.clear_nattch();
      s.clear_dest();
    }
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(x, y))
      << "first:\n"
      << x.DebugString() << "second:\n"
      << y.DebugString();
  std::vector<std::string> ma = messages_of(dir_a, a.ipc.ns_id()),
                           mb = messages_of(dir_b, b.ipc.ns_id());
  EXPECT_EQ(ma.size(), mb.size()) << "queued messages";
  for (size_t i = 0; i < std::min(ma.size(), mb.size()); i++)
    if (ma[i] != mb[i]) {
      ADD_FAILURE() << "message " << i << " differs";
      break;
    }
  for (const auto& s : a.ipc.shm())
    EXPECT_EQ(shm_pages_of(dir_a, a.ipc.ns_id(), s.perm().id()),
              shm_pages_of(dir_b, b.ipc.ns_id(), s.perm().id()))
        << "shm id " << s.perm().id();
}

class IpcNsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (setns, namespaces)";
  }
};

TEST_F(IpcNsTest, DumpLeavesSourceIntactAndRestoreRecreatesEverything) {
  TempDir tmp;
  const Ids& ids = *shared_ids();
  NsChild src(populate, [] {
    std::string err = verify_here(*shared_ids(), true);
    if (!err.empty()) fprintf(stderr, "source after dump: %s\n", err.c_str());
    return err.empty() ? 0 : 1;
  });
  ASSERT_TRUE(src.ok());

  Dumped d1 = dump_into(src, tmp.sub("d1"));
  EXPECT_EQ(d1.uts.hostname(), "ipc-test-host");
  EXPECT_EQ(d1.uts.domainname(), "ipc-test.example");
  ASSERT_EQ(d1.ipc.shm_size(), 5);
  ASSERT_EQ(d1.ipc.msg_size(), 2);
  ASSERT_EQ(d1.ipc.sem_size(), 2);
  ASSERT_EQ(d1.ipc.mqueues_size(), 2);
  std::map<int, const img::SysvShm*> shm;
  for (const auto& s : d1.ipc.shm()) shm[s.perm().id()] = &s;
  EXPECT_EQ(shm.at(ids.shm_a)->pages(), 4U);
  EXPECT_EQ(shm.at(ids.shm_b)->pages(), 3U) << "a sparse segment saves only its data pages";
  EXPECT_TRUE(shm.at(ids.shm_c)->locked());
  EXPECT_EQ(shm.at(ids.shm_c)->perm().cuid(), 1234U);
  EXPECT_EQ(ids.shm_high, 70000);
  EXPECT_TRUE(shm.at(ids.shm_dest)->dest());
  EXPECT_EQ(shm.at(ids.shm_dest)->nattch(), 1U);
  EXPECT_EQ(d1.ipc.msg(0).qnum(), sysv_messages().size());
  EXPECT_EQ(messages_of(tmp.sub("d1"), d1.ipc.ns_id()).size(),
            sysv_messages().size() + mq_sent().size());

  // The source is as it was: a second dump sees the same, and the child
  // finds all its objects, messages in order, and its sysctls.
  Dumped d2 = dump_into(src, tmp.sub("d2"));
  expect_same(tmp.sub("d1"), d1, tmp.sub("d2"), d2);
  EXPECT_EQ(src.check(), 0);

  // Into a fresh namespace.
  NsChild dst;
  ASSERT_TRUE(dst.ok());
  image::DirSource in(tmp.sub("d1"));
  check_ipcns_images(d1.ipc, in);
  restore_utsns(dst.ns("uts").get(), d1.uts);
  restore_ipcns(dst.ns("ipc").get(), d1.ipc, in);
  Dumped d3 = dump_into(dst, tmp.sub("d3"));
  expect_same(tmp.sub("d1"), d1, tmp.sub("d3"), d3);
  std::string err;
  run_in_namespace(dst.ns("uts").get(), CLONE_NEWUTS, [&] {
    // Both namespaces in one thread for verify_here.
    UniqueFd ipc = dst.ns("ipc");
    if (setns(ipc.get(), CLONE_NEWIPC) != 0) throw_errno("setns");
    err = verify_here(ids, false);
  });
  EXPECT_EQ(err, "");

  // The segment removed while attached goes once the tree has attached
  // again (here nothing attaches it: it goes at once).
  finish_ipcns_restore(dst.ns("ipc").get(), d1.ipc);
  int stat_dest = 0;
  run_in_namespace(dst.ns("ipc").get(), CLONE_NEWIPC, [&] {
    shmid_ds ds{};
    stat_dest = shmctl(ids.shm_dest, IPC_STAT, &ds);
  });
  EXPECT_LT(stat_dest, 0);
}

TEST_F(IpcNsTest, RestoreIntoUsedNamespaceSaysWhichObject) {
  TempDir tmp;
  NsChild src([] {
    if (shmget(0x1234, kPage, IPC_CREAT | 0600) < 0) throw_errno("shmget");
  });
  ASSERT_TRUE(src.ok());
  Dumped d = dump_into(src, tmp.sub("d"));
  NsChild dst([] {
    if (shmget(0x1234, kPage, IPC_CREAT | 0600) < 0) throw_errno("shmget");
  });
  ASSERT_TRUE(dst.ok());
  image::DirSource in(tmp.sub("d"));
  try {
    restore_ipcns(dst.ns("ipc").get(), d.ipc, in);
    FAIL() << "restore into a namespace holding the same key worked";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shm id 0 key 0x1234"), std::string::npos) << e.what();
  }
}

TEST_F(IpcNsTest, CallerStaysInItsNamespaces) {
  struct stat before {
  }, after{};
  ASSERT_EQ(stat("/proc/thread-self/ns/ipc", &before), 0);
  NsChild c([] {
    if (sethostname("elsewhere", 9)) throw_errno("sethostname");
  });
  ASSERT_TRUE(c.ok());
  utsname mine{};
  uname(&mine);
  img::UtsNs u = dump_utsns(c.ns("uts").get());
  EXPECT_EQ(u.hostname(), "elsewhere");
  TempDir tmp;
  image::DirSink sink(tmp.path());
  dump_ipcns(c.ns("ipc").get(), sink);
  ASSERT_EQ(stat("/proc/thread-self/ns/ipc", &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
  utsname now{};
  uname(&now);
  EXPECT_STREQ(mine.nodename, now.nodename);
}

}  // namespace
}  // namespace ckpt
