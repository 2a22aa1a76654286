#include "sys/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"
#include "sys/proc.h"

#ifndef CGROUP_SUPER_MAGIC
#define CGROUP_SUPER_MAGIC 0x27e0eb
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

namespace ckpt::cgroup {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// v1 mount options that name a controller (the rest are mount flags).
constexpr std::string_view kV1Controllers[] = {
    "cpu",      "cpuacct", "cpuset",     "memory",  "devices", "freezer", "net_cls",
    "net_prio", "blkio",   "perf_event", "hugetlb", "pids",    "rdma",    "misc"};

// Default v1 memory.limit_in_bytes: PAGE_COUNTER_MAX pages, rounded.
constexpr uint64_t kV1MemoryUnlimited = 0x7FFFFFFFFFFFF000ULL;

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3') {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string join_path(const std::string& a, std::string_view b) {
  std::string out = a;
  while (!out.empty() && out.back() == '/') out.pop_back();
  while (!b.empty() && b.front() == '/') b.remove_prefix(1);
  if (!b.empty()) out += "/" + std::string(b);
  return out.empty() ? "/" : out;
}

// Directory of a process's cgroup path inside a hierarchy's mount.
std::string dir_of(const Hierarchy& h, const std::string& cg_path) {
  if (h.root == "/") return join_path(h.mount, cg_path);
  if (cg_path.compare(0, h.root.size(), h.root) == 0)
    return join_path(h.mount, std::string_view(cg_path).substr(h.root.size()));
  throw Error("cgroup " + cg_path + " is not visible under " + h.mount + " (root " + h.root + ")");
}

bool exists(const std::string& path) {
  return access(path.c_str(), F_OK) == 0;
}

void write_value(const std::string& file, const std::string& value) {
  UniqueFd fd(retry_eintr([&] { return ::open(file.c_str(), O_WRONLY | O_CLOEXEC); }));
  if (!fd) throw_errno("open " + file);
  ssize_t n = retry_eintr([&] { return ::write(fd.get(), value.data(), value.size()); });
  if (n < 0) throw_errno("write '" + value + "' to " + file);
}

std::string read_value(const std::string& file) {
  std::string s = read_file(file);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

uint64_t parse_u64(const std::string& s, const std::string& file) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = strtoull(s.c_str(), &end, 10);
  if (errno || end == s.c_str() || *end) throw Error("bad number '" + s + "' in " + file);
  return v;
}

std::string events_field(const std::string& text, std::string_view key) {
  for (auto line : split(text, '\n')) {
    auto parts = split(line, ' ');
    if (parts.size() == 2 && parts[0] == key) return std::string(parts[1]);
  }
  return "";
}

void list_procs(const std::string& dir, std::vector<pid_t>& out) {
  std::string text;
  if (!try_read_file(dir + "/cgroup.procs", &text)) return;  // removed meanwhile
  for (auto line : split(text, '\n'))
    if (!line.empty())
      out.push_back(static_cast<pid_t>(strtol(std::string(line).c_str(), nullptr, 10)));
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = readdir(d)) {
    if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
    list_procs(dir + "/" + e->d_name, out);
  }
  closedir(d);
}

// Every directory below dir, deepest first, then dir.
void subdirs_post_order(const std::string& dir, std::vector<std::string>& out) {
  if (DIR* d = opendir(dir.c_str())) {
    std::vector<std::string> kids;
    while (dirent* e = readdir(d))
      if (e->d_type == DT_DIR && e->d_name[0] != '.') kids.push_back(dir + "/" + e->d_name);
    closedir(d);
    for (const auto& k : kids) subdirs_post_order(k, out);
  }
  out.push_back(dir);
}

bool v2_frozen(const std::string& dir) {
  std::string text;
  return try_read_file(dir + "/cgroup.events", &text) && events_field(text, "frozen") == "1";
}

void mkdir_p(const std::string& path) {
  if (mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) return;
  if (errno != ENOENT) throw_errno("mkdir " + path);
  size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) throw_errno("mkdir " + path);
  mkdir_p(path.substr(0, slash));
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("mkdir " + path);
}

