// Images over the migration channel: the dump on the source writes through
// a NetSink, the destination feeds the frames to a SetReceiver and restores
// from the MemSource it yields. A "set" is one checkpoint (a pre-copy round,
// or the final records); a set may name an earlier one as its parent, like
// an incremental checkpoint's parent directory. Nothing touches the disk
// unless MemSource::save_to is asked to.
#pragma once

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
  // before commit() sends ImageAbort. One stream at a time per sink.
  std::unique_ptr<image::StreamWriter> open_stream(const std::string& name) override;
  // SetCommit: the receiver publishes the set.
  void commit() override;
  // Image bytes sent (bodies only).
  uint64_t bytes() const { return bytes_; }

 private:
  friend class NetStreamWriter;
  void begin(const std::string& name, uint64_t size);
  void data(const void* p, size_t len);
  Channel& ch_;
  uint32_t set_;
  std::optional<uint32_t> parent_;
  uint64_t bytes_ = 0;
  bool stream_open_ = false;
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
