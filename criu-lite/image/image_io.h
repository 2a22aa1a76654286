// Where images go and come from. The dump writes through an ImageSink and
// the restore reads through an ImageSource, so the same pipelines work on an
// image directory now and on a network stream (migration) later.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sys/fd.h"

namespace ckpt::image {

// Bytes of one image, owned: an mmap of a file or a heap buffer.
class Blob {
 public:
  virtual ~Blob() = default;
  virtual const uint8_t* data() const = 0;
  virtual size_t size() const = 0;
  // Copies [off, off+len) into dst (bounds are the caller's to check). For a
  // file this is pread: on this VM, faulting a large mapping in page by page
  // costs several times more than reading the same bytes into a warm buffer.
  virtual void read(uint64_t off, void* dst, size_t len) const;
};

// A large image written piece by piece (page data). Nothing is visible under
// its final name until commit(); destroying it uncommitted discards it.
class StreamWriter {
 public:
  virtual ~StreamWriter() = default;
  virtual void write(const void* data, size_t len) = 0;
  // Bytes written so far (the offset of the next write).
  virtual uint64_t offset() const = 0;
  virtual void commit() = 0;
};

class ImageSink {
 public:
  virtual ~ImageSink() = default;
  // Stores a whole image atomically under name.
  virtual void put(const std::string& name, const void* data, size_t len) = 0;
  virtual std::unique_ptr<StreamWriter> open_stream(const std::string& name) = 0;
  // Everything stored so far becomes final; called once, after the last put.
  virtual void commit() = 0;
};

class ImageSource {
 public:
  virtual ~ImageSource() = default;
  // Throws Error("NAME: no such image") if absent.
  virtual std::shared_ptr<const Blob> open(const std::string& name) const = 0;
  virtual bool exists(const std::string& name) const = 0;
  // A description for messages ("image directory /tmp/d").
  virtual std::string where() const = 0;
  // The checkpoint an incremental one builds on (pagemap runs marked
  // in_parent are read from it), or nullptr if there is none.
  virtual std::shared_ptr<const ImageSource> parent() const { return nullptr; }
};

// The name of the link to the parent checkpoint in an image directory.
inline constexpr const char* kParentLink = "parent";

// An image directory on disk. Each image is written to ".NAME.tmp" and
// renamed into place; fsync()s are done once at commit(). Destroying the sink
// before commit() removes every file it created.
class DirSink : public ImageSink {
 public:
  explicit DirSink(const std::string& dir);  // creates dir if missing
  ~DirSink() override;
  void put(const std::string& name, const void* data, size_t len) override;
  std::unique_ptr<StreamWriter> open_stream(const std::string& name) override;
  // A symbolic link name -> target in the directory (the parent link),
  // replacing one left by an older dump there.
  void put_symlink(const std::string& name, const std::string& target);
  void commit() override;
  const std::string& dir() const { return dir_; }

 private:
  friend class DirStreamWriter;
  std::string dir_;
  UniqueFd dirfd_;
  std::vector<std::string> created_;
  std::vector<std::string> links_;  // not fsynced one by one: the dir fsync covers them
  bool committed_ = false;
};

// Reads images from a directory; open() maps the file read-only.
class DirSource : public ImageSource {
 public:
  explicit DirSource(const std::string& dir);
  std::shared_ptr<const Blob> open(const std::string& name) const override;
  bool exists(const std::string& name) const override;
  std::string where() const override { return "image directory " + dir_; }
  // The directory the `parent` link names (relative to this one unless
  // absolute); nullptr without a link. Throws if the link is dangling.
  std::shared_ptr<const ImageSource> parent() const override;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  UniqueFd dirfd_;
};

}  // namespace ckpt::image
