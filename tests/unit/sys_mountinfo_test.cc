// Tests for sys/mountinfo: the interpretation of mountinfo lines (optional
// fields, per-mount flags, superblock options) on captured and hand-made
// text, malformed text, the path helpers, and this process's own table.
#include "sys/mountinfo.h"

#include <sys/mount.h>
#include <unistd.h>

#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "sys/error.h"
#include "sys/fd.h"

namespace ckpt::mountinfo {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no Error thrown";
  return "";
}

// Captured inside a container-like namespace: pivot_root into a bind-mounted
// rootfs, then /proc, a tmpfs with a space in its name, a read-only bind of
// a host directory with a tmpfs inside, a shared tmpfs with a peer and a
// slave, and an unbindable one.
constexpr const char* kContainer =
    "301 250 254:0 /tmp/mnt-x/rootfs / rw,relatime - ext4 /dev/vda rw,discard\n"
    "302 301 0:61 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw,hidepid=invisible\n"
    "303 301 0:62 / /tmp/with\\040space rw,nosuid,nodev,noatime - tmpfs tmp\\040fs "
    "rw,size=1024k,mode=1777,inode64\n"
    "304 301 254:0 /usr /data ro,relatime - ext4 /dev/vda rw,discard\n"
    "305 304 0:63 / /data/inner rw,nodiratime,nosymfollow - tmpfs tmpfs ro,size=64k\n"
    "306 301 0:64 / /shared rw,relatime shared:77 - tmpfs tmpfs rw\n"
    "307 301 0:64 /sub /peer rw,relatime shared:77 - tmpfs tmpfs rw\n"
    "308 301 0:64 / /slave rw,relatime master:77 - tmpfs tmpfs rw\n"
    "309 301 0:64 / /both rw,relatime shared:78 master:77 propagate_from:5 - tmpfs tmpfs rw\n"
    "310 301 0:65 / /unb rw,relatime unbindable - tmpfs tmpfs rw\n";

TEST(Mountinfo, Container) {
  std::vector<Entry> ms = parse(kContainer);
  ASSERT_EQ(ms.size(), 10u);

  const Entry& root = ms[0];
  EXPECT_EQ(root.mnt_id, 301);
  EXPECT_EQ(root.parent_id, 250);
  EXPECT_EQ(root.root, "/tmp/mnt-x/rootfs");
  EXPECT_EQ(root.mount_point, "/");
  EXPECT_EQ(root.attrs, uint64_t{MOUNT_ATTR_RELATIME});
  EXPECT_TRUE(root.prop.is_private());
  EXPECT_FALSE(root.sb_readonly);
  EXPECT_EQ(root.sb_data, "discard");
  EXPECT_EQ(dev_string(root), "254:0");

  const Entry& proc = ms[1];
  EXPECT_EQ(proc.attrs, uint64_t{MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC});
  EXPECT_EQ(proc.sb_data, "hidepid=invisible");

  const Entry& tmp = ms[2];
  EXPECT_EQ(tmp.mount_point, "/tmp/with space");
  EXPECT_EQ(tmp.source, "tmp fs");
  EXPECT_EQ(tmp.attrs, uint64_t{MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOATIME});
  EXPECT_EQ(tmp.sb_data, "size=1024k,mode=1777,inode64");

  const Entry& data = ms[3];
  EXPECT_EQ(data.attrs, uint64_t{MOUNT_ATTR_RDONLY});
  EXPECT_TRUE(data.same_dev(root));

  const Entry& inner = ms[4];
  // No atime word means strictatime.
  EXPECT_EQ(inner.attrs,
            uint64_t{MOUNT_ATTR_STRICTATIME | MOUNT_ATTR_NODIRATIME | MOUNT_ATTR_NOSYMFOLLOW});
  EXPECT_TRUE(inner.sb_readonly);
  EXPECT_EQ(inner.sb_data, "size=64k");

  EXPECT_EQ(ms[5].prop.shared, 77u);
  EXPECT_EQ(ms[5].prop.master, 0u);
  EXPECT_EQ(ms[6].prop.shared, 77u);
  EXPECT_EQ(ms[6].root, "/sub");
  EXPECT_EQ(ms[7].prop.shared, 0u);
  EXPECT_EQ(ms[7].prop.master, 77u);
  EXPECT_EQ(ms[8].prop.shared, 78u);
  EXPECT_EQ(ms[8].prop.master, 77u);
  EXPECT_EQ(ms[8].prop.propagate_from, 5u);
  EXPECT_TRUE(ms[9].prop.unbindable);
  EXPECT_FALSE(ms[9].prop.is_private());
  for (const Entry& e : ms) EXPECT_TRUE(e.unknown_options.empty()) << e.mount_point;
}

