// inotify: its watches ("inotify wd:HEX ino:HEX sdev:HEX mask:HEX ... f_handle:HEX"
// lines of fdinfo).
//
// The watched inode is found from its file handle: open_by_handle_at on a
// mount of the filesystem (found from sdev in our /proc/self/mountinfo),
// then readlink of the O_PATH fd; the path is checked to name that inode.
// At restore the watches are added in wd order to a new instance; wds are
// allocated increasing (cyclically) per instance, so a gap is skipped by
// adding and removing a throwaway watch. The IN_IGNORED events this queues,
// and any other event queued during the restore, are read away: queued
// events are not saved (see docs/limits.md).
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "objects/fd_kind.h"
#include "sys/error.h"
#include "sys/log.h"

#ifndef IN_MASK_CREATE
#define IN_MASK_CREATE 0x10000000
#endif

namespace ckpt {

namespace {

// Wds above the last one restored cost two syscalls each: beyond this the
// instance was surely not meant to be restored.
constexpr int32_t kMaxWdGap = 1 << 20;

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Path of the inode behind a mark, through a mount of its filesystem.
std::string resolve_mark(const InotifyMark& m) {
  if (m.handle.empty())
    throw Error(
        strfmt("inotify wd %d: no file handle in fdinfo (the filesystem cannot export "
               "handles)",
               m.wd));
  unsigned maj = m.sdev >> 20, min = m.sdev & 0xfffff;
  std::vector<proc::Mount> mounts = proc::read_mountinfo(getpid());
  // Mounts of the whole filesystem first: a path found through a bind mount
  // of a subtree may not reach the inode.
  std::stable_partition(mounts.begin(), mounts.end(),
                        [](const proc::Mount& mt) { return mt.root == "/"; });
  std::vector<char> buf(sizeof(file_handle) + m.handle.size());
  auto* fh = reinterpret_cast<file_handle*>(buf.data());
  fh->handle_bytes = static_cast<unsigned>(m.handle.size());
  fh->handle_type = m.handle_type;
  memcpy(fh->f_handle, m.handle.data(), m.handle.size());
  int last_err = 0;
  bool any_mount = false;
  for (const auto& mt : mounts) {
    if (mt.dev_major != maj || mt.dev_minor != min) continue;
    any_mount = true;
    UniqueFd mfd(::open(mt.mount_point.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!mfd) {
      last_err = errno;
      continue;
    }
    UniqueFd f(open_by_handle_at(mfd.get(), fh, O_PATH | O_CLOEXEC));
    if (!f) {
      last_err = errno;
      if (errno == ESTALE)
        throw Error(strfmt("inotify wd %d: watch on a deleted file is not supported", m.wd));
      continue;
    }
    std::string path = read_link(strfmt("/proc/self/fd/%d", f.get()));
    struct stat want {
    }, got{};
    if (fstat(f.get(), &want) != 0) throw_errno("fstat watched inode");
    if (path.empty() || path[0] != '/' || lstat(path.c_str(), &got) != 0 ||
        got.st_dev != want.st_dev || got.st_ino != want.st_ino) {
      last_err = 0;
      continue;  // not reachable by that path (deleted, or outside this mount)
    }
    return path;
  }
  if (!any_mount)
    throw Error(strfmt("inotify wd %d: no mount of device %u:%u in ckpt's mount namespace", m.wd,
                       maj, min));
  if (last_err)
    throw_errno(last_err, strfmt("inotify wd %d: open watched inode %llu", m.wd,
                                 static_cast<unsigned long long>(m.ino)));
  throw Error(strfmt("inotify wd %d: no path reaches watched inode %llu on %u:%u (deleted?)", m.wd,
                     static_cast<unsigned long long>(m.ino), maj, min));
}

// Takes wd `want` in instance fd: add and remove throwaway watches until the
// next wd the kernel hands out is `want`.
void skip_to_wd(int fd, int32_t next, int32_t want) {
  static const char* const kDummies[] = {"/", "/proc", "/dev", "/sys", "/tmp", "/etc", "/usr"};
  while (next < want) {
    int wd = -1;
    for (const char* p : kDummies) {
      // IN_MASK_CREATE: fails on an inode already watched (which would give
      // its existing wd) rather than reusing it.
      wd = inotify_add_watch(fd, p, IN_ATTRIB | IN_MASK_CREATE | IN_ONLYDIR);
      if (wd >= 0) break;
    }
    if (wd < 0) throw_errno(strfmt("inotify: add a throwaway watch to reach wd %d", want));
    inotify_rm_watch(fd, wd);
    if (wd != next)
      throw Error(strfmt("inotify: throwaway watch got wd %d, expected %d", wd, next));
    next++;
  }
}

class InotifyKind : public FdKind {
 public:
  const char* name() const override { return "inotify"; }
  bool matches(const FdProbe& p) const override { return p.link == "anon_inode:inotify"; }

  void dump(const FdDumpArgs& a, img::FileDesc* d) override {
    auto* in = d->mutable_inotify();
    std::vector<InotifyMark> marks = parse_inotify_fdinfo(a.info);
    std::sort(marks.begin(), marks.end(),
              [](const InotifyMark& x, const InotifyMark& y) { return x.wd < y.wd; });
    for (const InotifyMark& m : marks) {
      if (m.ignored_mask)
        throw Error(
            strfmt("inotify wd %d: ignored mask %#x is not supported", m.wd, m.ignored_mask));
      auto* w = in->add_watches();
      w->set_wd(m.wd);
      w->set_mask(m.mask);
      w->set_path(resolve_mark(m));
    }
  }

  bool owns(const img::FileDesc& d) const override { return d.has_inotify(); }

  UniqueFd open(const img::FileDesc& d, FdRestoreState&) override {
    UniqueFd fd(inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!fd) throw_errno("inotify_init1");
    std::vector<img::InotifyWatch> ws(d.inotify().watches().begin(), d.inotify().watches().end());
    std::sort(ws.begin(), ws.end(), [](const img::InotifyWatch& x, const img::InotifyWatch& y) {
      return x.wd() < y.wd();
    });
    int32_t next = 1;
    bool skipped = false;
    for (const auto& w : ws) {
      if (w.wd() < next || w.wd() - next > kMaxWdGap)
        throw Error(strfmt("inotify: cannot give wd %d (next free wd is %d)", w.wd(), next));
      if (w.wd() > next) {
        skip_to_wd(fd.get(), next, w.wd());
        skipped = true;
      }
      // The saved path is the inode's own: never follow a final symlink.
      int wd = inotify_add_watch(fd.get(), w.path().c_str(), w.mask() | IN_DONT_FOLLOW);
      if (wd < 0) throw_errno(strfmt("inotify: watch %s", w.path().c_str()));
      if (wd != w.wd())
        throw Error(
            strfmt("inotify: watch %s got wd %d instead of %d", w.path().c_str(), wd, w.wd()));
      next = wd + 1;
    }
    if (skipped) {
      // Read away the IN_IGNORED events of the throwaway watches.
      char buf[4096];
      while (read(fd.get(), buf, sizeof(buf)) > 0) {
      }
    }
    if (!(d.flags() & O_NONBLOCK) && fcntl(fd.get(), F_SETFL, 0) != 0)
      throw_errno("inotify: clear O_NONBLOCK");
    return fd;
  }
};

}  // namespace

std::vector<InotifyMark> parse_inotify_fdinfo(const proc::FdInfo& info) {
  std::vector<InotifyMark> out;
  for (const auto& [k, v] : info.extra) {
    if (k != "inotify wd") continue;
    auto bad = [&]() { return Error("fdinfo: bad inotify line 'inotify wd:" + v + "'"); };
    InotifyMark m;
    unsigned wd = 0, sdev = 0, mask = 0, ignored = 0, hbytes = 0;
    int htype = 0;
    unsigned long long ino = 0;
    int used = -1;
    if (sscanf(v.c_str(), "%x ino:%llx sdev:%x mask:%x ignored_mask:%x%n", &wd, &ino, &sdev, &mask,
               &ignored, &used) != 5)
      throw bad();
    m.wd = static_cast<int32_t>(wd);
    m.ino = ino;
    m.sdev = sdev;
    m.mask = mask;
    m.ignored_mask = ignored;
    std::string rest = v.substr(static_cast<size_t>(used));
    size_t first = rest.find_first_not_of(' ');
    rest = first == std::string::npos ? "" : rest.substr(first);
    if (!rest.empty()) {
      int used2 = -1;
      if (sscanf(rest.c_str(), "fhandle-bytes:%x fhandle-type:%x f_handle:%n", &hbytes, &htype,
                 &used2) != 2 ||
          used2 < 0)
        throw bad();
      std::string hex = rest.substr(static_cast<size_t>(used2));
      while (!hex.empty() && hex.back() == ' ') hex.pop_back();
      if (hex.size() != 2 * static_cast<size_t>(hbytes) || hbytes > 128) throw bad();
      for (size_t i = 0; i < hex.size(); i += 2) {
        int hi = hexval(hex[i]), lo = hexval(hex[i + 1]);
        if (hi < 0 || lo < 0) throw bad();
        m.handle.push_back(static_cast<char>(hi << 4 | lo));
      }
      m.handle_type = htype;
    }
    out.push_back(std::move(m));
  }
  return out;
}

std::unique_ptr<FdKind> make_inotify_kind() {
  return std::make_unique<InotifyKind>();
}

}  // namespace ckpt
