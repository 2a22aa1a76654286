// /proc/PID/mountinfo, interpreted for the mount namespace object: the
// fields of each line (split and unescaped by proc::parse_mountinfo), the
// optional fields (shared:N, master:N, propagate_from:N, unbindable), the
// per-mount options as MOUNT_ATTR_* bits, and the superblock options with
// "ro"/"rw" taken out. Also the path helpers every user of mount points
// needs (prefix tests that respect '/' boundaries).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sys/proc.h"

namespace ckpt::mountinfo {

struct Propagation {
  uint32_t shared = 0;          // peer group id, 0 if not shared
  uint32_t master = 0;          // peer group this mount is a slave of, 0 if none
  uint32_t propagate_from = 0;  // nearest dominant group visible (slaves only)
  bool unbindable = false;
  bool is_private() const { return !shared && !master && !unbindable; }
};

struct Entry {
  int mnt_id = 0, parent_id = 0;
  unsigned dev_major = 0, dev_minor = 0;
  std::string root;         // path inside the filesystem this mount shows
  std::string mount_point;  // absolute, as the reading process sees it
  std::string fstype, source;
  std::string mount_options;  // raw per-mount options ("rw,nosuid,relatime")
  std::string super_options;  // raw superblock options
  Propagation prop;
  // Per-mount flags as MOUNT_ATTR_* (sys/mount.h): RDONLY, NOSUID, NODEV,
  // NOEXEC, the atime mode (NOATIME, STRICTATIME when neither noatime nor
  // relatime is shown, else RELATIME = 0), NODIRATIME, NOSYMFOLLOW.
  uint64_t attrs = 0;
  // Per-mount options this parser does not know (e.g. "idmapped").
  std::vector<std::string> unknown_options;
  bool sb_readonly = false;  // "ro" in the superblock options
  std::string sb_data;       // superblock options without "ro"/"rw", comma-joined
  bool same_dev(const Entry& o) const {
    return dev_major == o.dev_major && dev_minor == o.dev_minor;
  }
};

// Throws Error naming the line on anything malformed, including an optional
// field it does not know.
std::vector<Entry> parse(std::string_view text);
std::vector<Entry> read(pid_t pid);
// /proc/self/mountinfo (right also where getpid() is not our pid in the
// pid namespace /proc was mounted for).
std::vector<Entry> read_self();

// "a:b" for messages.
std::string dev_string(const Entry& e);

// True if path is dir or below it ("/a/b" is under "/a" and "/", "/ab" is not).
bool path_under(std::string_view path, std::string_view dir);
// path with dir taken off the front, as a relative path ("" for dir
// itself); path must be under dir.
std::string path_rel(std::string_view path, std::string_view dir);
// dir + "/" + rel without doubled slashes; rel "" gives dir.
std::string path_join(std::string_view dir, std::string_view rel);

}  // namespace ckpt::mountinfo
