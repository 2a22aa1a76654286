#include "image/page_store.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "image/crc32c.h"
#include "image/record_file.h"
#include "sys/error.h"

namespace {

using namespace ckpt::image;
using ckpt::img::Pagemap;

// An image store in memory, so tests can cut and corrupt images freely.
class MemImages : public ImageSink, public ImageSource {
 public:
  class Stream : public StreamWriter {
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
  std::unique_ptr<StreamWriter> open_stream(const std::string& name) override {
    return std::make_unique<Stream>(*this, name);
  }
  void commit() override {}
  std::shared_ptr<const Blob> open(const std::string& name) const override {
    auto it = images.find(name);
    if (it == images.end()) throw ckpt::Error(name + ": no such image in memory");
    return make_blob(it->second);
  }
  bool exists(const std::string& name) const override { return images.count(name) > 0; }
  std::string where() const override { return "memory"; }

  std::map<std::string, std::string> images;
};

// Page contents by address, the model the store must reproduce.
using PageModel = std::map<uint64_t, std::string>;

std::string random_pages(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n * kPageSize, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Text-like data zstd shrinks well, different on every page.
std::string compressible_pages(size_t n, uint32_t seed) {
  std::string s;
  for (size_t p = 0; p < n; p++) {
    std::string page;
    while (page.size() < kPageSize) page += "page " + std::to_string(p + seed) + " of ckpt; ";
    page.resize(kPageSize);
    s += page;
  }
  return s;
}

void add(PageWriter& w, PageModel& model, uint64_t vaddr, const std::string& data) {
  size_t n = data.size() / kPageSize;
  w.add(vaddr, data.data(), n);
  for (size_t i = 0; i < n; i++)
    model[vaddr + i * kPageSize] = data.substr(i * kPageSize, kPageSize);
}

struct Piece {
  uint64_t vaddr;
  size_t npages;
};

// Reads everything back, checking pieces come in address order.
PageModel read_all(const PageReader& r, std::vector<Piece>* pieces = nullptr) {
  PageModel out;
  uint64_t last = 0;
  bool first = true;
  r.for_each([&](uint64_t vaddr, const uint8_t* data, size_t n) {
    EXPECT_GT(n, 0u);
    EXPECT_TRUE(first || vaddr >= last) << std::hex << vaddr;
    first = false;
    last = vaddr + n * kPageSize;
    if (pieces) pieces->push_back({vaddr, n});
    for (size_t i = 0; i < n; i++)
      out[vaddr + i * kPageSize] =
          std::string(reinterpret_cast<const char*>(data) + i * kPageSize, kPageSize);
  });
  return out;
}

void resave_pagemap(MemImages& m, const std::string& id, const Pagemap& map) {
  save_message(m, pagemap_name(id), Kind::Pagemap, map);
}

Pagemap load_pagemap(MemImages& m, const std::string& id) {
  Pagemap map;
  load_message(m, pagemap_name(id), Kind::Pagemap, map);
  return map;
}

std::string reader_error(const MemImages& m, const std::string& id) {
  try {
    PageReader r(m, id);
    read_all(r);
  } catch (const ckpt::Error& e) {
    return e.what();
  }
  return "";
}

// Three runs (one written in two contiguous add() calls), 300 + 17 + 1
// pages, so chunks cross runs and there is more than one chunk.
PageModel write_sample(MemImages& m, const std::string& id, int zstd_level, bool compressible) {
  auto gen = [&](size_t n, uint32_t seed) {
    return compressible ? compressible_pages(n, seed) : random_pages(n, seed);
  };
  PageModel model;
  PageWriter w(m, id, PageWriterOptions{zstd_level});
  add(w, model, 0x400000, gen(200, 1));
  add(w, model, 0x400000 + 200 * kPageSize, gen(100, 2));
  add(w, model, 0x7f0000000000, gen(17, 3));
  add(w, model, 0x7ffff0000000, gen(1, 4));
  EXPECT_EQ(w.pages(), 318u);
  w.finish();
  return model;
}

void check_raw_alignment(const Pagemap& map) {
  for (const auto& c : map.chunks()) {
    if (c.codec() == ckpt::img::CODEC_RAW) {
      EXPECT_EQ(c.offset() % kPageSize, 0u) << c.offset();
    }
  }
}

TEST(PageStore, RoundTripRaw) {
  MemImages m;
  PageModel model = write_sample(m, "7", 0, false);
  PageReader r(m, "7");
  EXPECT_EQ(r.pages(), 318u);
  const Pagemap& map = r.pagemap();
  EXPECT_EQ(map.page_size(), kPageSize);
  EXPECT_EQ(map.pages_file(), "pages-7.img");
  ASSERT_EQ(map.runs_size(), 3);  // the two contiguous adds merged
  EXPECT_EQ(map.runs(0).vaddr(), 0x400000u);
  EXPECT_EQ(map.runs(0).nr_pages(), 300u);
  EXPECT_EQ(map.runs(1).nr_pages(), 17u);
  EXPECT_EQ(map.runs(2).nr_pages(), 1u);
  ASSERT_EQ(map.chunks_size(), 2);
  EXPECT_EQ(map.chunks(0).nr_pages(), kChunkPages);
  EXPECT_EQ(map.chunks(1).nr_pages(), 318 - kChunkPages);
  EXPECT_EQ(map.chunks(0).offset(), kPageSize);  // right behind the header
  check_raw_alignment(map);

  std::vector<Piece> pieces;
  EXPECT_EQ(read_all(r, &pieces), model);
  // A piece never crosses a run or a chunk: 256 | 44 | 17 | 1.
  ASSERT_EQ(pieces.size(), 4u);
  EXPECT_EQ(pieces[0].npages, 256u);
  EXPECT_EQ(pieces[1].vaddr, 0x400000u + 256 * kPageSize);
  EXPECT_EQ(pieces[1].npages, 44u);
  EXPECT_EQ(pieces[2].npages, 17u);
  EXPECT_EQ(pieces[3].npages, 1u);
}

TEST(PageStore, PagesFileHeader) {
  MemImages m;
  write_sample(m, "7", 0, false);
  const std::string& f = m.images.at("pages-7.img");
  ASSERT_GE(f.size(), kPageSize);
  EXPECT_EQ(f.substr(0, 4), "CKPT");
  uint32_t kind;
  memcpy(&kind, f.data() + 4, 4);
  EXPECT_EQ(kind, static_cast<uint32_t>(Kind::Pages));
  EXPECT_EQ(f.substr(16, kPageSize - 16), std::string(kPageSize - 16, '\0'));
  EXPECT_EQ(f.size(), kPageSize + 318 * kPageSize);
}

TEST(PageStore, RoundTripZstdCompressible) {
  MemImages m;
  PageModel model = write_sample(m, "1", 3, true);
  PageReader r(m, "1");
  for (const auto& c : r.pagemap().chunks()) EXPECT_EQ(c.codec(), ckpt::img::CODEC_ZSTD);
  EXPECT_EQ(read_all(r), model);
}

TEST(PageStore, StoredBytesReflectsCompression) {
  MemImages m;
  PageWriter w(m, "1", PageWriterOptions{3});
  std::string data = compressible_pages(300, 0);
  w.add(0, data.data(), 300);
  w.finish();
  EXPECT_LT(w.stored_bytes(), data.size() / 8);
}

TEST(PageStore, ZstdOnRandomDataStoresRaw) {
  MemImages m;
  PageModel model = write_sample(m, "1", 3, false);
  PageReader r(m, "1");
  for (const auto& c : r.pagemap().chunks()) EXPECT_EQ(c.codec(), ckpt::img::CODEC_RAW);
  check_raw_alignment(r.pagemap());
  EXPECT_EQ(read_all(r), model);
}

// Compressed and raw chunks interleaved: raw ones after a zstd chunk need
// padding to stay page-aligned.
TEST(PageStore, MixedChunksStayAligned) {
  MemImages m;
  PageModel model;
  {
    PageWriter w(m, "9", PageWriterOptions{1});
    uint64_t va = 0x10000000;
    for (int i = 0; i < 4; i++) {
      std::string d = i % 2 ? random_pages(kChunkPages, i) : compressible_pages(kChunkPages, i);
      add(w, model, va, d);
      va += d.size() + (i == 1 ? kPageSize : 0);  // one hole: two runs
    }
    add(w, model, va + kPageSize * 10, random_pages(3, 99));
    w.finish();
  }
  PageReader r(m, "9");
  const Pagemap& map = r.pagemap();
  ASSERT_EQ(map.chunks_size(), 5);
  EXPECT_EQ(map.chunks(0).codec(), ckpt::img::CODEC_ZSTD);
  EXPECT_EQ(map.chunks(1).codec(), ckpt::img::CODEC_RAW);
  EXPECT_EQ(map.chunks(2).codec(), ckpt::img::CODEC_ZSTD);
  EXPECT_EQ(map.chunks(3).codec(), ckpt::img::CODEC_RAW);
  check_raw_alignment(map);
  EXPECT_EQ(map.runs_size(), 3);
  EXPECT_EQ(read_all(r), model);
}

TEST(PageStore, ManySmallNonContiguousAdds) {
  MemImages m;
  PageModel model;
  {
    PageWriter w(m, "s", PageWriterOptions{0});
    for (int i = 0; i < 600; i++)
      add(w, model, 0x1000000 + uint64_t(i) * 2 * kPageSize, random_pages(1, i));
    w.finish();
  }
  PageReader r(m, "s");
  EXPECT_EQ(r.pagemap().runs_size(), 600);
  EXPECT_EQ(r.pagemap().chunks_size(), 3);
  EXPECT_EQ(read_all(r), model);
}

TEST(PageStore, NoPages) {
  MemImages m;
  {
    PageWriter w(m, "0");
    w.finish();
    EXPECT_EQ(w.stored_bytes(), 0u);
  }
  PageReader r(m, "0");
  EXPECT_EQ(r.pages(), 0u);
  int calls = 0;
  r.for_each([&](uint64_t, const uint8_t*, size_t) { calls++; });
  EXPECT_EQ(calls, 0);
}

TEST(PageStore, WriterMisuse) {
  MemImages m;
  PageWriter w(m, "1");
  std::string page(kPageSize, 'a');
  EXPECT_THROW(w.add(0x1001, page.data(), 1), ckpt::Error);
  w.add(0x5000, page.data(), 1);
  EXPECT_THROW(w.add(0x4000, page.data(), 1), ckpt::Error);  // out of order
  EXPECT_THROW(w.add(0x5000, page.data(), 1), ckpt::Error);  // overlap
  EXPECT_THROW(w.add(~uint64_t(0) & ~uint64_t(kPageSize - 1), page.data(), 2), ckpt::Error);
  w.finish();
  EXPECT_THROW(w.add(0x9000, page.data(), 1), ckpt::Error);
  EXPECT_THROW(w.finish(), ckpt::Error);
}

TEST(PageStore, UnfinishedWriterLeavesNoImage) {
  namespace fs = std::filesystem;
  std::string dir = (fs::temp_directory_path() / "ckpt-page-test-XXXXXX").string();
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  {
    DirSink sink(dir);
    PageWriter w(sink, "3");
    std::string page(kPageSize, 'a');
    w.add(0, page.data(), 1);
    EXPECT_FALSE(fs::exists(dir + "/pages-3.img"));
  }
  EXPECT_TRUE(fs::is_empty(dir));
  {
    DirSink sink(dir);
    PageWriter w(sink, "3", PageWriterOptions{1});
    std::string pages = compressible_pages(300, 0) + random_pages(10, 1);
    w.add(0x1000, pages.data(), 310);
    w.finish();
    sink.commit();
  }
  DirSource src(dir);
  PageReader r(src, "3");
  EXPECT_EQ(r.pages(), 310u);
  EXPECT_EQ(read_all(r).size(), 310u);
  fs::remove_all(dir);
}

TEST(PageStore, TruncatedPagesFileDetectedAtConstruction) {
  MemImages m;
  write_sample(m, "7", 0, false);
  const std::string full = m.images["pages-7.img"];
  // Every length: any cut loses part of the last chunk or the header.
  for (size_t len = 0; len < full.size(); len += (len < 2 * kPageSize ? 1 : 4093)) {
    m.images["pages-7.img"] = full.substr(0, len);
    try {
      PageReader r(m, "7");
      FAIL() << "no error at length " << len;
    } catch (const ckpt::Error& e) {
      ASSERT_EQ(std::string(e.what()).rfind("image pages-7.img: truncated", 0), 0u)
          << len << ": " << e.what();
    }
  }
  m.images["pages-7.img"] = full.substr(0, full.size() - 1);
  EXPECT_THROW(PageReader(m, "7"), ckpt::Error);
}

TEST(PageStore, TruncatedZstdPagesFile) {
  MemImages m;
  write_sample(m, "z", 3, true);
  std::string& f = m.images["pages-z.img"];
  f.resize(f.size() - 3);
  EXPECT_NE(reader_error(m, "z").find("truncated"), std::string::npos);
}

TEST(PageStore, CorruptRawChunkDetectedInForEach) {
  MemImages m;
  write_sample(m, "7", 0, false);
  Pagemap map = load_pagemap(m, "7");
  m.images["pages-7.img"][map.chunks(1).offset() + 5000] ^= 1;
  PageReader r(m, "7");  // the crc is a for_each matter: construction stays cheap
  std::vector<uint64_t> seen;
  try {
    r.for_each([&](uint64_t vaddr, const uint8_t*, size_t) { seen.push_back(vaddr); });
    FAIL() << "no error";
  } catch (const ckpt::Error& e) {
    EXPECT_STREQ(e.what(), "image pages-7.img: chunk 1: checksum mismatch");
  }
  // Chunk 0 was handed out; nothing of chunk 1.
  EXPECT_EQ(seen, std::vector<uint64_t>{0x400000});
}

TEST(PageStore, CorruptZstdChunkDetectedInForEach) {
  MemImages m;
  write_sample(m, "z", 3, true);
  Pagemap map = load_pagemap(m, "z");
  const auto& c = map.chunks(0);
  m.images["pages-z.img"][c.offset() + c.stored_len() / 2] ^= 0x40;
  PageReader r(m, "z");
  EXPECT_EQ(reader_error(m, "z"), "image pages-z.img: chunk 0: checksum mismatch");
}

// A frame that passes the crc (the crc is recomputed) but is not what the
// map claims must still be refused.
TEST(PageStore, ZstdFrameOfTheWrongSize) {
  MemImages m;
  write_sample(m, "z", 3, true);
  Pagemap map = load_pagemap(m, "z");
  map.mutable_chunks(1)->set_nr_pages(map.chunks(1).nr_pages() - 1);
  map.set_total_pages(map.total_pages() - 1);
  map.mutable_runs()->RemoveLast();  // the 1-page run, so the counts still agree
  resave_pagemap(m, "z", map);
  EXPECT_NE(reader_error(m, "z").find("is not a zstd frame of"), std::string::npos);
}

TEST(PageStore, ZstdFrameWithGarbageAfterIt) {
  MemImages m;
  write_sample(m, "z", 3, true);
  Pagemap map = load_pagemap(m, "z");
  // The last chunk sits at the end of the file: extend it by a few bytes.
  auto* c = map.mutable_chunks(map.chunks_size() - 1);
  std::string& f = m.images["pages-z.img"];
  f += "junk";
  c->set_stored_len(c->stored_len() + 4);
  c->set_crc(crc32c(f.data() + c->offset(), c->stored_len()));
  resave_pagemap(m, "z", map);
  EXPECT_NE(reader_error(m, "z").find("does not decompress"), std::string::npos);
}

TEST(PageStore, BadPagemaps) {
  MemImages m;
  write_sample(m, "7", 0, false);
  const Pagemap good = load_pagemap(m, "7");
  auto expect_bad = [&](const char* what, auto mutate, const std::string& fragment) {
    Pagemap map = good;
    mutate(map);
    resave_pagemap(m, "7", map);
    std::string err = reader_error(m, "7");
    EXPECT_NE(err.find(fragment), std::string::npos) << what << ": '" << err << "'";
    EXPECT_EQ(err.rfind("image pag", 0), 0u) << what << ": " << err;
  };
  expect_bad(
      "page size", [](Pagemap& p) { p.set_page_size(65536); }, "page size 65536");
  expect_bad(
      "pages file", [](Pagemap& p) { p.set_pages_file("../../etc/shadow"); }, "names pages file");
  expect_bad(
      "codec", [](Pagemap& p) { p.mutable_chunks(0)->set_codec(ckpt::img::Codec(7)); },
      "unknown codec 7");
  expect_bad(
      "total", [](Pagemap& p) { p.set_total_pages(p.total_pages() + 1); }, "page counts disagree");
  expect_bad(
      "run pages", [](Pagemap& p) { p.mutable_runs(1)->set_nr_pages(18); }, "page counts disagree");
  expect_bad(
      "empty run", [](Pagemap& p) { p.mutable_runs(1)->set_nr_pages(0); }, "run 1 is empty");
  expect_bad(
      "unaligned run", [](Pagemap& p) { p.mutable_runs(1)->set_vaddr(0x7f0000000010); },
      "not page-aligned");
  expect_bad(
      "overlapping runs", [](Pagemap& p) { p.mutable_runs(1)->set_vaddr(0x401000); }, "overlaps");
  expect_bad(
      "wrapping run",
      [](Pagemap& p) {
        p.mutable_runs(2)->set_vaddr(~uint64_t(0) & ~uint64_t(kPageSize - 1));
        p.mutable_runs(2)->set_nr_pages(1);
      },
      "past the end of the address space");
  expect_bad(
      "huge chunk", [](Pagemap& p) { p.mutable_chunks(1)->set_nr_pages(1ull << 40); },
      "chunk 1 holds");
  expect_bad(
      "offset past end", [](Pagemap& p) { p.mutable_chunks(1)->set_offset(1ull << 40); },
      "truncated");
  expect_bad(
      "offset overflow",
      [](Pagemap& p) { p.mutable_chunks(1)->set_offset(~uint64_t(0) & ~uint64_t(4095)); },
      "truncated");
  expect_bad(
      "raw length", [](Pagemap& p) { p.mutable_chunks(1)->set_stored_len(100); },
      "stores 100 bytes");
  expect_bad(
      "raw unaligned", [](Pagemap& p) { p.mutable_chunks(1)->set_offset(kPageSize * 300 + 8); },
      "not page-aligned");
  expect_bad(
      "overlapping chunks", [](Pagemap& p) { p.mutable_chunks(1)->set_offset(kPageSize); },
      "overlaps");
  expect_bad(
      "chunk in header", [](Pagemap& p) { p.mutable_chunks(0)->set_offset(0); }, "overlaps");
  expect_bad(
      "zstd claims raw data",
      [](Pagemap& p) { p.mutable_chunks(0)->set_codec(ckpt::img::CODEC_ZSTD); },
      "not a zstd frame");

  // And the unmodified map still reads.
  resave_pagemap(m, "7", good);
  EXPECT_EQ(reader_error(m, "7"), "");
}

TEST(PageStore, BadPagesHeader) {
  MemImages m;
  write_sample(m, "7", 0, false);
  std::string full = m.images["pages-7.img"];
  m.images["pages-7.img"][0] = 'X';
  EXPECT_NE(reader_error(m, "7").find("bad magic"), std::string::npos);
  m.images["pages-7.img"] = full;
  m.images["pages-7.img"][4] = 3;
  EXPECT_EQ(reader_error(m, "7"), "image pages-7.img: is a core image, expected pages");
  m.images["pages-7.img"] = full;
  m.images["pages-7.img"][8] = 2;
  EXPECT_EQ(reader_error(m, "7"),
            "image pages-7.img: format version 2.0 is newer than this ckpt (1.x)");
}

TEST(PageStore, MissingImages) {
  MemImages m;
  EXPECT_NE(reader_error(m, "7").find("pagemap-7.img"), std::string::npos);
  write_sample(m, "7", 0, false);
  m.images.erase("pages-7.img");
  EXPECT_NE(reader_error(m, "7").find("pages-7.img"), std::string::npos);
}

}  // namespace