bool valid_relative(const std::string& p) {
  if (p.empty() || p.front() == '/') return false;
  for (auto part : split(p, '/'))
    if (part.empty() || part == "." || part == "..") return false;
  return true;
}

// The nearest ancestor (PID 1 last) in another mount namespace that has the
// cgroup mounts: where ckpt was started from before ip netns exec.
UniqueFd host_mount_ns() {
  std::string own = read_link("/proc/self/ns/mnt");
  pid_t pid = getppid();
  for (int depth = 0; pid > 0 && depth < 64; depth++) {
    std::string info, stat;
    char ns[64] = {};
    if (readlink(strfmt("/proc/%d/ns/mnt", pid).c_str(), ns, sizeof ns - 1) > 0 && ns != own &&
        try_read_file(strfmt("/proc/%d/mountinfo", pid), &info)) {
      Layout l = parse_mountinfo(info);
      if (l.v2 || !l.v1.empty()) {
        UniqueFd fd(open(strfmt("/proc/%d/ns/mnt", pid).c_str(), O_RDONLY | O_CLOEXEC));
        if (fd) return fd;
      }
    }
    if (pid == 1 || !try_read_file(strfmt("/proc/%d/stat", pid), &stat)) break;
    pid = proc::parse_stat(stat).ppid;
  }
  return UniqueFd();
}

