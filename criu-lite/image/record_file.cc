#include "image/record_file.h"

#include <bit>
#include <cstring>

#include "image/crc32c.h"
#include "sys/error.h"

namespace ckpt::image {

// Images are little-endian on disk; ckpt only runs on x86_64, so the bytes
// are copied as they are.
static_assert(std::endian::native == std::endian::little);

namespace {

constexpr size_t kHeaderSize = 16;
constexpr size_t kTrailerSize = 16;
constexpr uint32_t kTrailerMark = 0xffffffff;

uint32_t get_u32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

uint16_t get_u16(const uint8_t* p) {
  uint16_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

void put_u32(std::string& out, uint32_t v) {
  out.append(reinterpret_cast<const char*>(&v), 4);
}
void put_u16(std::string& out, uint16_t v) {
  out.append(reinterpret_cast<const char*>(&v), 2);
}

}  // namespace

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Inventory:
      return "inventory";
    case Kind::Pstree:
      return "pstree";
    case Kind::Core:
      return "core";
    case Kind::Mm:
      return "mm";
    case Kind::Pagemap:
      return "pagemap";
    case Kind::Pages:
      return "pages";
    case Kind::Files:
      return "files";
    case Kind::FdTable:
      return "fdtable";
    case Kind::PipeData:
      return "pipe-data";
    case Kind::UnixQueues:
      return "unix-queues";
    case Kind::Ghosts:
      return "ghosts";
    case Kind::IpcMsgs:
      return "ipc-msgs";
    case Kind::Namespaces:
      return "namespaces";
    case Kind::MntNs:
      return "mntns";
    case Kind::Tmpfs:
      return "tmpfs";
    case Kind::NetNs:
      return "netns";
    case Kind::Tty:
      return "tty";
    case Kind::InetQueues:
      return "inet-queues";
    case Kind::NetLock:
      return "netlock";
  }
  return "unknown";  // a value read from a foreign or corrupt file
}

RecordWriter::RecordWriter(std::string name, Kind kind) : name_(std::move(name)) {
  put_u32(buf_, kMagic);
  put_u32(buf_, static_cast<uint32_t>(kind));
  put_u16(buf_, kFormatMajor);
  put_u16(buf_, kFormatMinor);
  put_u32(buf_, 0);  // header flags: none defined yet
}

void RecordWriter::add(const google::protobuf::MessageLite& msg) {
  size_t len = msg.ByteSizeLong();
  // The reader would refuse it, so fail at dump time where the cause is known.
  if (len > kMaxRecord)
    throw Error(strfmt("image %s: record %u is %zu bytes, over the %u limit", name_.c_str(), count_,
                       len, kMaxRecord));
  put_u32(buf_, static_cast<uint32_t>(len));
  if (!msg.AppendToString(&buf_))
    throw Error(strfmt("image %s: record %u does not serialize", name_.c_str(), count_));
  count_++;
}

void RecordWriter::save(ImageSink& sink) {
  uint32_t crc = crc32c(buf_.data(), buf_.size());
  size_t body = buf_.size();
  put_u32(buf_, kTrailerMark);
  put_u32(buf_, count_);
  put_u32(buf_, crc);
  put_u32(buf_, kTrailerMagic);
  // The trailer is taken off again so save() can be retried or repeated.
  try {
    sink.put(name_, buf_.data(), buf_.size());
  } catch (...) {
    buf_.resize(body);
    throw;
  }
  buf_.resize(body);
}

void save_message(ImageSink& sink, const std::string& name, Kind kind,
                  const google::protobuf::MessageLite& msg) {
  RecordWriter w(name, kind);
  w.add(msg);
  w.save(sink);
}

RecordReader::RecordReader(const ImageSource& src, const std::string& name, Kind kind)
    : blob_(src.open(name)), name_(name) {
  validate(kind);
}

RecordReader::RecordReader(std::shared_ptr<const Blob> blob, const std::string& name, Kind kind)
    : blob_(std::move(blob)), name_(name) {
  validate(kind);
}

void RecordReader::validate(Kind kind) {
  auto fail = [&](const std::string& what) { throw Error("image " + name_ + ": " + what); };
  const uint8_t* p = blob_->data();
  size_t size = blob_->size();

  // Header first: a foreign file should be called foreign, not "truncated".
  if (size < kHeaderSize)
    fail(strfmt("truncated (%zu bytes, header needs %zu)", size, kHeaderSize));
  uint32_t magic = get_u32(p);
  if (magic != kMagic) fail(strfmt("bad magic 0x%08x (not a ckpt image)", magic));
  uint32_t file_kind = get_u32(p + 4);
  if (file_kind != static_cast<uint32_t>(kind)) {
    const char* found = kind_name(static_cast<Kind>(file_kind));
    if (strcmp(found, "unknown") == 0)
      fail(strfmt("has unknown kind %u, expected %s", file_kind, kind_name(kind)));
    fail(strfmt("is a %s image, expected %s", found, kind_name(kind)));
  }
  uint16_t major = get_u16(p + 8);
  minor_ = get_u16(p + 10);
  if (major > kFormatMajor)
    fail(
        strfmt("format version %u.%u is newer than this ckpt (%u.x)", major, minor_, kFormatMajor));
  if (major < kFormatMajor)
    fail(strfmt("format version %u.%u is older than this ckpt supports (%u.x)", major, minor_,
                kFormatMajor));

  if (size < kHeaderSize + kTrailerSize)
    fail(strfmt("truncated (%zu bytes, header and trailer need %zu)", size,
                kHeaderSize + kTrailerSize));
  const uint8_t* t = p + size - kTrailerSize;
  if (get_u32(t) != kTrailerMark || get_u32(t + 12) != kTrailerMagic)
    fail(strfmt("truncated or corrupt (no trailer at the end of %zu bytes)", size));
  if (crc32c(p, size - kTrailerSize) != get_u32(t + 8)) fail("checksum mismatch");
  count_ = get_u32(t + 4);

  // The checksum only proves the bytes are what the writer wrote; the record
  // lengths are still checked so a buggy writer cannot make us over-read.
  pos_ = kHeaderSize;
  end_ = size - kTrailerSize;
  size_t pos = pos_;
  uint32_t n = 0;
  while (pos < end_) {
    if (end_ - pos < 4) fail(strfmt("record %u: length cut off by the trailer", n));
    uint32_t len = get_u32(p + pos);
    if (len > kMaxRecord) fail(strfmt("record %u length %u exceeds limit", n, len));
    if (len > end_ - pos - 4)
      fail(
          strfmt("record %u length %u runs past the end (%zu bytes left)", n, len, end_ - pos - 4));
    pos += 4 + len;
    n++;
  }
  if (n != count_) fail(strfmt("trailer says %u records, found %u", count_, n));
}

bool RecordReader::next(google::protobuf::MessageLite& msg) {
  if (read_ >= count_) return false;
  // validate() proved every length fits, so no bounds checks are repeated here.
  uint32_t len = get_u32(blob_->data() + pos_);
  if (!msg.ParseFromArray(blob_->data() + pos_ + 4, static_cast<int>(len)))
    throw Error(strfmt("image %s: record %u does not parse", name_.c_str(), read_));
  pos_ += 4 + len;
  read_++;
  return true;
}

void load_message(const ImageSource& src, const std::string& name, Kind kind,
                  google::protobuf::MessageLite& msg) {
  RecordReader r(src, name, kind);
  if (r.count() != 1)
    throw Error(strfmt("image %s: holds %u records, expected 1", name.c_str(), r.count()));
  r.next(msg);
}

}  // namespace ckpt::image
