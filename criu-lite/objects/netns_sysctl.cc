// The net sysctls of a network namespace (objects/netns.h). /proc/sys/net
// shows the namespace of the thread that reads it, so these run on a
// thread inside the namespace (sys/netns_exec.h).
#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <set>
#include <vector>

#include "objects/netns_parts.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"

namespace ckpt::netns {

namespace {

constexpr const char* kRoot = "/proc/sys/net/";
constexpr const char* kDirs[] = {"core", "ipv4", "ipv6", "unix", "netfilter"};

struct Closedir {
  void operator()(DIR* d) const { closedir(d); }
};

// The value of an open sysctl, without its newline; false if it cannot be
// read now (stable_secret before it is set).
bool read_value(int fd, std::string* out) {
  char buf[4096];
  out->clear();
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
  while (!out->empty() && out->back() == '\n') out->pop_back();
  return true;
}

// Every read-write entry under the directory dir (rel: its path below
// /proc/sys/net), recursively unless flat. Everything is opened relative to
// its directory: a full /proc/sys path costs a lookup per component, and a
// namespace has hundreds of entries, read while its tree is stopped.
void walk(int dir, const std::string& rel, bool flat, std::map<std::string, std::string>* out) {
  int copy = fcntl(dir, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) throw_errno("dup /proc/sys/net/" + rel);
  std::unique_ptr<DIR, Closedir> own(fdopendir(copy));
  if (!own) {
    close(copy);
    throw_errno("read /proc/sys/net/" + rel);
  }
  DIR* d = own.get();
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string path = rel + "/" + name;
    bool is_dir = e->d_type == DT_DIR;
    if (e->d_type == DT_UNKNOWN) {
      struct stat st;
      if (fstatat(dirfd(d), name.c_str(), &st, 0) != 0) continue;
      is_dir = S_ISDIR(st.st_mode);
    }
    if (is_dir) {
      if (flat) continue;
      UniqueFd sub(openat(dirfd(d), name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (sub) walk(sub.get(), path, false, out);
      continue;
    }
    // Read-only entries are the kernel's state, write-only ones are actions
    // (route/flush): opening for both reading and writing takes neither
    // (nothing is written by opening).
    UniqueFd f(openat(dirfd(d), name.c_str(), O_RDWR | O_CLOEXEC));
    std::string value;
    if (f && read_value(f.get(), &value)) (*out)[path] = std::move(value);
  }
}

UniqueFd open_dir(const std::string& rel) {
  return UniqueFd(open((kRoot + rel).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
}

// "ipv4/conf/eth0/rp_filter" -> "eth0"; "" for a path that is not per device.
std::string device_of(const std::string& path) {
  for (const char* prefix : {"ipv4/conf/", "ipv6/conf/", "ipv4/neigh/", "ipv6/neigh/"}) {
    std::string p = prefix;
    if (path.compare(0, p.size(), p) != 0) continue;
    size_t end = path.find('/', p.size());
    if (end == std::string::npos) return {};
    std::string dev = path.substr(p.size(), end - p.size());
    return dev == "all" || dev == "default" ? std::string() : dev;
  }
  return {};
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Writes s (an entry of the directory dir) unless it holds that value;
// whether it wrote.
bool write_sysctl(int dir, const std::string& name, const img::Sysctl& s,
                  const std::map<std::string, std::string>& now) {
  auto it = now.find(s.path());
  if (it != now.end() && it->second == s.value()) return false;
  UniqueFd fd(openat(dir, name.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw_errno("sysctl net/" + s.path() + ": open");
  std::string v = s.value() + "\n";
  if (write(fd.get(), v.data(), v.size()) < 0)
    throw_errno("sysctl net/" + s.path() + " = " + s.value());
  return true;
}

}  // namespace

std::map<std::string, std::string> read_sysctls_in_ns() {
  std::map<std::string, std::string> out;
  for (const char* d : kDirs) {
    UniqueFd dir = open_dir(d);
    if (dir) walk(dir.get(), d, false, &out);  // else a protocol this kernel lacks
  }
  return out;
}

namespace {

// The entries of an open directory, from its start (it may have been read
// before), sorted; subdirectories end in '/'. False if it cannot be read.
bool list_dir(int fd, std::vector<std::string>* names) {
  names->clear();
  if (lseek(fd, 0, SEEK_SET) < 0) return false;
  alignas(8) char buf[8192];
  for (;;) {
    ssize_t n = getdents64(fd, buf, sizeof buf);
    if (n < 0) return false;
    if (n == 0) break;
    for (ssize_t off = 0; off < n;) {
      auto* e = reinterpret_cast<dirent64*>(buf + off);
      off += e->d_reclen;
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      names->push_back(e->d_type == DT_DIR ? name + "/" : name);
    }
  }
  std::sort(names->begin(), names->end());
  return true;
}

}  // namespace

SysctlFiles::SysctlFiles() {
  // Hundreds of files (130 per device): ckpt may keep as many as its hard
  // limit allows.
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  for (const char* d : kDirs) {
    UniqueFd dir = netns::open_dir(d);
    if (dir) open_dir(std::move(dir), d);
  }
  if (!ok_) {
    files_.clear();
    dirs_.clear();
  }
}

void SysctlFiles::open_dir(UniqueFd dir, const std::string& rel) {
  Dir d{rel, std::move(dir), {}};
  if (!list_dir(d.fd.get(), &d.names)) {
    ok_ = false;
    return;
  }
  int fd = d.fd.get();
  std::vector<std::string> names = d.names;
  dirs_.push_back(std::move(d));
  for (const std::string& n : names) {
    if (!ok_) return;
    if (n.back() == '/') {
      std::string name = n.substr(0, n.size() - 1);
      UniqueFd sub(openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!sub) {
        ok_ = false;
        return;
      }
      open_dir(std::move(sub), rel + "/" + name);
      continue;
    }
    // As walk(): read-write entries only.
    UniqueFd f(openat(fd, n.c_str(), O_RDWR | O_CLOEXEC));
    if (f)
      files_.emplace_back(rel + "/" + n, std::move(f));
    else if (errno == EMFILE || errno == ENFILE)
      ok_ = false;
  }
}

bool SysctlFiles::read(std::map<std::string, std::string>* out) const {
  if (dirs_.empty()) return false;
  std::vector<std::string> names;
  for (const Dir& d : dirs_)
    if (!list_dir(d.fd.get(), &names) || names != d.names) return false;
  out->clear();
  char buf[4096];
  for (const auto& [path, fd] : files_) {
    // At offset 0 a sysctl file shows its value as of now.
    ssize_t n = pread(fd.get(), buf, sizeof buf, 0);
    if (n < 0) continue;  // as read_value: not readable now
    std::string v(buf, static_cast<size_t>(n));
    while (!v.empty() && v.back() == '\n') v.pop_back();
    (*out)[path] = std::move(v);
  }
  return true;
}

void pick_sysctls(const std::map<std::string, std::string>& now,
                  const std::map<std::string, std::string>& fresh, img::NetNs* ns) {
  std::set<std::string> devs;
  for (const auto& l : ns->links()) devs.insert(l.name());
  for (const auto& [path, value] : now) {
    std::string dev = device_of(path);
    if (dev.empty()) {
      auto it = fresh.find(path);
      if (it != fresh.end() && it->second == value) continue;
      img::Sysctl* s = ns->add_sysctls();
      s->set_path(path);
      s->set_value(value);
      continue;
    }
    // The IPv6 address generation mode goes with the link (writing it here
    // would make the kernel add addresses); a device's conf starts from
    // the "default" of the moment it was made, so all of it is kept.
    if (!devs.count(dev) || ends_with(path, "/addr_gen_mode")) continue;
    img::Sysctl* s = ns->add_dev_sysctls();
    s->set_path(path);
    s->set_value(value);
  }
}

void restore_sysctls_in_ns(const google::protobuf::RepeatedPtrField<img::Sysctl>& sysctls) {
  // By directory: each is read once (most values are what the kernel has
  // already) and its entries written relative to it.
  std::map<std::string, std::vector<const img::Sysctl*>> by_dir;
  for (const auto& s : sysctls) {
    size_t slash = s.path().rfind('/');
    if (slash == std::string::npos || s.path().find("..") != std::string::npos)
      throw Error("sysctl net/" + s.path() + ": not a path below /proc/sys/net");
    by_dir[s.path().substr(0, slash)].push_back(&s);
  }
  for (const auto& [rel, entries] : by_dir) {
    UniqueFd dir = open_dir(rel);
    if (!dir) throw_errno("sysctl net/" + rel);
    std::map<std::string, std::string> now;
    bool stale = true;
    for (const img::Sysctl* s : entries) {
      // A write may change its neighbours (forwarding does): read again.
      if (stale) {
        now.clear();
        walk(dir.get(), rel, true, &now);
      }
      stale = write_sysctl(dir.get(), s->path().substr(rel.size() + 1), *s, now);
    }
  }
}

}  // namespace ckpt::netns
