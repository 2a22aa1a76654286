// Images over the migration channel: the dump on the source writes through
// a NetSink, the destination feeds the frames to a SetReceiver and restores
// from the MemSource it yields. A "set" is one checkpoint (a pre-copy round,
// or the final records); a set may name an earlier one as its parent, like
// an incremental checkpoint's parent directory. Nothing touches the disk
// unless MemSource::save_to is asked to.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "image/image_io.h"
#include "migrate/transport.h"

namespace ckpt::migrate {

// Image bytes per ImageData frame.
inline constexpr size_t kImageChunk = 1u << 20;

class NetSink : public image::ImageSink {
 public:
  NetSink(Channel& ch, uint32_t set, std::optional<uint32_t> parent_set);
  // ImageBegin, ImageData frames of at most kImageChunk, ImageEnd (crc32c).
  void put(const std::string& name, const void* data, size_t len) override;
  // Buffers into kImageChunk frames; commit() sends ImageEnd, destruction
  // before commit() sends ImageAbort. Streams and puts may interleave, also
  // from different threads (each image is numbered in its frames).
  std::unique_ptr<image::StreamWriter> open_stream(const std::string& name) override;
  // SetCommit: the receiver publishes the set. Error if a stream is still open.
  void commit() override;
  // Image bytes sent (bodies only).
  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

 private:
  friend class NetStreamWriter;
  uint32_t begin(const std::string& name, uint64_t size);
  // ImageData frames of at most kImageChunk; returns the updated crc32c.
  uint32_t data(uint32_t image, const void* p, size_t len, uint32_t crc);
  void end(uint32_t image, const std::string& name, uint64_t size, uint32_t crc);
  Channel& ch_;
  uint32_t set_;
  std::optional<uint32_t> parent_;
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint32_t> next_image_{1};
  std::atomic<int> open_streams_{0};
  bool committed_ = false;
};

class MemSource : public image::ImageSource {
 public:
  MemSource(uint32_t set, std::string peer, std::shared_ptr<const MemSource> parent);
  // A heap blob sharing the received buffer (no copy).
  std::shared_ptr<const image::Blob> open(const std::string& name) const override;
  bool exists(const std::string& name) const override;
  std::string where() const override;  // "migration set 3 from PEER"
  std::shared_ptr<const image::ImageSource> parent() const override { return parent_; }
  uint32_t set() const { return set_; }
  // Image bytes in this set (not its parents).
  uint64_t bytes() const;
  // Writes every image of this set to dir through image::DirSink (a
  // debugging copy: ckpt receive --work-dir).
  void save_to(const std::string& dir) const;

 private:
  friend class SetReceiver;
  uint32_t set_;
  std::string peer_;
  std::shared_ptr<const MemSource> parent_;
  std::map<std::string, std::shared_ptr<const image::Blob>> images_;
};

class SetReceiver {
 public:
  explicit SetReceiver(std::string peer);
  ~SetReceiver();
  // True if f was an image frame (ImageBegin/Data/End/Abort, SetCommit) and
  // was consumed (its body may be moved from); false for anything else.
  // Errors: data for an image not begun, crc or size mismatch, duplicate
  // name, unknown parent set, a set committed twice.
  bool feed(Frame& f);
  // ch.recv(f, timeout_ms), with an Error (connection lost, bad frame)
  // naming the images still open: "receiving image pages-1.img of migration
  // set 2 from PEER: connection to PEER closed".
  bool recv(Channel& ch, Frame& f, int timeout_ms);
  // The set completed by the last SetCommit, or nullptr if none since the
  // last call.
  std::shared_ptr<MemSource> take_committed();
  // A committed set by id (earlier sets stay: they are parents), or nullptr.
  std::shared_ptr<MemSource> set(uint32_t id) const;

 private:
  struct Pending;
  Pending& pending(uint32_t set);
  std::string peer_;
  std::map<uint32_t, std::unique_ptr<Pending>> pending_;
  std::map<uint32_t, std::shared_ptr<MemSource>> committed_;
  std::shared_ptr<MemSource> last_;
};

}  // namespace ckpt::migrate
