// Shared by the fuzz targets and the seed generator: an in-memory image store
// and the layout of fuzz inputs, so seeds and targets agree on it.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "image/crc32c.h"
#include "image/image_io.h"
#include "image/record_file.h"
#include "sys/error.h"

namespace ckpt::fuzz {

// Images kept in a map; the writer side is used by the seed generator, the
// reader side by the targets.
class MemImages : public image::ImageSink, public image::ImageSource {
 public:
  class Stream : public image::StreamWriter {
   public:
    Stream(MemImages& owner, std::string name) : owner_(owner), name_(std::move(name)) {}
    void write(const void* data, size_t len) override {
      buf_.append(static_cast<const char*>(data), len);
    }
    uint64_t offset() const override { return buf_.size(); }
    void commit() override { owner_.images[name_] = buf_; }

   private:
    MemImages& owner_;
    std::string name_, buf_;
  };

  void put(const std::string& name, const void* data, size_t len) override {
    images[name].assign(static_cast<const char*>(data), len);
  }
  std::unique_ptr<image::StreamWriter> open_stream(const std::string& name) override {
    return std::make_unique<Stream>(*this, name);
  }
  void commit() override {}
  std::shared_ptr<const image::Blob> open(const std::string& name) const override {
    auto it = images.find(name);
    if (it == images.end()) throw Error(name + ": no such image in memory");
    return image::make_blob(it->second);
  }
  bool exists(const std::string& name) const override { return images.count(name) > 0; }
  std::string where() const override { return "memory"; }

  std::map<std::string, std::string> images;
};

// Record fuzz input: one flag byte, then the image. With kFixCrc the target
// rewrites the trailer checksum first, so mutations get past the crc and
// reach the record walk and the protobuf parsers.
constexpr uint8_t kFixCrc = 1;

// Recomputes the trailer crc of a record image in place (if it has one).
inline void fix_record_crc(std::string& img) {
  if (img.size() < 32) return;
  uint32_t crc = image::crc32c(img.data(), img.size() - 16);
  memcpy(&img[img.size() - 8], &crc, 4);
}

// Page fuzz input: flags (u8), pagemap part length (u32 LE), pagemap part,
// pages file. Flags let mutations skip checks a random byte flip would
// almost never pass.
constexpr uint8_t kFrameMap = 1;        // pagemap part is a bare Pagemap message: frame it
constexpr uint8_t kFixChunkCrc = 2;     // recompute each chunk crc from the pages part
constexpr uint8_t kFixPagesHeader = 4;  // write a valid 16-byte header over the pages part
// The rest of the input (after the flag byte) drives a generator of pagemaps
// and pages files instead; see fuzz_page_reader.cc.
constexpr uint8_t kStructured = 8;

inline std::string page_input(uint8_t flags, const std::string& map, const std::string& pages) {
  std::string out(1, static_cast<char>(flags));
  auto len = static_cast<uint32_t>(map.size());
  out.append(reinterpret_cast<const char*>(&len), 4);
  return out + map + pages;
}

}  // namespace ckpt::fuzz
