// Record images: the framing every image file except page data uses.
//
//   header  : magic "CKPT" (u32 LE 0x54504b43), kind (u32), major (u16),
//             minor (u16), header flags (u32)             = 16 bytes
//   records : u32 length | protobuf message bytes, repeated
//   trailer : u32 0xffffffff | u32 record count | u32 crc32c of every byte
//             before the trailer | u32 magic "KPTE"       = 16 bytes
//
// A reader checks the whole file before handing out a record: size, magic,
// kind, major version, trailer and checksum; each length against
// kMaxRecord. So a truncated, corrupted or foreign file is one clear error
// naming the image, never a crash.
#pragma once

#include <google/protobuf/message_lite.h>

#include <cstdint>
#include <memory>
#include <string>

#include "image/image_io.h"

namespace ckpt::image {

constexpr uint32_t kMagic = 0x54504b43;         // "CKPT"
constexpr uint32_t kTrailerMagic = 0x4554504b;  // "KPTE"
constexpr uint16_t kFormatMajor = 1;
constexpr uint16_t kFormatMinor = 0;
constexpr uint32_t kMaxRecord = 256u << 20;

enum class Kind : uint32_t {
  Inventory = 1,
  Pstree = 2,
  Core = 3,
  Mm = 4,
  Pagemap = 5,
  Pages = 6,  // raw page data; header only, see page_store.h
  Files = 7,
  FdTable = 8,
  PipeData = 9,
  UnixQueues = 10,
  Ghosts = 11,  // 10 is taken by the unix socket queues
  IpcMsgs = 12,     // messages of SysV and POSIX queues (ipc.proto IpcMessage)
  Namespaces = 13,  // namespaces.img (namespaces.proto NamespaceImages)
  NetNs = 14,       // netns.img (netns.proto NetNs)
  MntNs = 30,       // mntns.img (mnt.proto MntNs)
  Tmpfs = 31,       // tmpfs-ID.img (mnt.proto TmpfsEntry)
  Tty = 20,         // terminals (tty.img)
  InetQueues = 23,  // tcp-queues.img, udp-queues.img (sockets.proto InetQueue)
  NetLock = 24,     // netlock.img (sockets.proto NetLock)
};
const char* kind_name(Kind k);

// Builds one record image in memory and stores it through a sink.
class RecordWriter {
 public:
  RecordWriter(std::string name, Kind kind);
  void add(const google::protobuf::MessageLite& msg);
  // Appends the trailer and puts the image into sink.
  void save(ImageSink& sink);
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::string buf_;
  uint32_t count_ = 0;
};

// Convenience: an image holding a single message.
void save_message(ImageSink& sink, const std::string& name, Kind kind,
                  const google::protobuf::MessageLite& msg);

class RecordReader {
 public:
  // Validates the whole image (throws Error "image NAME: ..." if bad).
  RecordReader(const ImageSource& src, const std::string& name, Kind kind);
  // Same, on bytes already in memory (used by tests and the fuzzer).
  RecordReader(std::shared_ptr<const Blob> blob, const std::string& name, Kind kind);
  uint32_t count() const { return count_; }
  uint16_t minor() const { return minor_; }
  // Parses the next record into msg; false after the last one.
  bool next(google::protobuf::MessageLite& msg);

 private:
  void validate(Kind kind);
  std::shared_ptr<const Blob> blob_;
  std::string name_;
  size_t pos_ = 0, end_ = 0;
  uint32_t count_ = 0, read_ = 0;
  uint16_t minor_ = 0;
};

// Reads an image that must hold exactly one message.
void load_message(const ImageSource& src, const std::string& name, Kind kind,
                  google::protobuf::MessageLite& msg);

// A Blob over a std::string (tests, network buffers).
std::shared_ptr<const Blob> make_blob(std::string bytes);

}  // namespace ckpt::image
