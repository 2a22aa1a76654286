// The files of a tmpfs: directories, regular files (small ones inline,
// larger ones in a page store, holes kept), symlinks, FIFOs, device and
// socket nodes, with mode, owner, times, xattrs (regular files and
// directories) and hard links.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "image/page_store.h"
#include "image/record_file.h"
#include "objects/mnt_ns.h"
#include "sys/error.h"
#include "sys/log.h"

namespace ckpt {

namespace {

constexpr size_t kPage = image::kPageSize;
constexpr uint64_t kInlineMax = 4096;  // larger files go to the page store

std::string records_name(uint32_t id) {
  return strfmt("tmpfs-%u.img", id);
}
std::string pages_id(uint32_t id) {
  return strfmt("tmpfs-%u", id);
}

int64_t to_ns(const timespec& t) {
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}
timespec from_ns(int64_t ns) {
  timespec t{};
  t.tv_sec = ns / 1000000000;
  t.tv_nsec = ns % 1000000000;
  if (t.tv_nsec < 0) {
    t.tv_nsec += 1000000000;
    t.tv_sec--;
  }
  return t;
}

// Every extended attribute of an open file (tmpfs keeps trusted.*,
// security.* and user.*).
void read_xattrs(int fd, img::TmpfsEntry* e) {
  std::string names(4096, '\0');
  ssize_t n;
  for (;;) {
    n = flistxattr(fd, names.data(), names.size());
    if (n >= 0) break;
    if (errno == ENOTSUP) return;
    if (errno != ERANGE) throw_errno("list xattrs");
    names.resize(names.size() * 4);
  }
  for (size_t i = 0; i < static_cast<size_t>(n);) {
    std::string name(names.c_str() + i);
    i += name.size() + 1;
    std::string value(256, '\0');
    ssize_t v;
    for (;;) {
      v = fgetxattr(fd, name.c_str(), value.data(), value.size());
      if (v >= 0) break;
      if (errno == ENODATA) break;  // removed meanwhile
      if (errno != ERANGE) throw_errno("get xattr " + name);
      value.resize(value.size() * 4);
    }
    if (v < 0) continue;
    value.resize(static_cast<size_t>(v));
    img::Xattr* x = e->add_xattrs();
    x->set_name(name);
    x->set_value(value);
  }
}

class TmpfsWalker {
 public:
  TmpfsWalker(image::ImageSink& sink, uint32_t id, int zstd_level, const std::string& where)
      : records_(records_name(id), image::Kind::Tmpfs),
        pages_(sink, pages_id(id), {zstd_level}),
        where_(where),
        buf_(new char[1u << 20]) {}

  void run(int root, image::ImageSink& sink) {
    UniqueFd dir = openat_or_throw(root, ".", O_RDONLY | O_DIRECTORY);
    struct stat st {};
    if (fstat(dir.get(), &st) != 0) throw_errno("stat " + where_);
    dev_ = st.st_dev;
    add_dir(dir.get(), "", st);
    pages_.finish();
    records_.save(sink);
  }

 private:
  img::TmpfsEntry base(const std::string& path, const struct stat& st) {
    img::TmpfsEntry e;
    e.set_path(path);
    e.set_mode(st.st_mode);
    e.set_uid(st.st_uid);
    e.set_gid(st.st_gid);
    e.set_atime_ns(to_ns(st.st_atim));
    e.set_mtime_ns(to_ns(st.st_mtim));
    return e;
  }

  void add_dir(int fd, const std::string& path, const struct stat& st) {
    img::TmpfsEntry e = base(path, st);
    read_xattrs(fd, &e);
    records_.add(e);
    // Names sorted so that two dumps of the same tree are the same images.
    std::vector<std::string> names;
    {
      UniqueFd copy(fcntl(fd, F_DUPFD_CLOEXEC, 0));
      if (!copy) throw_errno("dup");
      std::unique_ptr<DIR, int (*)(DIR*)> d(fdopendir(copy.get()), closedir);
      if (!d) throw_errno("opendir " + show(path));
      copy.release();
      rewinddir(d.get());
      for (;;) {
        errno = 0;
        dirent* de = readdir(d.get());
        if (!de) {
          if (errno) throw_errno("readdir " + show(path));
          break;
        }
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) names.emplace_back(de->d_name);
      }
    }
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      std::string child = path.empty() ? name : path + "/" + name;
      in_context(show(child), [&] { add(fd, name, child); });
    }
  }

