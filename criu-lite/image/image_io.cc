#include "image/image_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "image/record_file.h"  // make_blob
#include "sys/error.h"

namespace ckpt::image {

namespace {

// A read-only file mapping; unmapped when the last reader drops it. The fd
// stays open for bulk reads with pread.
class MmapBlob : public Blob {
 public:
  MmapBlob(void* addr, size_t size, UniqueFd fd, std::string path)
      : addr_(addr), size_(size), fd_(std::move(fd)), path_(std::move(path)) {}
  ~MmapBlob() override { ::munmap(addr_, size_); }
  MmapBlob(const MmapBlob&) = delete;
  MmapBlob& operator=(const MmapBlob&) = delete;
  const uint8_t* data() const override { return static_cast<const uint8_t*>(addr_); }
  size_t size() const override { return size_; }
  void read(uint64_t off, void* dst, size_t len) const override {
    auto* p = static_cast<char*>(dst);
    while (len > 0) {
      ssize_t n = ::pread(fd_.get(), p, len, static_cast<off_t>(off));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw_errno(n < 0 ? errno : EIO, "read " + path_);
      p += n;
      off += static_cast<uint64_t>(n);
      len -= static_cast<size_t>(n);
    }
  }

 private:
  void* addr_;
  size_t size_;
  UniqueFd fd_;
  std::string path_;
};

class HeapBlob : public Blob {
 public:
  explicit HeapBlob(std::string bytes) : bytes_(std::move(bytes)) {}
  const uint8_t* data() const override { return reinterpret_cast<const uint8_t*>(bytes_.data()); }
  size_t size() const override { return bytes_.size(); }

 private:
  std::string bytes_;
};

// Image names come from code but also from images (a pagemap names its pages
// file), so anything that could leave the directory is refused.
bool valid_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

void check_name(const std::string& name) {
  if (!valid_name(name)) throw Error("bad image name '" + name + "'");
}

std::string tmp_name(const std::string& name) {
  return "." + name + ".tmp";
}

// Images hold process memory, so only the dumping user may read them.
constexpr mode_t kImageMode = 0600;

}  // namespace

void Blob::read(uint64_t off, void* dst, size_t len) const {
  memcpy(dst, data() + off, len);
}

std::shared_ptr<const Blob> make_blob(std::string bytes) {
  return std::make_shared<HeapBlob>(std::move(bytes));
}

// Writes ".NAME.tmp" and renames it on commit(), so a reader never sees a
// half-written page file under its real name. Must not outlive its sink.
class DirStreamWriter : public StreamWriter {
 public:
  DirStreamWriter(DirSink& sink, std::string name) : sink_(sink), name_(std::move(name)) {
    tmp_ = tmp_name(name_);
    // Recorded before the file exists so a failure in between cannot leak it.
    sink_.created_.push_back(tmp_);
    fd_ = openat_or_throw(sink_.dirfd_.get(), tmp_, O_WRONLY | O_CREAT | O_TRUNC, kImageMode);
  }
  ~DirStreamWriter() override {
    if (!committed_) ::unlinkat(sink_.dirfd_.get(), tmp_.c_str(), 0);
  }

  void write(const void* data, size_t len) override {
    if (committed_) throw Error("image " + name_ + ": write after commit");
    write_full(fd_.get(), data, len, sink_.dir_ + "/" + tmp_);
    offset_ += len;
  }
  uint64_t offset() const override { return offset_; }

  void commit() override {
    if (committed_) return;
    if (sink_.committed_) throw Error("image " + name_ + ": committed after its image directory");
    // close() can report a deferred write error (NFS); the data is fsynced
    // later by DirSink::commit(), which reopens the file.
    if (::close(fd_.release()) < 0) throw_errno("close " + sink_.dir_ + "/" + tmp_);
    sink_.created_.reserve(sink_.created_.size() + 1);
    if (::renameat(sink_.dirfd_.get(), tmp_.c_str(), sink_.dirfd_.get(), name_.c_str()) < 0)
      throw_errno("rename " + sink_.dir_ + "/" + tmp_);
    sink_.created_.push_back(name_);
    committed_ = true;
  }

