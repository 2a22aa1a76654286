#include "sys/mountinfo.h"

#include <sys/mount.h>

#include <charconv>

#include "sys/error.h"
#include "sys/fd.h"

namespace ckpt::mountinfo {

namespace {

[[noreturn]] void fail(const std::string& what, size_t line, const std::string& msg) {
  throw Error(strfmt("%s: line %zu: %s", what.c_str(), line, msg.c_str()));
}

bool parse_tag(std::string_view field, std::string_view tag, uint32_t* out) {
  if (field.substr(0, tag.size()) != tag) return false;
  std::string_view num = field.substr(tag.size());
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), *out);
  return ec == std::errc() && p == num.data() + num.size() && *out != 0;
}

void parse_optional(const std::string& field, Propagation* p, const std::string& what,
                    size_t line) {
  uint32_t v = 0;
  if (field == "unbindable")
    p->unbindable = true;
  else if (parse_tag(field, "shared:", &v))
    p->shared = v;
  else if (parse_tag(field, "master:", &v))
    p->master = v;
  else if (parse_tag(field, "propagate_from:", &v))
    p->propagate_from = v;
  else
    fail(what, line, "unknown optional field '" + field + "'");
}

void parse_mount_options(const std::string& opts, Entry* e, const std::string& what, size_t line) {
  // The kernel prints no atime word for strictatime.
  uint64_t atime = MOUNT_ATTR_STRICTATIME;
  bool rw_seen = false;
  size_t start = 0;
  while (start <= opts.size()) {
    size_t comma = opts.find(',', start);
    if (comma == std::string::npos) comma = opts.size();
    std::string o = opts.substr(start, comma - start);
    start = comma + 1;
    if (o == "rw" || o == "ro") {
      rw_seen = true;
      if (o == "ro") e->attrs |= MOUNT_ATTR_RDONLY;
    } else if (o == "nosuid") {
      e->attrs |= MOUNT_ATTR_NOSUID;
    } else if (o == "nodev") {
      e->attrs |= MOUNT_ATTR_NODEV;
    } else if (o == "noexec") {
      e->attrs |= MOUNT_ATTR_NOEXEC;
    } else if (o == "noatime") {
      atime = MOUNT_ATTR_NOATIME;
    } else if (o == "relatime") {
      atime = MOUNT_ATTR_RELATIME;
    } else if (o == "nodiratime") {
      e->attrs |= MOUNT_ATTR_NODIRATIME;
    } else if (o == "nosymfollow") {
      e->attrs |= MOUNT_ATTR_NOSYMFOLLOW;
    } else if (!o.empty()) {
      e->unknown_options.push_back(o);
    }
  }
  if (!rw_seen) fail(what, line, "per-mount options '" + opts + "' lack rw or ro");
  e->attrs |= atime;
}

void parse_super_options(const std::string& opts, Entry* e) {
  size_t start = 0;
  while (start <= opts.size()) {
    size_t comma = opts.find(',', start);
    if (comma == std::string::npos) comma = opts.size();
    std::string o = opts.substr(start, comma - start);
    start = comma + 1;
    if (o == "ro") {
      e->sb_readonly = true;
    } else if (o != "rw" && !o.empty()) {
      if (!e->sb_data.empty()) e->sb_data += ',';
      e->sb_data += o;
    }
  }
}

std::vector<Entry> interpret(const std::vector<proc::Mount>& raw, const std::string& what) {
  std::vector<Entry> out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); i++) {
    const proc::Mount& m = raw[i];
    Entry& e = out.emplace_back();
    e.mnt_id = m.mnt_id;
    e.parent_id = m.parent_id;
    e.dev_major = m.dev_major;
    e.dev_minor = m.dev_minor;
    e.root = m.root;
    e.mount_point = m.mount_point;
    e.fstype = m.fstype;
    e.source = m.source;
    e.mount_options = m.mount_options;
    e.super_options = m.super_options;
    // root is a path, except for nsfs ("net:[4026532176]").
    if (e.mount_point.empty() || e.mount_point[0] != '/')
      fail(what, i + 1, "mount point '" + e.mount_point + "' is not absolute");
    for (const std::string& f : m.optional_fields) parse_optional(f, &e.prop, what, i + 1);
    parse_mount_options(m.mount_options, &e, what, i + 1);
    parse_super_options(m.super_options, &e);
  }
  return out;
}

}  // namespace

std::vector<Entry> parse(std::string_view text) {
  return interpret(proc::parse_mountinfo(text), "mountinfo");
}

std::vector<Entry> read(pid_t pid) {
  std::string path = strfmt("/proc/%d/mountinfo", pid);
  return interpret(proc::read_mountinfo(pid), "parse " + path);
}

std::vector<Entry> read_self() {
  const std::string path = "/proc/self/mountinfo";
  return in_context("parse " + path,
                    [&] { return interpret(proc::parse_mountinfo(read_file(path)), "mountinfo"); });
}

std::string dev_string(const Entry& e) {
  return strfmt("%u:%u", e.dev_major, e.dev_minor);
}

bool path_under(std::string_view path, std::string_view dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.remove_suffix(1);
  if (dir == "/") return !path.empty() && path[0] == '/';
  if (path.substr(0, dir.size()) != dir) return false;
  return path.size() == dir.size() || path[dir.size()] == '/';
}

std::string path_rel(std::string_view path, std::string_view dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.remove_suffix(1);
  std::string_view rest = dir == "/" ? path : path.substr(dir.size());
  while (!rest.empty() && rest[0] == '/') rest.remove_prefix(1);
  return std::string(rest);
}

std::string path_join(std::string_view dir, std::string_view rel) {
  std::string out(dir);
  while (!rel.empty() && rel[0] == '/') rel.remove_prefix(1);
  if (rel.empty()) return out.empty() ? "/" : out;
  if (out.empty() || out.back() != '/') out += '/';
  out += rel;
  return out;
}

}  // namespace ckpt::mountinfo
