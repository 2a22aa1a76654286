#include "objects/ghosts.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "image/page_store.h"
#include "image/record_file.h"
#include "sys/error.h"
#include "sys/log.h"

namespace ckpt {

namespace {

constexpr const char* kDeleted = " (deleted)";
constexpr size_t kPage = 4096;

std::string strip_deleted(const std::string& link) {
  size_t n = strlen(kDeleted);
  if (link.size() >= n && link.compare(link.size() - n, n, kDeleted) == 0)
    return link.substr(0, link.size() - n);
  return link;
}

std::string pages_id(uint64_t id) {
  return "ghost-" + std::to_string(id);
}

}  // namespace

bool is_memfd_link(const std::string& link) {
  return link.rfind("/memfd:", 0) == 0;
}

bool is_deleted_link(const std::string& link) {
  size_t n = strlen(kDeleted);
  return link.size() >= n && link.compare(link.size() - n, n, kDeleted) == 0;
}

uint64_t GhostDumper::add(DumpContext& ctx, int fd, const std::string& link) {
  struct stat st {};
  if (fstat(fd, &st) != 0) throw_errno("fstat");
  if (!S_ISREG(st.st_mode)) throw Error("a deleted file that is not a regular file");
  uint64_t id = st.st_ino;
  if (ghosts_.count(id)) return id;
  img::Ghost g;
  g.set_id(id);
  g.set_memfd(is_memfd_link(link));
  std::string path = strip_deleted(link);
  g.set_path(g.memfd() ? path.substr(strlen("/memfd:")) : path);
  g.set_mode(st.st_mode & 07777);
  g.set_uid(st.st_uid);
  g.set_gid(st.st_gid);
  g.set_size(static_cast<uint64_t>(st.st_size));
  if (g.memfd()) {
    int seals = fcntl(fd, F_GET_SEALS);
    g.set_seals(seals > 0 ? static_cast<uint32_t>(seals) : 0);
  }
  // Content, hole by hole: a sparse file stays sparse.
  image::PageWriter w(*ctx.sink, pages_id(id), {ctx.opts.zstd_level});
  std::unique_ptr<char[]> buf(new char[1u << 20]);
  off_t size = st.st_size, pos = 0;
  while (pos < size) {
    off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;
      throw_errno("SEEK_DATA");
    }
    data &= ~static_cast<off_t>(kPage - 1);
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0 || hole > size) hole = size;
    for (off_t p = data; p < hole;) {
      size_t want = static_cast<size_t>(std::min<off_t>(hole - p, 1 << 20));
      size_t pages = (want + kPage - 1) / kPage;
      memset(buf.get() + (pages - 1) * kPage, 0, kPage);  // the tail of a last partial page
      ssize_t n = pread(fd, buf.get(), want, p);
      if (n != static_cast<ssize_t>(want)) throw_errno("read " + path);
      w.add(static_cast<uint64_t>(p), buf.get(), pages);
      p += static_cast<off_t>(pages * kPage);
    }
    pos = (hole + static_cast<off_t>(kPage) - 1) & ~static_cast<off_t>(kPage - 1);
  }
  w.finish();
  ctx.stats.page_bytes += w.stored_bytes();
  ghosts_[id] = g;
  return id;
}

void GhostDumper::finish(DumpContext& ctx) {
  image::RecordWriter w(kGhostsImage, image::Kind::Ghosts);
  for (auto& [id, g] : ghosts_) w.add(g);
  w.save(*ctx.sink);
}

GhostTable::~GhostTable() {
  unlink_all();
}

void GhostTable::load(const image::ImageSource& src) {
  if (!src.exists(kGhostsImage)) return;
  image::RecordReader r(src, kGhostsImage, image::Kind::Ghosts);
  img::Ghost g;
  while (r.next(g)) {
    image::PageReader pr(src, pages_id(g.id()));  // checks the page data now
    ghosts_[g.id()].g = g;
  }
}

void GhostTable::materialize(const image::ImageSource& src) {
  for (auto& [id, live] : ghosts_) {
    const img::Ghost& g = live.g;
    UniqueFd fd;
    std::string what = (g.memfd() ? "memfd:" : "") + g.path();
    in_context("recreate " + what, [&] {
      if (g.memfd()) {
        int f = memfd_create(g.path().c_str(), MFD_CLOEXEC | (g.seals() ? MFD_ALLOW_SEALING : 0));
        if (f < 0) throw_errno("memfd_create");
        fd.reset(f);
        live.path = strfmt("/proc/%d/fd/%d", getpid(), f);
      } else {
        // At its old path if that is free, so /proc shows the same name.
        std::string p = g.path();
        int f = ::open(p.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (f < 0) {
          std::string dir = p.substr(0, p.rfind('/') + 1);
          p = (access(dir.c_str(), W_OK) == 0 ? dir : std::string("/tmp/")) +
              strfmt(".ckpt-ghost-%llu", static_cast<unsigned long long>(id));
          unlink(p.c_str());
          f = ::open(p.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
          if (f < 0) throw_errno("create " + p);
          LOG_DEBUG("ghost %s recreated as %s", g.path().c_str(), p.c_str());
        }
        fd.reset(f);
        live.path = p;
        live.linked = true;
      }
      image::PageReader pr(src, pages_id(id));
      pr.for_each([&](uint64_t off, const uint8_t* data, size_t n) {
        pwrite_full(fd.get(), data, n * kPage, static_cast<off_t>(off), what);
      });
      if (ftruncate(fd.get(), static_cast<off_t>(g.size())) != 0) throw_errno("truncate");
      if (fchown(fd.get(), g.uid(), g.gid()) != 0) throw_errno("chown");
      if (fchmod(fd.get(), g.mode()) != 0) throw_errno("chmod");
      if (g.memfd() && g.seals() && fcntl(fd.get(), F_ADD_SEALS, g.seals()) != 0)
        throw_errno("add seals");
    });
    if (g.memfd()) live.memfd = std::move(fd);
  }
}

std::string GhostTable::path(uint64_t id) const {
  auto it = ghosts_.find(id);
  if (it == ghosts_.end() || it->second.path.empty())
    throw Error(
        strfmt("ghost file %llu is not in the images", static_cast<unsigned long long>(id)));
  return it->second.path;
}

UniqueFd GhostTable::open(uint64_t id, int flags) const {
  int m = memfd(id);
  return m >= 0 ? reopen_fd(m, flags) : open_or_throw(path(id), flags);
}

int GhostTable::memfd(uint64_t id) const {
  auto it = ghosts_.find(id);
  if (it == ghosts_.end())
    throw Error(
        strfmt("ghost file %llu is not in the images", static_cast<unsigned long long>(id)));
  return it->second.memfd ? it->second.memfd.get() : -1;
}

void GhostTable::unlink_all() {
  for (auto& [id, live] : ghosts_) {
    if (live.linked) unlink(live.path.c_str());
    live.linked = false;
  }
}

}  // namespace ckpt