  void add(int dirfd, const std::string& name, const std::string& path) {
    struct stat st {};
    if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return;  // removed while we walk (the tree runs on)
      throw_errno("stat");
    }
    if (st.st_dev != dev_) throw Error("not on the tmpfs (a mount inside the clone?)");
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      auto [it, fresh] = first_name_.emplace(st.st_ino, path);
      if (!fresh) {
        img::TmpfsEntry e;
        e.set_path(path);
        e.set_mode(st.st_mode);
        e.set_hardlink_to(it->second);
        records_.add(e);
        return;
      }
    }
    img::TmpfsEntry e = base(path, st);
    switch (st.st_mode & S_IFMT) {
      case S_IFDIR: {
        UniqueFd d = openat_or_throw(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        add_dir(d.get(), path, st);
        return;
      }
      case S_IFREG: {
        UniqueFd f = openat_or_throw(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NOATIME);
        e.set_size(static_cast<uint64_t>(st.st_size));
        read_xattrs(f.get(), &e);
        add_content(f.get(), st, &e);
        break;
      }
      case S_IFLNK: {
        std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
        ssize_t n = readlinkat(dirfd, name.c_str(), target.data(), target.size());
        if (n < 0) throw_errno("readlink");
        target.resize(static_cast<size_t>(n));
        e.set_target(target);
        break;
      }
      case S_IFIFO:
      case S_IFSOCK:
      case S_IFCHR:
      case S_IFBLK:
        e.set_rdev(st.st_rdev);
        break;
      default:
        throw Error(strfmt("unknown file type %o", st.st_mode & S_IFMT));
    }
    records_.add(e);
  }

  void add_content(int fd, const struct stat& st, img::TmpfsEntry* e) {
    off_t size = st.st_size;
    if (static_cast<uint64_t>(size) <= kInlineMax) {
      std::string data(static_cast<size_t>(size), '\0');
      ssize_t n = pread(fd, data.data(), data.size(), 0);
      if (n < 0) throw_errno("read");
      data.resize(static_cast<size_t>(n));  // shrunk meanwhile
      e->set_data(data);
      return;
    }
    // Each file gets its own range of page-store addresses; only the data
    // extents are stored, so a sparse file stays sparse.
    uint64_t base = next_addr_;
    e->set_in_pages(true);
    e->set_data_addr(base);
    next_addr_ += (static_cast<uint64_t>(size) + kPage - 1) / kPage * kPage;
    for (off_t pos = 0; pos < size;) {
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
        memset(buf_.get() + (pages - 1) * kPage, 0, kPage);
        ssize_t n = pread(fd, buf_.get(), want, p);
        if (n < 0) throw_errno("read");
        if (static_cast<size_t>(n) < want) memset(buf_.get() + n, 0, want - n);
        pages_.add(base + static_cast<uint64_t>(p), buf_.get(), pages);
        p += static_cast<off_t>(pages * kPage);
      }
      pos = (hole + static_cast<off_t>(kPage) - 1) & ~static_cast<off_t>(kPage - 1);
    }
  }

  std::string show(const std::string& path) const { return where_ + "/" + path; }

  image::RecordWriter records_;
  image::PageWriter pages_;
  std::string where_;
  std::unique_ptr<char[]> buf_;
  dev_t dev_ = 0;
  uint64_t next_addr_ = 0;
  std::map<ino_t, std::string> first_name_;
};

void set_times(int dirfd, const std::string& path, const img::TmpfsEntry& e) {
  timespec ts[2] = {from_ns(e.atime_ns()), from_ns(e.mtime_ns())};
  if (utimensat(dirfd, path.empty() ? "." : path.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0)
    throw_errno("set times");
}

}  // namespace

void dump_tmpfs(int root, uint32_t id, image::ImageSink& sink, int zstd_level,
                const std::string& where) {
  TmpfsWalker w(sink, id, zstd_level, where);
  w.run(root, sink);
}

void check_tmpfs_images(uint32_t id, const image::ImageSource& src) {
  image::RecordReader r(src, records_name(id), image::Kind::Tmpfs);
  image::PageReader pr(src, pages_id(id));
}