bool join_host_mount_ns() {
  UniqueFd ns = host_mount_ns();
  if (!ns) return false;
  UniqueFd cwd(open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (setns(ns.get(), CLONE_NEWNS) != 0) {
    LOG_DEBUG("cgroup: cannot join the host's mount namespace: %s", strerror(errno));
    return false;
  }
  // setns reset the working directory to the new root; relative paths the
  // user gave still mean what they meant.
  if (cwd && fchdir(cwd.get()) != 0) LOG_WARN("cgroup: fchdir back: %s", strerror(errno));
  return true;
}

void mount_hierarchies(const Membership& m) {
  LOG_DEBUG("cgroup: no cgroup mount in this mount namespace: mounting our own");
  if (unshare(CLONE_NEWNS) != 0) throw_errno("cgroup: unshare a mount namespace to mount cgroups");
  if (mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0)
    throw_errno("cgroup: make / a slave mount");
  const std::string top = "/sys/fs/cgroup";
  if (mount("tmpfs", top.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755") != 0)
    throw_errno("cgroup: mount tmpfs on " + top);
  for (const auto& [ctrls, path] : m.v1) {
    if (ctrls.empty()) continue;
    bool named = ctrls.rfind("name=", 0) == 0;
    std::string dir = top + "/" + (named ? ctrls.substr(5) : ctrls);
    std::string opts = named ? "none," + ctrls : ctrls;
    mkdir(dir.c_str(), 0755);
    // Same controllers as the existing hierarchy: the kernel mounts that one.
    if (mount("cgroup", dir.c_str(), "cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts.c_str()))
      LOG_WARN("cgroup: cannot mount the %s hierarchy: %s", ctrls.c_str(), strerror(errno));
  }
  if (!m.v2.empty() || m.v1.empty()) {
    std::string dir = m.v1.empty() ? top : top + "/unified";
    mkdir(dir.c_str(), 0755);
    if (mount("cgroup2", dir.c_str(), "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr))
      LOG_WARN("cgroup: cannot mount cgroup2 on %s: %s", dir.c_str(), strerror(errno));
  }
}

}  // namespace

bool Hierarchy::has(std::string_view c) const {
  return std::find(controllers.begin(), controllers.end(), c) != controllers.end();
}

const Hierarchy* Layout::v1_with(std::string_view c) const {
  for (const auto& h : v1)
    if (h.has(c)) return &h;
  return nullptr;
}

Layout parse_mountinfo(std::string_view text) {
  Layout l;
  for (auto line : split(text, '\n')) {
    auto f = split(line, ' ');
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 7 || dash == f.end() || f.end() - dash < 4) continue;
    std::string_view fstype = dash[1];
    if (fstype != "cgroup" && fstype != "cgroup2") continue;
    Hierarchy h;
    h.v2 = fstype == "cgroup2";
    h.root = unescape(f[3]);
    h.mount = unescape(f[4]);
    if (h.v2) {
      if (!l.v2 || (l.v2->root != "/" && h.root == "/")) l.v2 = h;
      continue;
    }
    for (auto opt : split(dash[3], ',')) {
      bool known = std::find(std::begin(kV1Controllers), std::end(kV1Controllers), opt) !=
                   std::end(kV1Controllers);
      if (known || opt.substr(0, 5) == "name=") h.controllers.emplace_back(opt);
    }
    if (h.controllers.empty()) continue;
    auto same = std::find_if(l.v1.begin(), l.v1.end(),
                             [&](const Hierarchy& o) { return o.controllers == h.controllers; });
    if (same == l.v1.end())
      l.v1.push_back(h);
    else if (same->root != "/" && h.root == "/")
      *same = h;
  }
  return l;
}

const Layout& layout() {
  static const Layout l = [] {
    Layout own = parse_mountinfo(read_file("/proc/self/mountinfo"));
    if (own.v2 || !own.v1.empty()) return own;
    Membership m = parse_proc_cgroup(read_file("/proc/self/cgroup"));
    if (m.v2.empty() && m.v1.empty()) return own;
    // The machine's mounts are in the namespace ckpt was started from (ip
    // netns exec hides them by mounting /sys again): join it, so that a container
    // started or restored from here inherits the machine's mounts, not
    // mounts that exist only for this ckpt.
    if (join_host_mount_ns()) {
      Layout init = parse_mountinfo(read_file("/proc/self/mountinfo"));
      if (init.v2 || !init.v1.empty()) return init;
    }
    mount_hierarchies(m);
    return parse_mountinfo(read_file("/proc/self/mountinfo"));
  }();
  return l;
}

std::optional<std::string> Membership::v1_path(std::string_view controller) const {
  for (const auto& [ctrls, path] : v1)
    for (auto c : split(ctrls, ','))
      if (c == controller) return path;
  return std::nullopt;
}

Membership parse_proc_cgroup(std::string_view text) {
  Membership m;
  for (auto line : split(text, '\n')) {
    if (line.empty()) continue;
    size_t a = line.find(':');
    size_t b = a == std::string_view::npos ? a : line.find(':', a + 1);
    if (b == std::string_view::npos) throw Error("bad /proc/PID/cgroup line: " + std::string(line));
    std::string ctrls(line.substr(a + 1, b - a - 1));
    std::string path(line.substr(b + 1));
    if (line.substr(0, a) == "0" && ctrls.empty())
      m.v2 = path;
    else
      m.v1.emplace_back(ctrls, path);
  }
  return m;
}

uint64_t shares_to_weight(uint64_t shares) {
  // The mapping runc and systemd use: 2..262144 onto 1..10000 linearly.
  shares = std::clamp<uint64_t>(shares, 2, 262144);
  return 1 + ((shares - 2) * 9999) / 262142;
}

uint64_t weight_to_shares(uint64_t weight) {
  weight = std::clamp<uint64_t>(weight, 1, 10000);
  return 2 + ((weight - 1) * 262142) / 9999;
}

// ---- Cgroup ------------------------------------------------------------------

Cgroup::Cgroup(Cgroup&& o) noexcept
    : dirs_(std::move(o.dirs_)), owned_(std::exchange(o.owned_, false)) {}

Cgroup& Cgroup::operator=(Cgroup&& o) noexcept {
  if (this != &o) {
    drop();
    dirs_ = std::move(o.dirs_);
    owned_ = std::exchange(o.owned_, false);
  }
  return *this;
}

Cgroup::~Cgroup() {
  drop();
}

void Cgroup::drop() noexcept {
  if (!owned_ || dirs_.empty()) return;
  try {
    destroy(std::chrono::seconds(2), true);
  } catch (const Error& e) {
    LOG_WARN("leaving cgroup behind: %s", e.what());
  }
}

namespace {
struct Targets {
  std::string parent;                                          // CKPT_CGROUP_PARENT or "ckpt"
  std::vector<std::string> v2_ctrls;                           // what v2 offers here
  std::vector<std::pair<const Hierarchy*, std::string>> dirs;  // (hierarchy, our cgroup)
};

// Where create(name) makes its directories.
Targets targets_for(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
    throw Error("bad cgroup name '" + name + "'");
  const char* env = getenv("CKPT_CGROUP_PARENT");
  std::string parent = env && *env ? env : "ckpt";
  if (!valid_relative(parent))
    throw Error("CKPT_CGROUP_PARENT must be a relative path without '..': " + parent);

  const Layout& l = layout();
  Membership me = parse_proc_cgroup(read_file("/proc/self/cgroup"));
  // Which hierarchies: v2 for freezing and the controllers it offers, v1
  // for the controllers it does not.
  std::vector<std::string> v2_ctrls;
  std::vector<std::pair<const Hierarchy*, std::string>> targets;  // (hierarchy, our cgroup)
  if (l.v2) {
    std::string base = dir_of(*l.v2, me.v2.empty() ? "/" : me.v2);
    std::string avail;
    if (try_read_file(base + "/cgroup.controllers", &avail)) {
      while (!avail.empty() && avail.back() == '\n') avail.pop_back();
      for (auto c : split(avail, ' '))
        if (!c.empty()) v2_ctrls.emplace_back(c);
    }
    targets.emplace_back(&*l.v2, me.v2.empty() ? "/" : me.v2);
  }
  auto in_v2 = [&](std::string_view c) {
    return std::find(v2_ctrls.begin(), v2_ctrls.end(), c) != v2_ctrls.end();
  };
  auto add_v1 = [&](std::string_view c) {
    const Hierarchy* h = l.v1_with(c);
    if (!h) return;
    for (const auto& t : targets)
      if (t.first == h) return;
    targets.emplace_back(h, me.v1_path(c).value_or("/"));
  };
  for (std::string_view c : {"memory", "pids", "cpu"})
    if (!in_v2(c)) add_v1(c);
  if (!l.v2) add_v1("freezer");
  if (targets.empty()) throw Error("no cgroup file system is mounted (see /proc/self/mountinfo)");
  return Targets{parent, v2_ctrls, targets};
}
}  // namespace

bool Cgroup::remove_leftover(const std::string& name) {
  Targets t = targets_for(name);
  std::vector<std::string> there;
  for (const auto& [h, own] : t.dirs) {
    std::string dir = join_path(dir_of(*h, own), t.parent) + "/" + name;
    if (!exists(dir)) continue;
    std::vector<pid_t> left;
    list_procs(dir, left);
    if (!left.empty()) return false;
    there.push_back(dir);
  }
  if (there.empty()) return false;
  // Tasks that died in it count until they are reaped (EBUSY), and an
  // orphan's reaper may be late: destroy waits for that.
  Cgroup cg = open(there);
  cg.destroy(std::chrono::seconds(3), false);
  LOG_DEBUG("cgroup %s: an empty one was left behind; removed", name.c_str());
  return true;
}

Cgroup Cgroup::create(const std::string& name) {
  Targets t = targets_for(name);
  const std::string& parent = t.parent;
  const std::vector<std::string>& v2_ctrls = t.v2_ctrls;
  Cgroup cg;
  cg.owned_ = true;  // a failure below removes what was made
  for (const auto& [h, own] : t.dirs) {
    std::string base = join_path(dir_of(*h, own), parent);
    in_context("cgroup " + name, [&] { mkdir_p(base); });
    if (h->v2) {
      // Controllers reach a v2 cgroup only if its parent enables them; on
      // a hybrid machine there are none and nothing is written.
      for (const auto& c : v2_ctrls)
        if (c == "memory" || c == "pids" || c == "cpu") {
          try {
            write_value(base + "/cgroup.subtree_control", "+" + c);
          } catch (const Error& e) {
            LOG_DEBUG("cgroup: cannot enable %s below %s: %s", c.c_str(), base.c_str(), e.what());
          }
        }
    }
    std::string dir = base + "/" + name;
    // ENOENT: another ckpt removed the empty parent just now (see destroy).
    int r = mkdir(dir.c_str(), 0755);
    if (r != 0 && errno == ENOENT) {
      mkdir_p(base);
      r = mkdir(dir.c_str(), 0755);
    }
    if (r != 0) {
      if (errno == EEXIST) throw Error("cgroup exists already: mkdir " + dir, EEXIST);
      throw_errno("mkdir " + dir);
    }
    cg.dirs_.push_back(Dir{h->v2, h->controllers, dir});
  }
  LOG_DEBUG("cgroup %s: %zu directories", name.c_str(), cg.dirs_.size());
  return cg;
}

Cgroup Cgroup::open(const std::vector<std::string>& paths) {
  Cgroup cg;
  for (const auto& p : paths) {
    Cgroup one = of_path(p);
    cg.dirs_.push_back(one.dirs_.front());
  }
  return cg;
}

Cgroup Cgroup::open_existing(const std::vector<std::string>& paths) {
  layout();  // may mount the hierarchies first
  std::vector<std::string> there;
  for (const auto& p : paths)
    if (exists(p)) there.push_back(p);
  return open(there);
}

Cgroup Cgroup::of_path(const std::string& path) {
  layout();  // may mount the hierarchies first
  struct statfs fs;
  if (statfs(path.c_str(), &fs) != 0) throw_errno("cgroup " + path);
  Dir d;
  d.path = path;
  while (d.path.size() > 1 && d.path.back() == '/') d.path.pop_back();
  if (fs.f_type == CGROUP2_SUPER_MAGIC) {
    d.v2 = true;
  } else if (fs.f_type == CGROUP_SUPER_MAGIC) {
    // The hierarchy is the v1 mount with the longest prefix of the path.
    const Hierarchy* best = nullptr;
    for (const auto& h : layout().v1) {
      const std::string& m = h.mount;
      bool under = d.path.compare(0, m.size(), m) == 0 &&
                   (d.path.size() == m.size() || d.path[m.size()] == '/');
      if (under && (!best || m.size() > best->mount.size())) best = &h;
    }
    if (!best) throw Error("cgroup " + path + ": not under a cgroup mount of /proc/self/mountinfo");
    d.controllers = best->controllers;
  } else {
    throw Error("cgroup " + path + ": not a cgroup directory");
  }
  Cgroup cg;
  cg.dirs_.push_back(std::move(d));
  return cg;
}

std::vector<std::string> Cgroup::paths() const {
  std::vector<std::string> out;
  for (const auto& d : dirs_) out.push_back(d.path);
  return out;
}

const Cgroup::Dir* Cgroup::find(std::string_view controller, const char* v2_file) const {
  for (const auto& d : dirs_)
    if (d.v2 && exists(d.path + "/" + v2_file)) return &d;
  for (const auto& d : dirs_)
    if (!d.v2 &&
        std::find(d.controllers.begin(), d.controllers.end(), controller) != d.controllers.end())
      return &d;
  return nullptr;
}

void Cgroup::attach(pid_t pid) const {
  for (const auto& d : dirs_)
    in_context(strfmt("attach pid %d", pid),
               [&] { write_value(d.path + "/cgroup.procs", std::to_string(pid)); });
}

std::vector<pid_t> Cgroup::procs() const {
  std::vector<pid_t> out;
  if (dirs_.empty()) return out;
  const Dir* d = find("freezer", "cgroup.freeze");
  list_procs(d ? d->path : dirs_.front().path, out);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

const Cgroup::Dir& Cgroup::freezer_dir() const {
  const Dir* d = find("freezer", "cgroup.freeze");
  if (!d)
    throw Error("cgroup " + (dirs_.empty() ? std::string("(none)") : dirs_.front().path) +
                ": no freezer (neither cgroup.freeze nor a v1 freezer)");
  return *d;
}

void Cgroup::freeze(milliseconds timeout) const {
  const Dir& d = freezer_dir();
  auto deadline = Clock::now() + timeout;
  auto left_ms = [&] {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    return static_cast<int>(std::clamp<long long>(left, 0, 100));
  };
  if (d.v2) {
    // cgroup.events changes (and poll reports POLLPRI) when "frozen" flips.
    UniqueFd ev = open_or_throw(d.path + "/cgroup.events", O_RDONLY);
    write_value(d.path + "/cgroup.freeze", "1");
    for (;;) {
      // Reading the file arms the notification; it is read before the
      // check, so that a flip between the check and poll() still wakes it
      // (the other way round, that flip was only seen 100 ms later).
      char buf[256];
      ssize_t n = pread(ev.get(), buf, sizeof buf, 0);
      if (n > 0 && events_field(std::string(buf, static_cast<size_t>(n)), "frozen") == "1") break;
      if (Clock::now() >= deadline) {
        thaw();
        throw Error(strfmt("freeze %s: not frozen after %lld ms", d.path.c_str(),
                           static_cast<long long>(timeout.count())),
                    ETIMEDOUT);
      }
      pollfd p{ev.get(), POLLPRI, 0};
      retry_eintr([&] { return poll(&p, 1, std::max(left_ms(), 1)); });
    }
    return;
  }
  // v1: FREEZING until every task (of sub-cgroups too) is frozen; writing
  // FROZEN again retries tasks that were busy.
  const std::string state = d.path + "/freezer.state";
  write_value(state, "FROZEN");
  for (int ms = 1; read_value(state) != "FROZEN"; ms = std::min(ms * 2, 50)) {
    if (Clock::now() >= deadline) {
      thaw();
      throw Error(strfmt("freeze %s: still %s after %lld ms", d.path.c_str(),
                         read_value(state).c_str(), static_cast<long long>(timeout.count())),
                  ETIMEDOUT);
    }
    std::this_thread::sleep_for(milliseconds(ms));
    write_value(state, "FROZEN");
  }
}

void Cgroup::thaw() const {
  const Dir& d = freezer_dir();
  if (d.v2)
    write_value(d.path + "/cgroup.freeze", "0");
  else
    write_value(d.path + "/freezer.state", "THAWED");
}

bool Cgroup::frozen() const {
  const Dir* d = find("freezer", "cgroup.freeze");
  if (!d) return false;
  if (d->v2) return v2_frozen(d->path);
  std::string s;
  return try_read_file(d->path + "/freezer.state", &s) && s == "FROZEN\n";
}

void Cgroup::set_limits(const Limits& l) const {
  auto need = [&](std::string_view c, const char* v2_file) -> const Dir& {
    const Dir* d = find(c, v2_file);
    if (!d)
      throw Error(std::string(c) + " limit: no " + std::string(c) + " controller for cgroup " +
                  (dirs_.empty() ? std::string("(none)") : dirs_.front().path));
    return *d;
  };
  if (l.memory_max) {
    const Dir& d = need("memory", "memory.max");
    write_value(d.path + (d.v2 ? "/memory.max" : "/memory.limit_in_bytes"),
                std::to_string(*l.memory_max));
  }
  if (l.pids_max) {
    const Dir& d = need("pids", "pids.max");
    write_value(d.path + "/pids.max", std::to_string(*l.pids_max));
  }
  if (l.cpu_quota_us || l.cpu_period_us) {
    const Dir& d = need("cpu", "cpu.max");
    if (d.v2) {
      std::string period = std::to_string(l.cpu_period_us.value_or(100000));
      write_value(d.path + "/cpu.max",
                  (l.cpu_quota_us ? std::to_string(*l.cpu_quota_us) : "max") + " " + period);
    } else {
      // The period first: the kernel checks the quota against it.
      if (l.cpu_period_us)
        write_value(d.path + "/cpu.cfs_period_us", std::to_string(*l.cpu_period_us));
      if (l.cpu_quota_us)
        write_value(d.path + "/cpu.cfs_quota_us", std::to_string(*l.cpu_quota_us));
    }
  }
  if (l.cpu_shares || l.cpu_weight) {
    const Dir& d = need("cpu", "cpu.weight");
    if (d.v2)
      write_value(d.path + "/cpu.weight",
                  std::to_string(l.cpu_weight ? *l.cpu_weight : shares_to_weight(*l.cpu_shares)));
    else
      write_value(d.path + "/cpu.shares",
                  std::to_string(l.cpu_shares ? *l.cpu_shares : weight_to_shares(*l.cpu_weight)));
  }
}

Limits Cgroup::limits() const {
  Limits l;
  if (const Dir* d = find("memory", "memory.max")) {
    std::string f = d->path + (d->v2 ? "/memory.max" : "/memory.limit_in_bytes");
    std::string v = read_value(f);
    if (v != "max") {
      uint64_t n = parse_u64(v, f);
      if (d->v2 || n < kV1MemoryUnlimited) l.memory_max = n;
    }
  }
  if (const Dir* d = find("pids", "pids.max")) {
    std::string f = d->path + "/pids.max";
    std::string v = read_value(f);
    if (v != "max") l.pids_max = parse_u64(v, f);
  }
  if (const Dir* d = find("cpu", "cpu.max")) {
    if (d->v2) {
      std::string f = d->path + "/cpu.max";
      auto parts = split(read_value(f), ' ');
      if (parts.size() == 2 && parts[0] != "max") {
        l.cpu_quota_us = parse_u64(std::string(parts[0]), f);
        l.cpu_period_us = parse_u64(std::string(parts[1]), f);
      }
    } else {
      std::string q = read_value(d->path + "/cpu.cfs_quota_us");
      if (q != "-1") {
        l.cpu_quota_us = parse_u64(q, d->path + "/cpu.cfs_quota_us");
        l.cpu_period_us =
            parse_u64(read_value(d->path + "/cpu.cfs_period_us"), d->path + "/cpu.cfs_period_us");
      }
    }
  }
  if (const Dir* d = find("cpu", "cpu.weight")) {
    std::string f = d->path + (d->v2 ? "/cpu.weight" : "/cpu.shares");
    uint64_t n = parse_u64(read_value(f), f);
    if (d->v2 && n != 100) l.cpu_weight = n;
    if (!d->v2 && n != 1024) l.cpu_shares = n;
  }
  return l;
}

void Cgroup::kill(int sig) const {
  if (dirs_.empty()) return;
  if (sig == SIGKILL) {
    for (const auto& d : dirs_)
      if (d.v2 && exists(d.path + "/cgroup.kill")) {
        write_value(d.path + "/cgroup.kill", "1");
        return;
      }
  }
  // Without cgroup.kill a process could fork between listing and killing:
  // for SIGKILL, freeze first (a frozen task dies once thawed).
  bool froze = false;
  if (sig == SIGKILL && find("freezer", "cgroup.freeze")) {
    try {
      freeze(std::chrono::seconds(2));
      froze = true;
    } catch (const Error& e) {
      LOG_DEBUG("kill without freezing: %s", e.what());
    }
  }
  for (pid_t p : procs())
    if (::kill(p, sig) != 0 && errno != ESRCH) throw_errno(strfmt("kill pid %d", p));
  if (froze) thaw();
}

void Cgroup::destroy(milliseconds timeout, bool and_empty_parent) {
  if (dirs_.empty()) return;
  if (find("freezer", "cgroup.freeze") && frozen()) {
    try {
      thaw();
    } catch (const Error&) {
      // Gone already, or not ours to thaw: rmdir says what matters.
    }
  }
  auto deadline = Clock::now() + timeout;
  for (const auto& d : dirs_) {
    std::vector<std::string> order;
    subdirs_post_order(d.path, order);
    for (const auto& p : order) {
      while (rmdir(p.c_str()) != 0 && errno != ENOENT) {
        // EBUSY while exiting tasks are still counted in it.
        if (errno != EBUSY || Clock::now() >= deadline) {
          int err = errno;
          std::vector<pid_t> left;
          list_procs(p, left);
          std::string pids;
          for (pid_t t : left) pids += (pids.empty() ? "" : " ") + std::to_string(t);
          throw Error("remove cgroup " + p + ": " + strerror(err) +
                          (pids.empty() ? "" : " (tasks " + pids + ")"),
                      err);
        }
        std::this_thread::sleep_for(milliseconds(20));
      }
    }
  }
  // The shared parent (ckpt/) goes once its last container has gone; a
  // busy or foreign parent simply stays.
  if (and_empty_parent) {
    for (const auto& d : dirs_) {
      size_t slash = d.path.rfind('/');
      if (slash != std::string::npos && slash > 0) rmdir(d.path.substr(0, slash).c_str());
    }
  }
  dirs_.clear();
  owned_ = false;
}

}  // namespace ckpt::cgroup
