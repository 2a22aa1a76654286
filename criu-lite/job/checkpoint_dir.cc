#include "job/checkpoint_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "image/image_io.h"
#include "image/record_file.h"
#include "inventory.pb.h"
#include "objects/pstree.h"
#include "sys/error.h"
#include "sys/log.h"

namespace ckpt::job {

namespace {

constexpr const char* kPrefix = "ckpt-";
constexpr const char* kPartial = ".partial-";
constexpr const char* kRemoving = ".removing-";
constexpr const char* kLatest = "latest";
constexpr const char* kLock = ".lock";

std::vector<std::string> entries(int dirfd) {
  std::vector<std::string> out;
  int fd = dup(dirfd);
  if (fd < 0) throw_errno("dup");
  DIR* d = fdopendir(fd);
  if (!d) {
    close(fd);
    throw_errno("opendir");
  }
  rewinddir(d);
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  closedir(d);
  return out;
}

// Removes a directory and what it holds (image directories are flat; a
// nested one is removed too).
void remove_tree(int parentfd, const std::string& name) {
  int fd = openat(parentfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return;
    if (errno == ENOTDIR || errno == ELOOP) {
      unlinkat(parentfd, name.c_str(), 0);
      return;
    }
    throw_errno("open " + name);
  }
  UniqueFd owner(fd);
  for (const auto& e : entries(fd)) {
    if (unlinkat(fd, e.c_str(), 0) == 0) continue;
    if (errno == EISDIR)
      remove_tree(fd, e);
    else if (errno != ENOENT)
      throw_errno("remove " + name + "/" + e);
  }
  if (unlinkat(parentfd, name.c_str(), AT_REMOVEDIR) < 0 && errno != ENOENT)
    throw_errno("remove " + name);
}

bool starts_with(const std::string& s, const char* p) {
  return s.rfind(p, 0) == 0;
}

// The checkpoint name an inventory's parent path stands for inside DIR.
std::string parent_name(const std::string& parent) {
  if (parent.rfind("../", 0) == 0 && parent.find('/', 3) == std::string::npos &&
      checkpoint_seq(parent.substr(3)) != 0)
    return parent.substr(3);
  return parent.empty() ? "" : "?" + parent;  // not one of ours: never restorable
}

}  // namespace

uint64_t checkpoint_seq(const std::string& name) {
  if (!starts_with(name, kPrefix) || name.size() == strlen(kPrefix)) return 0;
  uint64_t v = 0;
  for (size_t i = strlen(kPrefix); i < name.size(); i++) {
    if (name[i] < '0' || name[i] > '9' || v > UINT64_MAX / 10 - 10) return 0;
    v = v * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  return v;
}

std::string checkpoint_name(uint64_t seq) {
  return strfmt("%s%06llu", kPrefix, static_cast<unsigned long long>(seq));
}

CheckpointDir::CheckpointDir(std::string dir, bool lock) : dir_(std::move(dir)) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
  if (lock && mkdir(dir_.c_str(), 0700) < 0 && errno != EEXIST)
    throw_errno("create checkpoint directory " + dir_);
  dirfd_ = open_or_throw(dir_, O_RDONLY | O_DIRECTORY);
  if (!lock) return;
  lock_ = openat_or_throw(dirfd_.get(), kLock, O_RDWR | O_CREAT, 0600);
  if (flock(lock_.get(), LOCK_EX | LOCK_NB) < 0) {
    if (errno == EWOULDBLOCK)
      throw Error("checkpoint directory " + dir_ + " is in use by another ckpt job run");
    throw_errno("lock " + dir_ + "/" + kLock);
  }
}

std::vector<std::string> CheckpointDir::leftovers() const {
  std::vector<std::string> out;
  for (const auto& e : entries(dirfd_.get()))
    if (starts_with(e, kPartial) || starts_with(e, kRemoving) || e == ".latest.tmp")
      out.push_back(e);
  std::sort(out.begin(), out.end());
  return out;
}

void CheckpointDir::remove_leftovers() {
  for (const auto& e : leftovers()) {
    LOG_INFO("%s: removing %s (left by an interrupted checkpoint)", dir_.c_str(), e.c_str());
    remove_tree(dirfd_.get(), e);
  }
}

CheckpointInfo CheckpointDir::info(const std::string& name) const {
  CheckpointInfo ci;
  ci.name = name;
  ci.seq = checkpoint_seq(name);
  std::string p = path(name);
  try {
    image::DirSource src(p);
    if (src.exists(kInventoryImage)) {
      img::Inventory inv;
      image::load_message(src, kInventoryImage, image::Kind::Inventory, inv);
      ci.complete = true;
      ci.parent = parent_name(inv.parent());
      ci.checkpoint_id = inv.checkpoint_id();
      ci.parent_id = inv.parent_id();
      ci.time_unix = inv.dump_time_unix();
      ci.pages = inv.stats().pages();
      ci.parent_pages = inv.stats().parent_pages();
      ci.tasks = inv.stats().tasks();
      ci.frozen_us = inv.stats().frozen_us();
    }
  } catch (const Error& e) {
    LOG_DEBUG("%s: %s", p.c_str(), e.what());
    ci.complete = false;
  }
  int fd = openat(dirfd_.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    UniqueFd owner(fd);
    for (const auto& e : entries(fd)) {
      struct stat st;
      if (fstatat(fd, e.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
        ci.bytes += static_cast<uint64_t>(st.st_size);
    }
  }
  return ci;
}

std::vector<CheckpointInfo> CheckpointDir::list() const {
  std::vector<CheckpointInfo> out;
  for (const auto& e : entries(dirfd_.get()))
    if (checkpoint_seq(e) != 0) out.push_back(info(e));
  std::sort(out.begin(), out.end(),
            [](const CheckpointInfo& a, const CheckpointInfo& b) { return a.seq < b.seq; });
  return out;
}

std::string CheckpointDir::latest() const {
  char buf[256];
  ssize_t n = readlinkat(dirfd_.get(), kLatest, buf, sizeof buf - 1);
  if (n <= 0) return "";
  return std::string(buf, static_cast<size_t>(n));
}

bool CheckpointDir::chain_ok(const std::string& name) const {
  std::string cur = name;
  uint64_t want = 0;
  bool first = true;
  for (int depth = 0; depth < 4096; depth++) {
    if (checkpoint_seq(cur) == 0) return false;
    CheckpointInfo ci = info(cur);
    if (!ci.complete) return false;
    if (!first && ci.checkpoint_id != want) return false;
    if (ci.parent.empty()) return true;
    first = false;
    want = ci.parent_id;
    cur = ci.parent;
  }
  return false;
}

int CheckpointDir::depth(const std::string& name) const {
  int d = 0;
  std::string cur = name;
  while (d < 4096) {
    CheckpointInfo ci = info(cur);
    if (ci.parent.empty()) return d;
    cur = ci.parent;
    d++;
  }
  return d;
}

std::vector<std::string> CheckpointDir::restorable() const {
  std::vector<std::string> out;
  auto all = list();
  // The newest first; latest normally is the newest, but a checkpoint
  // published just before a crash may not have been linked yet.
  for (auto it = all.rbegin(); it != all.rend(); ++it)
    if (it->complete && chain_ok(it->name)) out.push_back(it->name);
  return out;
}

CheckpointDir::Pending CheckpointDir::begin() {
  uint64_t seq = 0;
  for (const auto& e : entries(dirfd_.get())) {
    std::string n = e;
    if (starts_with(n, kPartial)) n = n.substr(strlen(kPartial));
    if (starts_with(n, kRemoving)) n = n.substr(strlen(kRemoving));
    seq = std::max(seq, checkpoint_seq(n));
  }
  Pending p;
  p.name = checkpoint_name(seq + 1);
  p.partial = kPartial + p.name;
  remove_tree(dirfd_.get(), p.partial);
  if (mkdirat(dirfd_.get(), p.partial.c_str(), 0700) < 0) throw_errno("create " + path(p.partial));
  return p;
}

void CheckpointDir::sync_dir() const {
  if (fsync(dirfd_.get()) < 0) throw_errno("fsync " + dir_);
}

void CheckpointDir::publish(const Pending& p) {
  // The dump fsync()ed the images and their directory; the rename makes the
  // checkpoint visible under a name that is only ever given to complete ones.
  if (renameat(dirfd_.get(), p.partial.c_str(), dirfd_.get(), p.name.c_str()) < 0)
    throw_errno("rename " + path(p.partial) + " to " + p.name);
  sync_dir();
  unlinkat(dirfd_.get(), ".latest.tmp", 0);
  if (symlinkat(p.name.c_str(), dirfd_.get(), ".latest.tmp") < 0)
    throw_errno("symlink " + dir_ + "/.latest.tmp");
  if (renameat(dirfd_.get(), ".latest.tmp", dirfd_.get(), kLatest) < 0)
    throw_errno("rename " + dir_ + "/.latest.tmp to latest");
  sync_dir();
}

void CheckpointDir::abandon(const Pending& p) {
  try {
    remove_tree(dirfd_.get(), p.partial);
  } catch (const Error& e) {
    LOG_WARN("%s", e.what());
  }
}

void CheckpointDir::remove(const std::string& name) {
  // Renamed first: a half-removed checkpoint must not keep a complete name.
  std::string gone = kRemoving + name;
  if (renameat(dirfd_.get(), name.c_str(), dirfd_.get(), gone.c_str()) < 0)
    throw_errno("rename " + path(name));
  sync_dir();
  remove_tree(dirfd_.get(), gone);
}

std::vector<std::string> CheckpointDir::prune(size_t keep) {
  auto all = list();
  std::map<std::string, std::string> parent;
  for (const auto& c : all) parent[c.name] = c.parent;
  std::set<std::string> needed;
  auto need = [&](std::string n) {
    for (int i = 0; i < 4096 && !n.empty() && parent.count(n) && needed.insert(n).second; i++)
      n = parent[n];
  };
  size_t kept = 0;
  for (auto it = all.rbegin(); it != all.rend() && kept < keep; ++it)
    if (it->complete) {
      need(it->name);
      kept++;
    }
  need(latest());
  // Newest first: children go before their parents, so at every moment
  // (and after a crash halfway) each complete checkpoint has its chain.
  std::vector<std::string> removed;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    // Incomplete named directories are not ours to judge: left alone.
    if (!it->complete || needed.count(it->name)) continue;
    remove(it->name);
    removed.insert(removed.begin(), it->name);
  }
  return removed;
}

void CheckpointDir::remove_all() {
  unlinkat(dirfd_.get(), kLatest, 0);
  auto all = list();
  for (auto it = all.rbegin(); it != all.rend(); ++it)
    if (it->complete) remove(it->name);
  sync_dir();
}

}  // namespace ckpt::job
