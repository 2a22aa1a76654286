// The mount namespace object end to end: a forked child builds a
// container-like mount tree in new mount and pid namespaces, dump_mntns saves
// it from outside, another child in fresh namespaces calls restore_mntns, and
// the two trees must look the same: mountinfo with ids and devices masked
// (peer groups renumbered), and a manifest of the tmpfs files (type, mode,
// owner, size, mtime, content hash, hard links, xattrs, sparseness).
//
// Everything the test mounts lives in namespaces of its own children, so it
// goes away with them; the guards kill and reap the children and remove the
// temporary directories (mnt-XXXXXX in /tmp) whatever happens.
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "image/image_io.h"
#include "objects/mnt_ns.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/mountinfo.h"

namespace ckpt {
namespace {

void check(bool ok, const std::string& what) {
  if (!ok) throw_errno(what);
}

void write_text(const std::string& path, const std::string& text, mode_t mode) {
  UniqueFd f = open_or_throw(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  write_full(f.get(), text.data(), text.size(), path);
}

// A temporary directory, removed with everything in it (nothing is mounted
// in it in our namespace; the children's mounts die with them).
class TempDir {
 public:
  TempDir() {
    std::string t = "/tmp/mnt-XXXXXX";
    if (!mkdtemp(t.data())) throw_errno("mkdtemp");
    path_ = t;
  }
  ~TempDir() {
    nftw(
        path_.c_str(),
        [](const char* p, const struct stat*, int type, FTW*) {
          if (type == FTW_DP)
            rmdir(p);
          else
            unlink(p);
          return 0;
        },
        16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

// A child that runs fn as pid 1 of new mount and pid namespaces (the mount
// namespace made private first), reports "OK" or the error, then waits to be
// killed. Killing the pid-1 process ends everything in its namespaces.
class NsChild {
 public:
  // propagation: what the child makes of the mounts it copied (MS_PRIVATE,
  // or MS_SLAVE as container runtimes do to keep receiving the host's).
  explicit NsChild(const std::function<void()>& fn, unsigned long propagation = MS_PRIVATE) {
    // The pid and the report come through separate pipes: the two writers race.
    int p[2], q[2];
    check(pipe2(p, O_CLOEXEC) == 0 && pipe2(q, O_CLOEXEC) == 0, "pipe");
    UniqueFd rd(p[0]), wr(p[1]), pid_rd(q[0]), pid_wr(q[1]);
    pid_t outer = fork();
    check(outer >= 0, "fork");
    if (outer == 0) {
      rd.reset();
      pid_rd.reset();
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (unshare(CLONE_NEWNS | CLONE_NEWPID) != 0 ||
          mount("none", "/", nullptr, MS_REC | propagation, nullptr) != 0)
        _exit(2);
      pid_t inner = fork();
      if (inner < 0) _exit(3);
      if (inner == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        std::string msg = "OK";
        try {
          fn();
        } catch (const std::exception& e) {
          msg = std::string("ERR ") + e.what();
        }
        (void)!write(wr.get(), msg.data(), msg.size());
        wr.reset();
        for (;;) pause();
      }
      (void)!write(pid_wr.get(), &inner, sizeof(inner));
      waitpid(inner, nullptr, 0);
      _exit(0);
    }
    outer_ = outer;
    wr.reset();
    pid_wr.reset();
    pid_t inner = 0;
    if (!read_full(pid_rd.get(), &inner, sizeof(inner), "child pid")) throw Error("child died");
    pid_ = inner;
    pollfd pfd{rd.get(), POLLIN, 0};
    if (poll(&pfd, 1, 60000) != 1) throw Error("child did not report in 60 s");
    char buf[4096];
    ssize_t n = read(rd.get(), buf, sizeof(buf));
    status_ = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "child died";
  }
  NsChild(const NsChild&) = delete;
  ~NsChild() {
    if (pid_ > 0) kill(pid_, SIGKILL);
    if (outer_ > 0) {
      kill(outer_, SIGKILL);
      waitpid(outer_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  const std::string& status() const { return status_; }

 private:
  pid_t outer_ = -1, pid_ = -1;
  std::string status_;
};

uint64_t fnv(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// One line per file under dir (as a user sees it, mounts included).
std::string manifest(const std::string& dir) {
  std::string out;
  std::map<std::pair<dev_t, ino_t>, std::string> first;
  std::function<void(const std::string&)> walk = [&](const std::string& rel) {
    std::string p = rel.empty() ? dir : dir + "/" + rel;
    struct stat st {};
    check(lstat(p.c_str(), &st) == 0, "lstat " + p);
    std::string line = strfmt("%s mode=%o uid=%u gid=%u", rel.empty() ? "." : rel.c_str(),
                              st.st_mode, st.st_uid, st.st_gid);
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      auto [it, fresh] = first.emplace(std::make_pair(st.st_dev, st.st_ino), rel);
      line += " nlink=" + std::to_string(st.st_nlink);
      if (!fresh) line += " same-as=" + it->second;
    }
    if (!S_ISDIR(st.st_mode))
      line += strfmt(" mtime=%lld.%09ld", (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    if (S_ISREG(st.st_mode)) {
      std::string data = read_file(p);
      line += strfmt(" size=%lld hash=%llx", (long long)st.st_size, (unsigned long long)fnv(data));
      if (st.st_size > (1 << 20)) line += st.st_blocks * 512 < st.st_size ? " sparse" : " dense";
      char val[256];
      ssize_t n = getxattr(p.c_str(), "user.color", val, sizeof(val));
      if (n >= 0) line += " user.color=" + std::string(val, static_cast<size_t>(n));
    } else if (S_ISLNK(st.st_mode)) {
      line += " -> " + read_link(p);
    } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
      line += strfmt(" rdev=%u:%u", major(st.st_rdev), minor(st.st_rdev));
    }
    out += line + "\n";
    if (!S_ISDIR(st.st_mode)) return;
    std::vector<std::string> names;
    DIR* d = opendir(p.c_str());
    check(d != nullptr, "opendir " + p);
    while (dirent* e = readdir(d))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names.emplace_back(e->d_name);
    closedir(d);
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) walk(rel.empty() ? n : rel + "/" + n);
  };
  walk("");
  return out;
}

// mountinfo of pid with mount ids, devices and peer group ids replaced by
// their order of appearance; only mount points keep() accepts.
std::string normalized_mountinfo(pid_t pid, const std::function<bool(const std::string&)>& keep) {
  std::vector<mountinfo::Entry> all = mountinfo::read(pid), ms;
  for (const mountinfo::Entry& e : all)
    if (keep(e.mount_point)) ms.push_back(e);
  std::map<int, size_t> idx;
  std::map<std::string, size_t> devs;
  std::map<uint32_t, size_t> groups;
  auto group = [&](uint32_t g) { return groups.emplace(g, groups.size()).first->second; };
  std::string out;
  for (size_t i = 0; i < ms.size(); i++) idx[ms[i].mnt_id] = i;
  for (size_t i = 0; i < ms.size(); i++) {
    const mountinfo::Entry& e = ms[i];
    auto parent = idx.find(e.parent_id);
    std::string line = strfmt("%zu %s d%zu %s %s %s", i,
                              parent == idx.end() ? "-" : std::to_string(parent->second).c_str(),
                              devs.emplace(mountinfo::dev_string(e), devs.size()).first->second,
                              e.root.c_str(), e.mount_point.c_str(), e.mount_options.c_str());
    if (e.prop.shared) line += strfmt(" shared:g%zu", group(e.prop.shared));
    if (e.prop.master) line += strfmt(" master:g%zu", group(e.prop.master));
    if (e.prop.unbindable) line += " unbindable";
    line += " - " + e.fstype + " " + e.source + " " + e.super_options;
    out += line + "\n";
  }
  return out;
}

// Files of every kind the tmpfs archive handles.
void populate(const std::string& d) {
  check(mkdir((d + "/dir").c_str(), 0750) == 0, "mkdir dir");
  check(chown((d + "/dir").c_str(), 1000, 1000) == 0, "chown dir");
  write_text(d + "/dir/small", "hello, tmpfs\n", 0640);
  check(chown((d + "/dir/small").c_str(), 1001, 1002) == 0, "chown small");
  check(setxattr((d + "/dir/small").c_str(), "user.color", "blue", 4, 0) == 0, "setxattr");
  timespec old[2] = {{1000000000, 5}, {1000000000, 123456789}};
  check(utimensat(AT_FDCWD, (d + "/dir/small").c_str(), old, 0) == 0, "utimensat");
  {
    // 3 MiB with data at the start and the end only.
    UniqueFd f = open_or_throw(d + "/big", O_WRONLY | O_CREAT, 0600);
    std::string head(70000, 'x');
    for (size_t i = 0; i < head.size(); i++) head[i] = static_cast<char>('a' + i % 23);
    write_full(f.get(), head.data(), head.size(), "big");
    pwrite_full(f.get(), "tail", 4, (3 << 20) - 4, "big");
  }
  check(link((d + "/big").c_str(), (d + "/dir/big-link").c_str()) == 0, "link");
  check(symlink("dir/small", (d + "/sym").c_str()) == 0, "symlink");
  check(lchown((d + "/sym").c_str(), 1003, 1003) == 0, "lchown");
  check(mkfifo((d + "/fifo").c_str(), 0620) == 0, "mkfifo");
  check(mknod((d + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0, "mknod");
  write_text(d + "/suid", "#!/bin/true\n", 0755);
  check(chmod((d + "/suid").c_str(), 04755) == 0, "chmod suid");
  write_text(d + "/empty", "", 0644);
  check(
      mkdir((d + "/dir/sub").c_str(), 0755) == 0 && mkdir((d + "/dir/sub/deep").c_str(), 0700) == 0,
      "mkdir deep");
  write_text(d + "/dir/sub/deep/file", std::string(5000, 'z'), 0444);
  check(mkdir((d + "/ro_dir").c_str(), 0755) == 0, "mkdir ro_dir");
  write_text(d + "/ro_dir/inside", "x", 0600);
  check(chmod((d + "/ro_dir").c_str(), 0555) == 0, "chmod ro_dir");
  check(mkdir((d + "/mp").c_str(), 0711) == 0, "mkdir mp");
}

// The container's mounts under base ("" for a rootfs after pivot_root):
// a tmpfs with files and a tmpfs inside it, a read-only bind of a host
// directory with a tmpfs inside, and a shared tmpfs with a peer (a bind of a
// subdirectory) and a slave.
void container_mounts(const std::string& base, const std::string& hostdata) {
  auto mnt = [](const char* src, const std::string& dst, const char* type, unsigned long fl,
                const char* data) {
    check(mount(src, dst.c_str(), type, fl, data) == 0, "mount " + dst);
  };
  mnt("tmpfs", base + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=8m,mode=1777");
  populate(base + "/tmp");
  mnt("inner-tmpfs", base + "/tmp/mp", "tmpfs", MS_NOATIME, "size=1m,mode=700,uid=1000");
  write_text(base + "/tmp/mp/in-mp", "under a mount", 0600);
  mnt(hostdata.c_str(), base + "/data", nullptr, MS_BIND, nullptr);
  mnt(nullptr, base + "/data", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOEXEC, nullptr);
  mnt("tmpfs", base + "/data/inner", "tmpfs", 0, "size=1m");
  write_text(base + "/data/inner/f", "nested", 0644);
  mnt("tmpfs", base + "/shared", "tmpfs", 0, "size=1m");
  check(mkdir((base + "/shared/sub").c_str(), 0755) == 0, "mkdir shared/sub");
  mnt(nullptr, base + "/shared", nullptr, MS_SHARED, nullptr);
  mnt((base + "/shared/sub").c_str(), base + "/peer", nullptr, MS_BIND, nullptr);
  mnt((base + "/shared").c_str(), base + "/slave", nullptr, MS_BIND, nullptr);
  mnt(nullptr, base + "/slave", nullptr, MS_SLAVE, nullptr);
}

// What container runtimes add: /dev as a tmpfs with a devpts and an mqueue,
// a read-only sysfs, /proc/sys bound read-only over itself, a proc file
// masked with the host's /dev/null (/proc/uptime: this VM has no kcore).
void runtime_mounts(const std::string& base) {
  auto mnt = [](const char* src, const std::string& dst, const char* type, unsigned long fl,
                const char* data) {
    check(mount(src, dst.c_str(), type, fl, data) == 0, "mount " + dst);
  };
  mnt("tmpfs", base + "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=64k");
  check(mkdir((base + "/dev/pts").c_str(), 0755) == 0 &&
            mkdir((base + "/dev/mqueue").c_str(), 0755) == 0,
        "mkdir dev/*");
  mnt("devpts", base + "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
      "newinstance,ptmxmode=0666,mode=0620");
  mnt("mqueue", base + "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  mnt("sysfs", base + "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  mnt((base + "/proc/sys").c_str(), base + "/proc/sys", nullptr, MS_BIND, nullptr);
  mnt(nullptr, base + "/proc/sys", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr);
  mnt("/dev/null", base + "/proc/uptime", nullptr, MS_BIND, nullptr);
}

void make_dirs(const std::string& base) {
  for (const char* d : {"", "/proc", "/tmp", "/data", "/shared", "/peer", "/slave", "/dev", "/sys"})
    check(mkdir((base + d).c_str(), 0755) == 0 || errno == EEXIST, "mkdir " + base + d);
}

void make_hostdata(const std::string& hostdata) {
  check(mkdir(hostdata.c_str(), 0755) == 0, "mkdir hostdata");
  check(mkdir((hostdata + "/inner").c_str(), 0755) == 0, "mkdir inner");
  write_text(hostdata + "/host-file", "from the host\n", 0644);
}

int count_stages() {
  int n = 0;
  DIR* d = opendir("/tmp");
  if (!d) return -1;
  while (dirent* e = readdir(d)) n += strncmp(e->d_name, ".ckpt-mntns-", 12) == 0;
  closedir(d);
  return n;
}

// Restores from dir in a fresh child (mount + pid namespaces, the mount
// namespace a copy of ours, as the restore pipeline makes it).
std::unique_ptr<NsChild> restore_child(const std::string& dir) {
  return std::make_unique<NsChild>([dir] {
    image::DirSource src(dir);
    restore_mntns(load_mntns(src), src);
  });
}

// Runs fn in a child inside pid's mount namespace and root; its result.
bool in_ns_of(pid_t pid, const std::function<bool()>& fn) {
  UniqueFd ns = open_or_throw(strfmt("/proc/%d/ns/mnt", pid), O_RDONLY);
  UniqueFd root = open_or_throw(strfmt("/proc/%d/root", pid), O_PATH | O_DIRECTORY);
  pid_t c = fork();
  check(c >= 0, "fork");
  if (c == 0) {
    bool ok = setns(ns.get(), CLONE_NEWNS) == 0 && fchdir(root.get()) == 0 && chroot(".") == 0;
    _exit(ok && fn() ? 0 : 1);
  }
  int st = 0;
  waitpid(c, &st, 0);
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

bool is_mount_point(const std::string& p) {
  struct stat a {
  }, b{};
  return stat(p.c_str(), &a) == 0 && stat((p + "/..").c_str(), &b) == 0 && a.st_dev != b.st_dev;
}

// The peer group and the slave work: a mount under /shared/sub shows in
// /peer (a peer of that subdirectory) and in /slave; one under /slave does
// not go back to /shared.
bool propagation_works() {
  if (mkdir("/shared/sub/y", 0755) != 0 || mkdir("/shared/z", 0755) != 0) return false;
  if (mount("tmpfs", "/shared/sub/y", "tmpfs", 0, "size=4k") != 0) return false;
  if (mount("tmpfs", "/slave/z", "tmpfs", 0, "size=4k") != 0) return false;
  return is_mount_point("/peer/y") && is_mount_point("/slave/sub/y") &&
         !is_mount_point("/shared/z");
}

class MntNsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (mount namespaces)";
  }
};

TEST_F(MntNsTest, RootfsWithPivotRoot) {
  TempDir t;
  std::string rootfs = t / "rootfs", hostdata = t / "hostdata", img = t / "img";
  make_dirs(rootfs);
  make_hostdata(hostdata);
  NsChild ct([&] {
    check(mount(rootfs.c_str(), rootfs.c_str(), nullptr, MS_BIND, nullptr) == 0, "bind rootfs");
    check(mount("proc", (rootfs + "/proc").c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                nullptr) == 0,
          "mount proc");
    container_mounts(rootfs, hostdata);
    runtime_mounts(rootfs);
    check(chdir(rootfs.c_str()) == 0, "chdir");
    check(syscall(SYS_pivot_root, ".", ".") == 0, "pivot_root");
    check(umount2(".", MNT_DETACH) == 0, "umount old root");
    check(chdir("/") == 0, "chdir /");
  });
  ASSERT_EQ(ct.status(), "OK");
  auto all = [](const std::string&) { return true; };
  std::string want_mounts = normalized_mountinfo(ct.pid(), all);
  std::string root = strfmt("/proc/%d/root", ct.pid());
  std::string want_tmp = manifest(root + "/tmp");
  std::string want_data = manifest(root + "/data");

  {
    image::DirSink sink(img);
    img::MntNs ns = dump_mntns(ct.pid(), sink);
    EXPECT_FALSE(ns.host_root());
    EXPECT_EQ(ns.root_host_path(), rootfs);
    if (getenv("MNTNS_TEST_VERBOSE"))
      fprintf(stderr, "%s\n%s\n", want_mounts.c_str(), ns.DebugString().c_str());
    save_mntns(sink, ns);
    sink.commit();
  }
  int stages = count_stages();
  auto rs = restore_child(img);
  ASSERT_EQ(rs->status(), "OK");
  EXPECT_EQ(count_stages(), stages) << "staging directory left in /tmp";
  EXPECT_EQ(normalized_mountinfo(rs->pid(), all), want_mounts);
  std::string rroot = strfmt("/proc/%d/root", rs->pid());
  EXPECT_EQ(manifest(rroot + "/tmp"), want_tmp);
  EXPECT_EQ(manifest(rroot + "/data"), want_data);
  // The root is the rootfs; /proc is the new pid namespace's (pid 1 is the
  // restored process itself).
  struct stat a {
  }, b{};
  ASSERT_EQ(stat(rroot.c_str(), &a), 0);
  ASSERT_EQ(stat(rootfs.c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(read_link(rroot + "/proc/1/exe"), read_link(strfmt("/proc/%d/exe", rs->pid())));
  EXPECT_EQ(read_link(strfmt("/proc/%d/cwd", rs->pid())), "/");
  // The comparison above covered propagation as mountinfo shows it...
  EXPECT_NE(want_mounts.find(" /peer rw,relatime shared:g0 "), std::string::npos) << want_mounts;
  EXPECT_NE(want_mounts.find(" /slave rw,relatime master:g0 "), std::string::npos) << want_mounts;
  EXPECT_NE(want_mounts.find(" /data ro,noexec,relatime "), std::string::npos) << want_mounts;
  // ...and the kernel agrees: events propagate as in the original.
  EXPECT_TRUE(in_ns_of(ct.pid(), propagation_works)) << "the original tree";
  EXPECT_TRUE(in_ns_of(rs->pid(), propagation_works)) << "the restored tree";
}

TEST_F(MntNsTest, HostRoot) {
  TempDir t;
  std::string base = t / "ct", hostdata = t / "hostdata", img = t / "img";
  make_dirs(base);
  make_hostdata(hostdata);
  NsChild ct([&] {
    check(mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) == 0,
          "mount proc");
    container_mounts(base, hostdata);
  });
  ASSERT_EQ(ct.status(), "OK");
  auto keep = [&](const std::string& mp) {
    return mp == "/" || mp == "/proc" || mountinfo::path_under(mp, t.path());
  };
  std::string want_mounts = normalized_mountinfo(ct.pid(), keep);
  std::string root = strfmt("/proc/%d/root", ct.pid());
  std::string want_tmp = manifest(root + base + "/tmp");

  {
    image::DirSink sink(img);
    img::MntNs ns = dump_mntns(ct.pid(), sink);
    EXPECT_TRUE(ns.host_root());
    // /proc, the two tmpfs, the bind and the tmpfs in it, shared, peer, slave.
    EXPECT_EQ(ns.mounts_size(), 8);
    save_mntns(sink, ns);
    sink.commit();
  }
  auto rs = restore_child(img);
  ASSERT_EQ(rs->status(), "OK");
  EXPECT_EQ(normalized_mountinfo(rs->pid(), keep), want_mounts);
  std::string rroot = strfmt("/proc/%d/root", rs->pid());
  EXPECT_EQ(manifest(rroot + base + "/tmp"), want_tmp);
  EXPECT_EQ(read_link(rroot + "/proc/1/exe"), read_link(strfmt("/proc/%d/exe", rs->pid())));
}

// An overlay rootfs mounted on the host (saved as a bind of its merged
// directory) and bind mounts that are slaves of the host's shared mounts.
// The "host" is a child of its own, so its mounts can be shared and the
// overlay mounted without touching the machine's namespace; it runs the
// dump and the restore and reports a mismatch as an error.
TEST_F(MntNsTest, OverlayRootfsSlaveOfHost) {
  TempDir t;
  std::string h = t / "h";
  make_dirs(h);
  NsChild host([&] {
    auto mnt = [](const char* src, const std::string& dst, const char* type, unsigned long fl,
                  const char* data) {
      check(mount(src, dst.c_str(), type, fl, data) == 0, "mount " + dst);
    };
    // Pids below are this namespace's: /proc must show it.
    mnt("proc", "/proc", "proc", 0, nullptr);
    mnt("scratch", h, "tmpfs", 0, "size=16m");
    for (const char* d :
         {"/lower", "/upper", "/work", "/merged", "/src", "/lower/proc", "/lower/data", "/img"})
      check(mkdir((h + d).c_str(), 0755) == 0, std::string("mkdir ") + d);
    write_text(h + "/lower/etc-file", "from the lower layer\n", 0644);
    write_text(h + "/src/shared-file", "on a shared host mount\n", 0644);
    mnt(nullptr, h, nullptr, MS_SHARED, nullptr);
    std::string opts = "lowerdir=" + h + "/lower,upperdir=" + h + "/upper,workdir=" + h + "/work";
    mnt("overlay", h + "/merged", "overlay", 0, opts.c_str());
    std::string rootfs = h + "/merged";
    auto container = [&] {
      mnt(rootfs.c_str(), rootfs, nullptr, MS_BIND, nullptr);
      mnt("proc", rootfs + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
      mnt((h + "/src").c_str(), rootfs + "/data", nullptr, MS_BIND, nullptr);
      check(chdir(rootfs.c_str()) == 0, "chdir");
      check(syscall(SYS_pivot_root, ".", ".") == 0, "pivot_root");
      check(umount2(".", MNT_DETACH) == 0, "umount old root");
      check(chdir("/") == 0, "chdir /");
    };
    NsChild ct(container, MS_SLAVE);
    if (ct.status() != "OK") throw Error("container: " + ct.status());
    auto all = [](const std::string&) { return true; };
    std::string want = normalized_mountinfo(ct.pid(), all);
    for (const char* w : {" / rw,relatime master:g0 - overlay", " /data rw,relatime master:g1 "})
      if (want.find(w) == std::string::npos) throw Error("unexpected original tree:\n" + want);
    {
      image::DirSink sink(h + "/img");
      img::MntNs ns = dump_mntns(ct.pid(), sink);
      if (ns.mounts(0).kind() != img::MOUNT_BIND_HOST || ns.mounts(0).host_path() != rootfs)
        throw Error("the overlay rootfs is not a bind of " + rootfs + ": " + ns.DebugString());
      save_mntns(sink, ns);
      sink.commit();
    }
    NsChild rs(
        [&] {
          image::DirSource src(h + "/img");
          restore_mntns(load_mntns(src), src);
        },
        MS_SHARED);
    if (rs.status() != "OK") throw Error("restore: " + rs.status());
    std::string got = normalized_mountinfo(rs.pid(), all);
    if (got != want) throw Error("restored tree:\n" + got + "original:\n" + want);
    std::string f = read_file(strfmt("/proc/%d/root/etc-file", rs.pid()));
    if (f != "from the lower layer\n") throw Error("rootfs content: " + f);
    // Still a slave: a mount the host makes under its shared /src reaches
    // the restored /data.
    check(mkdir((h + "/src/late").c_str(), 0755) == 0, "mkdir late");
    mnt("late", h + "/src/late", "tmpfs", 0, "size=4k");
    if (!in_ns_of(rs.pid(), [] { return is_mount_point("/data/late"); }))
      throw Error("the host's new mount did not reach the restored /data");
  });
  EXPECT_EQ(host.status(), "OK");
}

TEST_F(MntNsTest, ClearErrors) {
  TempDir t;
  std::string base = t / "ct", hostdata = t / "hostdata", img = t / "img";
  make_dirs(base);
  make_hostdata(hostdata);
  check(mkdir((base + "/ram").c_str(), 0755) == 0, "mkdir");

  // An unsupported filesystem: the dump names the mount point and the type.
  {
    NsChild ct([&] {
      check(mount("ramfs", (base + "/ram").c_str(), "ramfs", 0, nullptr) == 0, "mount ramfs");
    });
    ASSERT_EQ(ct.status(), "OK");
    image::DirSink sink(img + "-ram");
    try {
      dump_mntns(ct.pid(), sink);
      ADD_FAILURE() << "ramfs was accepted";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("mount at " + base + "/ram (ramfs"), std::string::npos) << msg;
      EXPECT_NE(msg.find("fs type ramfs is not supported"), std::string::npos) << msg;
    }
  }

  // A bind source missing at restore: the restore names it.
  {
    NsChild ct([&] {
      check(mount(hostdata.c_str(), (base + "/data").c_str(), nullptr, MS_BIND, nullptr) == 0,
            "bind");
    });
    ASSERT_EQ(ct.status(), "OK");
    image::DirSink sink(img);
    save_mntns(sink, dump_mntns(ct.pid(), sink));
    sink.commit();
  }
  ASSERT_EQ(rename(hostdata.c_str(), (hostdata + "-gone").c_str()), 0);
  auto rs = restore_child(img);
  EXPECT_NE(rs->status().find("mount at " + base + "/data"), std::string::npos) << rs->status();
  EXPECT_NE(rs->status().find("bind source " + hostdata + " on this host: No such file"),
            std::string::npos)
      << rs->status();
}

}  // namespace
}  // namespace ckpt