// The file the proc tests use, captured after "mount --make-rshared /".
TEST(Mountinfo, CapturedHost) {
  std::vector<Entry> ms = parse(read_file(std::string(CKPT_TESTDATA) + "/mountinfo.txt"));
  ASSERT_EQ(ms.size(), 22u);
  EXPECT_EQ(ms[0].prop.shared, 1u);
  EXPECT_EQ(ms[1].attrs, uint64_t{MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV});
  EXPECT_TRUE(ms[1].sb_readonly);
  EXPECT_EQ(ms[1].sb_data, "size=4k,mode=755");
  EXPECT_EQ(ms[20].mount_point, "/tmp/proccap/mnt point");
  EXPECT_EQ(ms[21].prop.master, 21u);
}

TEST(Mountinfo, NsfsRoot) {
  // ip netns add: a bind of an nsfs inode, whose root is not a path.
  std::vector<Entry> ms = parse(
      "1 0 0:1 / / rw - ext4 /dev/x rw\n2 1 0:4 net:[4026532176] /run/netns/a rw - nsfs "
      "nsfs rw\n");
  EXPECT_EQ(ms[1].root, "net:[4026532176]");
  EXPECT_EQ(ms[1].fstype, "nsfs");
}

TEST(Mountinfo, UnknownPerMountOptionIsKept) {
  std::vector<Entry> ms = parse("1 0 0:1 / / rw,idmapped,relatime - ext4 /dev/x rw\n");
  EXPECT_EQ(ms[0].unknown_options, std::vector<std::string>{"idmapped"});
  EXPECT_EQ(ms[0].attrs, uint64_t{MOUNT_ATTR_RELATIME});
}

TEST(Mountinfo, Malformed) {
  auto err = [](const char* text) { return error_of([&] { parse(text); }); };
  EXPECT_NE(
      err("1 0 0:1 / / rw slave:3 - t s rw\n").find("line 1: unknown optional field 'slave:3'"),
      std::string::npos);
  EXPECT_NE(err("1 0 0:1 / / rw shared:x - t s rw\n").find("unknown optional field 'shared:x'"),
            std::string::npos);
  EXPECT_NE(err("1 0 0:1 / / rw shared:0 - t s rw\n").find("unknown optional field"),
            std::string::npos);
  EXPECT_NE(err("1 0 0:1 / / rw master: - t s rw\n").find("unknown optional field"),
            std::string::npos);
  EXPECT_NE(err("1 0 0:1 / / nosuid - t s rw\n").find("lack rw or ro"), std::string::npos);
  EXPECT_NE(err("1 0 0:1 / / rw - t s rw\n2 1 0:2 / a rw - t s rw\n")
                .find("line 2: mount point 'a' is not absolute"),
            std::string::npos);
  EXPECT_NE(err("1 0 0:1 / a rw - t s rw\n").find("mount point 'a' is not absolute"),
            std::string::npos);
  // The line splitting errors come from proc::parse_mountinfo.
  EXPECT_NE(err("").find("no mounts"), std::string::npos);
  EXPECT_NE(err("1 0 0:1 / / rw shared:1 t s rw\n").find("line 1: expected"), std::string::npos);
}

TEST(Mountinfo, Paths) {
  EXPECT_TRUE(path_under("/a/b", "/a"));
  EXPECT_TRUE(path_under("/a", "/a"));
  EXPECT_TRUE(path_under("/a", "/a/"));
  EXPECT_TRUE(path_under("/a/b", "/"));
  EXPECT_TRUE(path_under("/", "/"));
  EXPECT_FALSE(path_under("/ab", "/a"));
  EXPECT_FALSE(path_under("/a", "/a/b"));
  EXPECT_EQ(path_rel("/a/b/c", "/a"), "b/c");
  EXPECT_EQ(path_rel("/a", "/a"), "");
  EXPECT_EQ(path_rel("/a/b", "/"), "a/b");
  EXPECT_EQ(path_join("/x", "b/c"), "/x/b/c");
  EXPECT_EQ(path_join("/x/", "/b"), "/x/b");
  EXPECT_EQ(path_join("/", "b"), "/b");
  EXPECT_EQ(path_join("/x", ""), "/x");
  EXPECT_EQ(path_join("", "/"), "/");
}

TEST(Mountinfo, Live) {
  std::vector<Entry> ms = read(getpid());
  ASSERT_FALSE(ms.empty());
  bool root = false;
  for (const Entry& e : ms) root |= e.mount_point == "/";
  EXPECT_TRUE(root);
}

}  // namespace
}  // namespace ckpt::mountinfo
