// The net sysctls of a network namespace (objects/netns.h). /proc/sys/net
// shows the namespace of the thread that reads it, so these run on a
// thread inside the namespace (sys/netns_exec.h).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <set>

#include "objects/netns_parts.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"

namespace ckpt::netns {

namespace {

constexpr const char* kRoot = "/proc/sys/net/";
constexpr const char* kDirs[] = {"core", "ipv4", "ipv6", "unix", "netfilter"};

void walk(const std::string& rel, std::map<std::string, std::string>* out) {
  std::string dir = kRoot + rel;
  struct Closedir {
    void operator()(DIR* d) const { closedir(d); }
  };
  std::unique_ptr<DIR, Closedir> own(opendir(dir.c_str()));
  if (!own) return;  // a protocol this kernel does not have
  DIR* d = own.get();
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string path = rel + "/" + name;
    struct stat st;
    if (fstatat(dirfd(d), name.c_str(), &st, 0) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      walk(path, out);
      continue;
    }
    // Read-only entries are the kernel's state, write-only ones are actions
    // (route/flush).
    if ((st.st_mode & (S_IRUSR | S_IWUSR)) != (S_IRUSR | S_IWUSR)) continue;
    std::string value;
    // Some cannot be read in some states (stable_secret before it is set).
    if (!try_read_file(kRoot + path, &value)) continue;
    while (!value.empty() && value.back() == '\n') value.pop_back();
    (*out)[path] = value;
  }
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

void write_sysctl(const img::Sysctl& s) {
  std::string path = kRoot + s.path();
  std::string now;
  if (try_read_file(path, &now)) {
    while (!now.empty() && now.back() == '\n') now.pop_back();
    if (now == s.value()) return;
  }
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw_errno("sysctl net/" + s.path() + ": open");
  std::string v = s.value() + "\n";
  if (write(fd.get(), v.data(), v.size()) < 0)
    throw_errno("sysctl net/" + s.path() + " = " + s.value());
}

}  // namespace

std::map<std::string, std::string> read_sysctls_in_ns() {
  std::map<std::string, std::string> out;
  for (const char* d : kDirs) walk(d, &out);
  return out;
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
  for (const auto& s : sysctls) write_sysctl(s);
}

}  // namespace ckpt::netns
