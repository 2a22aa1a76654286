#include "image/record_file.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "image/crc32c.h"
#include "mm.pb.h"
#include "pstree.pb.h"
#include "sys/error.h"

namespace {

using namespace ckpt::image;
using ckpt::img::MmCore;
using ckpt::img::PstreeEntry;

// Collects put() images in memory.
class MemSink : public ImageSink {
 public:
  void put(const std::string& name, const void* data, size_t len) override {
    images[name].assign(static_cast<const char*>(data), len);
  }
  std::unique_ptr<StreamWriter> open_stream(const std::string&) override { return nullptr; }
  void commit() override {}
  std::map<std::string, std::string> images;
};

class MemSource : public ImageSource {
 public:
  explicit MemSource(std::map<std::string, std::string> images) : images_(std::move(images)) {}
  std::shared_ptr<const Blob> open(const std::string& name) const override {
    auto it = images_.find(name);
    if (it == images_.end()) throw ckpt::Error(name + ": no such image in memory");
    return make_blob(it->second);
  }
  bool exists(const std::string& name) const override { return images_.count(name) > 0; }
  std::string where() const override { return "memory"; }

 private:
  std::map<std::string, std::string> images_;
};

PstreeEntry entry(uint32_t pid) {
  PstreeEntry e;
  e.set_pid(pid);
  e.set_ppid(pid > 1 ? 1 : 0);
  e.set_pgid(pid);
  e.set_sid(1);
  e.add_threads(pid);
  e.add_threads(pid + 1000);
  return e;
}

// A valid pstree image with n records, as RecordWriter writes it.
std::string pstree_image(int n) {
  MemSink sink;
  RecordWriter w("pstree.img", Kind::Pstree);
  for (int i = 0; i < n; i++) w.add(entry(100 + i));
  w.save(sink);
  return sink.images.at("pstree.img");
}

void put32(std::string& s, uint32_t v) {
  s.append(reinterpret_cast<const char*>(&v), 4);
}
void put16(std::string& s, uint16_t v) {
  s.append(reinterpret_cast<const char*>(&v), 2);
}

// Hand-built image with a correct checksum, so a test reaches the check it
// is aimed at instead of failing on the crc.
std::string frame(uint32_t kind, uint16_t major, uint16_t minor,
                  const std::vector<std::string>& records, uint32_t count,
                  const std::vector<uint32_t>& lengths = {}) {
  std::string s;
  put32(s, kMagic);
  put32(s, kind);
  put16(s, major);
  put16(s, minor);
  put32(s, 0);
  for (size_t i = 0; i < records.size(); i++) {
    put32(s, i < lengths.size() ? lengths[i] : static_cast<uint32_t>(records[i].size()));
    s += records[i];
  }
  uint32_t crc = crc32c(s.data(), s.size());
  put32(s, 0xffffffff);
  put32(s, count);
  put32(s, crc);
  put32(s, kTrailerMagic);
  return s;
}

std::string serialized(uint32_t pid) {
  return entry(pid).SerializeAsString();
}

std::string error_of(const std::string& bytes, Kind kind, const std::string& name = "core-42.img") {
  try {
    RecordReader r(make_blob(bytes), name, kind);
    MmCore msg;
    while (r.next(msg)) {
    }
  } catch (const ckpt::Error& e) {
    return e.what();
  }
  return "";
}

TEST(RecordFile, KindNames) {
  EXPECT_STREQ(kind_name(Kind::Inventory), "inventory");
  EXPECT_STREQ(kind_name(Kind::Pstree), "pstree");
  EXPECT_STREQ(kind_name(Kind::Core), "core");
  EXPECT_STREQ(kind_name(Kind::Mm), "mm");
  EXPECT_STREQ(kind_name(Kind::Pagemap), "pagemap");
  EXPECT_STREQ(kind_name(Kind::Pages), "pages");
  EXPECT_STREQ(kind_name(Kind::Files), "files");
  EXPECT_STREQ(kind_name(Kind::FdTable), "fdtable");
  EXPECT_STREQ(kind_name(Kind::PipeData), "pipe-data");
  EXPECT_STREQ(kind_name(static_cast<Kind>(77)), "unknown");
}

TEST(RecordFile, RoundTrip) {
  std::string img = pstree_image(5);
  RecordReader r(make_blob(img), "pstree.img", Kind::Pstree);
  EXPECT_EQ(r.count(), 5u);
  EXPECT_EQ(r.minor(), kFormatMinor);
  PstreeEntry e;
  for (int i = 0; i < 5; i++) {
    ASSERT_TRUE(r.next(e));
    EXPECT_EQ(e.SerializeAsString(), entry(100 + i).SerializeAsString());
  }
  EXPECT_FALSE(r.next(e));
  EXPECT_FALSE(r.next(e));
}

TEST(RecordFile, LayoutMatchesHeaderComment) {
  std::string img = pstree_image(1);
  std::string rec = serialized(100);
  ASSERT_EQ(img.size(), 16 + 4 + rec.size() + 16);
  uint32_t v;
  memcpy(&v, img.data(), 4);
  EXPECT_EQ(v, 0x54504b43u);
  EXPECT_EQ(img.substr(0, 4), "CKPT");
  memcpy(&v, img.data() + 4, 4);
  EXPECT_EQ(v, 2u);
  memcpy(&v, img.data() + 16, 4);
  EXPECT_EQ(v, rec.size());
  EXPECT_EQ(img.substr(20, rec.size()), rec);
  const char* t = img.data() + img.size() - 16;
  memcpy(&v, t, 4);
  EXPECT_EQ(v, 0xffffffffu);
  memcpy(&v, t + 4, 4);
  EXPECT_EQ(v, 1u);
  memcpy(&v, t + 8, 4);
  EXPECT_EQ(v, crc32c(img.data(), img.size() - 16));
  EXPECT_EQ(img.substr(img.size() - 4), "KPTE");
}

TEST(RecordFile, EmptyImageAndEmptyRecords) {
  std::string img = pstree_image(0);
  RecordReader r(make_blob(img), "pstree.img", Kind::Pstree);
  EXPECT_EQ(r.count(), 0u);
  PstreeEntry e;
  EXPECT_FALSE(r.next(e));

  // An all-default message serializes to zero bytes and must still count.
  MemSink sink;
  RecordWriter w("pstree.img", Kind::Pstree);
  w.add(PstreeEntry());
  w.add(PstreeEntry());
  w.save(sink);
  RecordReader r2(make_blob(sink.images["pstree.img"]), "pstree.img", Kind::Pstree);
  EXPECT_EQ(r2.count(), 2u);
  EXPECT_TRUE(r2.next(e));
  EXPECT_TRUE(r2.next(e));
  EXPECT_FALSE(r2.next(e));
}

TEST(RecordFile, SaveTwiceGivesTheSameImage) {
  MemSink a, b;
  RecordWriter w("pstree.img", Kind::Pstree);
  w.add(entry(1));
  w.save(a);
  w.save(b);
  EXPECT_EQ(a.images["pstree.img"], b.images["pstree.img"]);
}

TEST(RecordFile, SaveAndLoadMessage) {
  MemSink sink;
  MmCore mm;
  mm.set_pid(42);
  mm.set_exe_path("/bin/sleep");
  mm.add_vmas()->set_start(0x400000);
  save_message(sink, "mm-42.img", Kind::Mm, mm);
  MemSource src(sink.images);
  MmCore back;
  load_message(src, "mm-42.img", Kind::Mm, back);
  EXPECT_EQ(back.pid(), 42u);
  EXPECT_EQ(back.exe_path(), "/bin/sleep");
  EXPECT_EQ(back.vmas_size(), 1);
}

TEST(RecordFile, LoadMessageWantsExactlyOne) {
  MemSource src({{"pstree.img", pstree_image(2)}});
  PstreeEntry e;
  try {
    load_message(src, "pstree.img", Kind::Pstree, e);
    FAIL() << "no error";
  } catch (const ckpt::Error& err) {
    EXPECT_STREQ(err.what(), "image pstree.img: holds 2 records, expected 1");
  }
}

TEST(RecordFile, MissingImageFromSource) {
  MemSource src({});
  EXPECT_THROW(RecordReader(src, "core-1.img", Kind::Core), ckpt::Error);
}

TEST(RecordFile, BadMagic) {
  std::string img = frame(3, 1, 0, {}, 0);
  img.replace(0, 4, "ELF\x7f");
  EXPECT_EQ(error_of(img, Kind::Core),
            "image core-42.img: bad magic 0x7f464c45 (not a ckpt image)");
}

TEST(RecordFile, WrongKind) {
  EXPECT_EQ(error_of(pstree_image(1), Kind::Core),
            "image core-42.img: is a pstree image, expected core");
  EXPECT_EQ(error_of(frame(99, 1, 0, {}, 0), Kind::Core),
            "image core-42.img: has unknown kind 99, expected core");
}

TEST(RecordFile, NewerMajorVersion) {
  EXPECT_EQ(error_of(frame(3, 2, 0, {}, 0), Kind::Core),
            "image core-42.img: format version 2.0 is newer than this ckpt (1.x)");
  EXPECT_EQ(error_of(frame(3, 0, 9, {}, 0), Kind::Core),
            "image core-42.img: format version 0.9 is older than this ckpt supports (1.x)");
}

TEST(RecordFile, NewerMinorVersionIsRead) {
  std::string img = frame(2, 1, 7, {serialized(5)}, 1);
  RecordReader r(make_blob(img), "pstree.img", Kind::Pstree);
  EXPECT_EQ(r.minor(), 7);
  PstreeEntry e;
  ASSERT_TRUE(r.next(e));
  EXPECT_EQ(e.pid(), 5u);
}

TEST(RecordFile, TruncatedAtEveryLength) {
  std::string img = pstree_image(3);
  for (size_t len = 0; len < img.size(); len++) {
    std::string cut = img.substr(0, len);
    std::string err = error_of(cut, Kind::Pstree, "pstree.img");
    ASSERT_NE(err, "") << "length " << len;
    ASSERT_EQ(err.rfind("image pstree.img: ", 0), 0u) << err;
  }
  EXPECT_EQ(error_of(img.substr(0, 12), Kind::Core),
            "image core-42.img: truncated (12 bytes, header needs 16)");
  EXPECT_EQ(error_of(img.substr(0, 0), Kind::Core),
            "image core-42.img: truncated (0 bytes, header needs 16)");
}

TEST(RecordFile, FlippedByteAnywhereIsAnError) {
  std::string img = pstree_image(3);
  for (size_t i = 0; i < img.size(); i++) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      std::string bad = img;
      bad[i] = static_cast<char>(bad[i] ^ mask);
      ASSERT_NE(error_of(bad, Kind::Pstree, "pstree.img"), "")
          << "byte " << i << " mask " << int(mask);
    }
  }
}