 private:
  DirSink& sink_;
  std::string name_, tmp_;
  UniqueFd fd_;
  uint64_t offset_ = 0;
  bool committed_ = false;
};

DirSink::DirSink(const std::string& dir) : dir_(dir) {
  if (::mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST) throw_errno("mkdir " + dir);
  dirfd_ = open_or_throw(dir, O_RDONLY | O_DIRECTORY);
}

DirSink::~DirSink() {
  if (committed_) return;
  for (auto it = created_.rbegin(); it != created_.rend(); ++it)
    ::unlinkat(dirfd_.get(), it->c_str(), 0);  // ENOENT for renamed tmp files is expected
  for (const auto& l : links_) ::unlinkat(dirfd_.get(), l.c_str(), 0);
}

void DirSink::put_symlink(const std::string& name, const std::string& target) {
  check_name(name);
  if (committed_) throw Error("link " + name + ": put after the image directory was committed");
  std::string tmp = tmp_name(name);
  ::unlinkat(dirfd_.get(), tmp.c_str(), 0);
  links_.reserve(links_.size() + 2);
  links_.push_back(tmp);
  if (::symlinkat(target.c_str(), dirfd_.get(), tmp.c_str()) < 0)
    throw_errno("symlink " + dir_ + "/" + tmp + " -> " + target);
  // rename() replaces a link an older dump left, atomically.
  if (::renameat(dirfd_.get(), tmp.c_str(), dirfd_.get(), name.c_str()) < 0)
    throw_errno("rename " + dir_ + "/" + tmp);
  links_.push_back(name);
}

void DirSink::put(const std::string& name, const void* data, size_t len) {
  check_name(name);
  if (committed_) throw Error("image " + name + ": put after the image directory was committed");
  std::string tmp = tmp_name(name);
  // Both names are recorded without a chance to fail after the file exists.
  created_.reserve(created_.size() + 2);
  created_.push_back(tmp);
  try {
    UniqueFd fd = openat_or_throw(dirfd_.get(), tmp, O_WRONLY | O_CREAT | O_TRUNC, kImageMode);
    write_full(fd.get(), data, len, dir_ + "/" + tmp);
    if (::close(fd.release()) < 0) throw_errno("close " + dir_ + "/" + tmp);
    if (::renameat(dirfd_.get(), tmp.c_str(), dirfd_.get(), name.c_str()) < 0)
      throw_errno("rename " + dir_ + "/" + tmp);
    created_.push_back(name);
  } catch (...) {
    // The caller may go on and commit the other images; this one must not
    // linger as a tmp file (ENOSPC is the usual cause).
    ::unlinkat(dirfd_.get(), tmp.c_str(), 0);
    throw;
  }
}

std::unique_ptr<StreamWriter> DirSink::open_stream(const std::string& name) {
  check_name(name);
  if (committed_) throw Error("image " + name + ": opened after the image directory was committed");
  return std::make_unique<DirStreamWriter>(*this, name);
}

void DirSink::commit() {
  if (committed_) return;
  // Data first, then the directory entries that name it: after a crash the
  // names must not point at empty files. Tmp names that were renamed are
  // gone (ENOENT); a stream still open gets synced too, which is harmless.
  std::set<std::string> done;
  for (const auto& name : created_) {
    if (!done.insert(name).second) continue;
    int fd = retry_eintr(
        [&] { return ::openat(dirfd_.get(), name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW); });
    if (fd < 0) {
      if (errno == ENOENT) continue;
      throw_errno("open " + dir_ + "/" + name);
    }
    UniqueFd owner(fd);
    if (::fsync(fd) < 0) throw_errno("fsync " + dir_ + "/" + name);
  }
  if (::fsync(dirfd_.get()) < 0) throw_errno("fsync " + dir_);
  committed_ = true;
}

DirSource::DirSource(const std::string& dir) : dir_(dir) {
  dirfd_ = open_or_throw(dir, O_RDONLY | O_DIRECTORY);
}

std::shared_ptr<const Blob> DirSource::open(const std::string& name) const {
  check_name(name);
  int fd = retry_eintr(
      [&] { return ::openat(dirfd_.get(), name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW); });
  if (fd < 0) {
    if (errno == ENOENT) throw Error(name + ": no such image in " + dir_);
    throw_errno("open " + dir_ + "/" + name);
  }
  UniqueFd owner(fd);
  struct stat st;
  if (::fstat(fd, &st) < 0) throw_errno("stat " + dir_ + "/" + name);
  if (!S_ISREG(st.st_mode)) throw Error("image " + name + ": not a regular file in " + dir_);
  // mmap() refuses a zero length, and an empty image is still a valid answer
  // (the reader then reports it as truncated).
  if (st.st_size == 0) return make_blob(std::string());
  auto size = static_cast<size_t>(st.st_size);
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (addr == MAP_FAILED) throw_errno("mmap " + dir_ + "/" + name);
  return std::make_shared<MmapBlob>(addr, size, std::move(owner), dir_ + "/" + name);
}

std::shared_ptr<const ImageSource> DirSource::parent() const {
  char buf[4096];
  ssize_t n = ::readlinkat(dirfd_.get(), kParentLink, buf, sizeof buf - 1);
  if (n < 0) {
    if (errno == ENOENT) return nullptr;
    throw_errno("read link " + dir_ + "/" + kParentLink);
  }
  std::string target(buf, static_cast<size_t>(n));
  std::string path = target[0] == '/' ? target : dir_ + "/" + target;
  struct stat st;
  if (::stat(path.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
    throw Error(strfmt("%s: its parent checkpoint %s (link '%s') is missing", dir_.c_str(),
                       path.c_str(), target.c_str()));
  return std::make_shared<DirSource>(path);
}

bool DirSource::exists(const std::string& name) const {
  if (!valid_name(name)) return false;
  struct stat st;
  return ::fstatat(dirfd_.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

}  // namespace ckpt::image