void fill_tmpfs(int dirfd, uint32_t id, const image::ImageSource& src, const std::string& where) {
  image::RecordReader r(src, records_name(id), image::Kind::Tmpfs);
  std::vector<img::TmpfsEntry> entries;
  for (img::TmpfsEntry e; r.next(e);) entries.push_back(e);
  auto show = [&](const std::string& p) { return where + "/" + p; };

  // 1. Every name, with the small files' content. Directories are made
  // writable by us; their mode is set at the end.
  struct Big {
    uint64_t addr, size;
    const img::TmpfsEntry* e;
  };
  std::vector<Big> bigs;
  for (const img::TmpfsEntry& e : entries) {
    const std::string& p = e.path();
    in_context(show(p), [&] {
      if (!e.hardlink_to().empty()) {
        if (linkat(dirfd, e.hardlink_to().c_str(), dirfd, p.c_str(), 0) != 0)
          throw_errno("link to " + e.hardlink_to());
        return;
      }
      mode_t type = e.mode() & S_IFMT;
      if (p.empty()) {
        if (type != S_IFDIR) throw Error("the root is not a directory");
        return;
      }
      switch (type) {
        case S_IFDIR:
          if (mkdirat(dirfd, p.c_str(), 0700) != 0) throw_errno("mkdir");
          break;
        case S_IFREG: {
          UniqueFd f = openat_or_throw(dirfd, p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
          if (!e.data().empty()) write_full(f.get(), e.data().data(), e.data().size(), "write");
          if (ftruncate(f.get(), static_cast<off_t>(e.size())) != 0) throw_errno("truncate");
          if (e.in_pages()) bigs.push_back({e.data_addr(), e.size(), &e});
          break;
        }
        case S_IFLNK:
          if (symlinkat(e.target().c_str(), dirfd, p.c_str()) != 0) throw_errno("symlink");
          break;
        case S_IFIFO:
        case S_IFSOCK:
        case S_IFCHR:
        case S_IFBLK:
          if (mknodat(dirfd, p.c_str(), type | 0600, static_cast<dev_t>(e.rdev())) != 0)
            throw_errno("mknod");
          break;
        default:
          throw Error(strfmt("unknown file type %o", type));
      }
    });
  }

  // 2. The content of the larger files, in address order as stored.
  std::sort(bigs.begin(), bigs.end(), [](const Big& a, const Big& b) { return a.addr < b.addr; });
  image::PageReader pr(src, pages_id(id));
  UniqueFd cur;
  const Big* cur_big = nullptr;
  // A piece of page data may run from one file's range into the next.
  pr.for_each([&](uint64_t addr, const uint8_t* data, size_t npages) {
    uint64_t end = addr + npages * kPage;
    while (addr < end) {
      auto it = std::upper_bound(bigs.begin(), bigs.end(), addr,
                                 [](uint64_t a, const Big& b) { return a < b.addr; });
      if (it == bigs.begin())
        throw Error(strfmt("tmpfs page data at %#llx belongs to no file",
                           static_cast<unsigned long long>(addr)));
      const Big& b = *(it - 1);
      uint64_t off = addr - b.addr;
      uint64_t span = (b.size + kPage - 1) / kPage * kPage;  // the file's range
      if (off >= span)
        throw Error(strfmt("tmpfs page data at %#llx belongs to no file",
                           static_cast<unsigned long long>(addr)));
      if (cur_big != &b) {
        cur = openat_or_throw(dirfd, b.e->path(), O_WRONLY | O_NOFOLLOW);
        cur_big = &b;
      }
      uint64_t piece = std::min(end - addr, span - off);
      uint64_t len = std::min(piece, b.size - std::min(b.size, off));
      if (len) pwrite_full(cur.get(), data, len, static_cast<off_t>(off), show(b.e->path()));
      addr += piece;
      data += piece;
    }
  });
  cur.reset();

  // 3. Owner, mode (after the owner: chown clears set-id bits), xattrs and
  // times; directories deepest first, after their content.
  for (const img::TmpfsEntry& e : entries) {
    if (!e.hardlink_to().empty()) continue;
    const std::string& p = e.path();
    const char* at = p.empty() ? "." : p.c_str();
    in_context(show(p), [&] {
      if (fchownat(dirfd, at, e.uid(), e.gid(), AT_SYMLINK_NOFOLLOW) != 0) throw_errno("chown");
      mode_t type = e.mode() & S_IFMT;
      if (type == S_IFLNK) return;
      if (fchmodat(dirfd, at, e.mode() & 07777, 0) != 0) throw_errno("chmod");
      if (e.xattrs_size() && (type == S_IFREG || type == S_IFDIR)) {
        UniqueFd f =
            openat_or_throw(dirfd, p.empty() ? "." : p,
                            (type == S_IFDIR ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_NOFOLLOW);
        for (const img::Xattr& x : e.xattrs())
          if (fsetxattr(f.get(), x.name().c_str(), x.value().data(), x.value().size(), 0) != 0)
            throw_errno("set xattr " + x.name());
      }
    });
  }
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (!it->hardlink_to().empty()) continue;
    in_context(show(it->path()), [&] { set_times(dirfd, it->path(), *it); });
  }
  LOG_DEBUG("%s: %zu files restored", where.c_str(), entries.size());
}

}  // namespace ckpt