TEST(RecordFile, ChecksumMismatch) {
  std::string img = pstree_image(2);
  img[20] ^= 0x10;  // inside the first record
  EXPECT_EQ(error_of(img, Kind::Pstree, "pstree.img"), "image pstree.img: checksum mismatch");
}

TEST(RecordFile, OversizeRecordLength) {
  std::string r = serialized(1);
  auto n = static_cast<uint32_t>(r.size());
  std::string img = frame(3, 1, 0, {r, r, r, ""}, 4, {n, n, n, 999999999});
  EXPECT_EQ(error_of(img, Kind::Core),
            "image core-42.img: record 3 length 999999999 exceeds limit");
}

TEST(RecordFile, RecordLengthPastTheEnd) {
  std::string r = serialized(1);
  std::string img = frame(3, 1, 0, {r}, 1, {uint32_t(r.size() + 1)});
  EXPECT_NE(error_of(img, Kind::Core).find("record 0 length"), std::string::npos);
  // A length whose 4 bytes themselves run into the trailer.
  std::string short_len = frame(3, 1, 0, {}, 1);
  short_len.insert(16, "\x01\x00", 2);
  // Re-checksum: rebuild the trailer over the new body.
  std::string body = short_len.substr(0, short_len.size() - 16);
  uint32_t crc = crc32c(body.data(), body.size());
  put32(body, 0xffffffff);
  put32(body, 1);
  put32(body, crc);
  put32(body, kTrailerMagic);
  EXPECT_EQ(error_of(body, Kind::Core),
            "image core-42.img: record 0: length cut off by the trailer");
}

TEST(RecordFile, CountMismatch) {
  std::string r = serialized(1);
  EXPECT_EQ(error_of(frame(3, 1, 0, {r, r}, 3), Kind::Core),
            "image core-42.img: trailer says 3 records, found 2");
}

TEST(RecordFile, RecordDoesNotParse) {
  std::string r = serialized(1);
  std::string garbage("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11);
  std::string img = frame(2, 1, 0, {r, r, r, garbage}, 4);
  RecordReader reader(make_blob(img), "core-42.img", Kind::Pstree);
  PstreeEntry e;
  for (int i = 0; i < 3; i++) ASSERT_TRUE(reader.next(e));
  try {
    reader.next(e);
    FAIL() << "no error";
  } catch (const ckpt::Error& err) {
    EXPECT_STREQ(err.what(), "image core-42.img: record 3 does not parse");
  }
}

TEST(RecordFile, MissingTrailer) {
  std::string img = frame(3, 1, 0, {}, 0);
  img.resize(img.size() - 1);
  img.push_back('X');
  EXPECT_NE(error_of(img, Kind::Core).find("no trailer"), std::string::npos);
}

}  // namespace
