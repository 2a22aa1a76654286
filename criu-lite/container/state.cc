#include "container/state.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include <google/protobuf/text_format.h>

#include "sys/cgroup.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"
#include "sys/proc.h"

namespace ckpt::container {

namespace {

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

void ensure_run_dir() {
  std::string dir = run_dir();
  // One level is enough for /run/ckpt; a custom CKPT_RUN_DIR may be deeper.
  for (size_t i = 1; i <= dir.size(); i++) {
    if (i != dir.size() && dir[i] != '/') continue;
    std::string part = dir.substr(0, i);
    if (mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("mkdir " + part);
  }
}

std::string to_text(const img::ContainerState& s) {
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(s, &text))
    throw Error("container " + s.name() + ": cannot format its state");
  return text;
}

// Writes the state to a temporary file in the run directory; returns its path.
std::string write_temp(const img::ContainerState& s) {
  check_name(s.name());
  ensure_run_dir();
  std::string tmp = strfmt("%s/.%s.%d.tmp", run_dir().c_str(), s.name().c_str(), getpid());
  UniqueFd fd = open_or_throw(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::string text = to_text(s);
  try {
    write_full(fd.get(), text.data(), text.size(), tmp);
    if (fsync(fd.get()) != 0) throw_errno("fsync " + tmp);
  } catch (...) {
    unlink(tmp.c_str());
    throw;
  }
  return tmp;
}

}  // namespace

std::string run_dir() {
  const char* env = getenv("CKPT_RUN_DIR");
  std::string dir = env && *env ? env : "/run/ckpt";
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

void check_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 64 && name[0] != '-' &&
            std::all_of(name.begin(), name.end(), name_char);
  if (!ok)
    throw UsageError("bad container name '" + name +
                     "': 1-64 letters, digits, '_' or '-', not starting with '-'");
}

std::string state_path(const std::string& name) {
  check_name(name);
  return run_dir() + "/" + name;
}

std::string default_log_path(const std::string& name) {
  return state_path(name) + ".log";
}

std::optional<img::ContainerState> try_load_state(const std::string& name) {
  std::string path = state_path(name);
  std::string text;
  if (!try_read_file(path, &text)) {
    if (errno == ENOENT) return std::nullopt;
    throw_errno("container " + name + ": read " + path);
  }
  img::ContainerState s;
  if (!google::protobuf::TextFormat::ParseFromString(text, &s))
    throw Error("container " + name + ": state file " + path + " is not a valid ContainerState");
  if (s.name() != name)
    throw Error("container " + name + ": state file " + path + " names '" + s.name() + "'");
  return s;
}

img::ContainerState load_state(const std::string& name) {
  auto s = try_load_state(name);
  if (!s) throw Error("container " + name + ": state file " + state_path(name), ENOENT);
  return *s;
}

void save_state(const img::ContainerState& s) {
  std::string tmp = write_temp(s);
  std::string path = state_path(s.name());
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    throw_errno(err, "rename " + tmp + " to " + path);
  }
}

void create_state(const img::ContainerState& s) {
  std::string tmp = write_temp(s);
  std::string path = state_path(s.name());
  // link() fails if the name is taken, so two `ckpt run --name X` cannot
  // both win.
  int r = link(tmp.c_str(), path.c_str());
  int err = errno;
  unlink(tmp.c_str());
  if (r != 0 && err == EEXIST)
    throw Error("container " + s.name() + " exists already (" + path + "; see 'ckpt ps')");
  if (r != 0) throw_errno(err, "link " + tmp + " to " + path);
}

void remove_state(const std::string& name) {
  std::string path = state_path(name);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno("remove " + path);
}

std::vector<img::ContainerState> list_states() {
  std::vector<img::ContainerState> out;
  DIR* d = opendir(run_dir().c_str());
  if (!d) {
    if (errno == ENOENT) return out;
    throw_errno("open " + run_dir());
  }
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n[0] == '.' || e->d_type == DT_DIR) continue;
    bool ok = std::all_of(n.begin(), n.end(), name_char) && n[0] != '-';
    if (ok) names.push_back(n);  // NAME.log and temporaries have a '.'
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    try {
      if (auto s = try_load_state(n)) out.push_back(*s);
    } catch (const Error& e) {
      LOG_WARN("skipping %s", e.what());
    }
  }
  return out;
}

unsigned long long starttime_of(pid_t pid) {
  std::string text;
  if (pid <= 0 || !try_read_file(strfmt("/proc/%d/stat", pid), &text)) return 0;
  try {
    proc::Stat st = proc::parse_stat(text);
    if (st.state == 'Z' || st.state == 'X' || st.state == 'x') return 0;
    return st.starttime;
  } catch (const Error&) {
    return 0;
  }
}

bool init_alive(const img::ContainerState& s) {
  unsigned long long t = starttime_of(s.init_pid());
  return t != 0 && t == s.init_starttime();
}

Status live_status(const img::ContainerState& s) {
  if (!init_alive(s)) return Status::Exited;
  try {
    std::vector<std::string> paths(s.cgroup_paths().begin(), s.cgroup_paths().end());
    if (cgroup::Cgroup::open_existing(paths).frozen()) return Status::Frozen;
  } catch (const Error& e) {
    LOG_DEBUG("container %s: cgroup: %s", s.name().c_str(), e.what());
  }
  return Status::Running;
}

const char* status_name(Status s) {
  switch (s) {
    case Status::Running:
      return "running";
    case Status::Frozen:
      return "frozen";
    case Status::Exited:
      return "exited";
  }
  return "?";
}

}  // namespace ckpt::container
