// Incremental page images: runs in the parent, chains of parents, the
// writer's comparison with the parent, and chains that lack a page.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>

#include "image/page_store.h"
#include "image/record_file.h"
#include "sys/error.h"

namespace {

using namespace ckpt::image;

// One image directory in memory, with an optional parent.
class MemDir : public ImageSink, public ImageSource {
 public:
  class Stream : public StreamWriter {
   public:
    Stream(MemDir& d, std::string name) : d_(d), name_(std::move(name)) {}
    void write(const void* data, size_t len) override {
      buf_.append(static_cast<const char*>(data), len);
    }
    uint64_t offset() const override { return buf_.size(); }
    void commit() override { d_.images[name_] = buf_; }

   private:
    MemDir& d_;
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
    if (it == images.end()) throw ckpt::Error(name + ": no such image");
    return make_blob(it->second);
  }
  bool exists(const std::string& name) const override { return images.count(name) > 0; }
  std::string where() const override { return "memory " + label; }
  std::shared_ptr<const ImageSource> parent() const override { return parent_dir; }

  std::string label;
  std::map<std::string, std::string> images;
  std::shared_ptr<MemDir> parent_dir;
};

std::string page(uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(kPageSize, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

using Model = std::map<uint64_t, std::string>;  // page address -> bytes

Model read_all(const ImageSource& src) {
  PageReader r(src, "7");
  Model m;
  r.for_each([&](uint64_t vaddr, const uint8_t* data, size_t n) {
    for (size_t i = 0; i < n; i++)
      m[vaddr + i * kPageSize].assign(reinterpret_cast<const char*>(data) + i * kPageSize,
                                      kPageSize);
  });
  return m;
}

constexpr uint64_t kBase = 0x7f0000000000;

// A full image of n pages at kBase, page i = page(seed + i).
std::shared_ptr<MemDir> full(size_t n, uint32_t seed, Model* model, int zstd = 0) {
  auto d = std::make_shared<MemDir>();
  d->label = "full";
  PageWriter w(*d, "7", {zstd});
  for (size_t i = 0; i < n; i++) {
    std::string p = page(seed + static_cast<uint32_t>(i));
    w.add(kBase + i * kPageSize, p.data(), 1);
    (*model)[kBase + i * kPageSize] = p;
  }
  w.finish();
  return d;
}

TEST(PageChain, ThreeLevelsReadBackAsTheNewestState) {
  Model m;
  auto base = full(600, 1, &m, 3);  // several chunks, compressed
  // Level 1: pages 10-19 and 300 rewritten, page 599 gone, a new run far off.
  auto l1 = std::make_shared<MemDir>();
  l1->label = "l1";
  l1->parent_dir = base;
  {
    PageWriter w(*l1, "7");
    w.add_parent(kBase, 10);
    for (int i = 10; i < 20; i++) {
      std::string p = page(1000 + i);
      w.add(kBase + i * kPageSize, p.data(), 1);
      m[kBase + i * kPageSize] = p;
    }
    w.add_parent(kBase + 20 * kPageSize, 280);
    std::string p = page(5000);
    w.add(kBase + 300 * kPageSize, p.data(), 1);
    m[kBase + 300 * kPageSize] = p;
    w.add_parent(kBase + 301 * kPageSize, 298);
    m.erase(kBase + 599 * kPageSize);
    std::string q = page(6000);
    w.add(kBase + 0x100000000, q.data(), 1);
    m[kBase + 0x100000000] = q;
    w.finish();
    EXPECT_EQ(w.pages(), 12u);
    EXPECT_EQ(w.parent_pages(), 588u);
  }
  // Level 2: only page 15 rewritten again.
  auto l2 = std::make_shared<MemDir>();
  l2->label = "l2";
  l2->parent_dir = l1;
  {
    PageWriter w(*l2, "7");
    w.add_parent(kBase, 15);
    std::string p = page(7000);
    w.add(kBase + 15 * kPageSize, p.data(), 1);
    m[kBase + 15 * kPageSize] = p;
    w.add_parent(kBase + 16 * kPageSize, 583);
    w.add_parent(kBase + 0x100000000, 1);
    w.finish();
  }
  PageReader r(*l2, "7");
  EXPECT_EQ(r.pages(), m.size());
  EXPECT_EQ(read_all(*l2), m);
  EXPECT_TRUE(r.covers(kBase, 599));
  EXPECT_FALSE(r.covers(kBase, 600));
  EXPECT_FALSE(r.covers(kBase + 0x100000000 - kPageSize, 2));
}

TEST(PageChain, CursorReadsRangesInOrderAcrossLevels) {
  Model m;
  auto base = full(300, 3, &m);
  auto l1 = std::make_shared<MemDir>();
  l1->parent_dir = base;
  {
    PageWriter w(*l1, "7");
    w.add_parent(kBase, 100);
    std::string p = page(99);
    w.add(kBase + 100 * kPageSize, p.data(), 1);
    m[kBase + 100 * kPageSize] = p;
    w.add_parent(kBase + 101 * kPageSize, 199);
    w.finish();
  }
  PageReader r(*l1, "7");
  PageReader::Cursor c(r);
  for (uint64_t start : {0u, 50u, 99u, 250u}) {
    size_t got = 0;
    c.read(kBase + start * kPageSize, 7, [&](uint64_t vaddr, const uint8_t* data, size_t n) {
      for (size_t i = 0; i < n; i++) {
        EXPECT_EQ(std::string(reinterpret_cast<const char*>(data) + i * kPageSize, kPageSize),
                  m[vaddr + i * kPageSize]);
        got++;
      }
    });
    EXPECT_EQ(got, 7u) << start;
  }
  // A hole yields nothing.
  size_t got = 0;
  c.read(kBase + 400 * kPageSize, 10, [&](uint64_t, const uint8_t*, size_t n) { got += n; });
  EXPECT_EQ(got, 0u);
}

TEST(PageChain, WriterComparesWithTheParent) {
  Model m;
  auto base = full(520, 11, &m);
  PageReader parent(*base, "7");
  auto l1 = std::make_shared<MemDir>();
  l1->parent_dir = base;
  std::string all;
  for (int i = 0; i < 530; i++) {
    std::string p = (i == 3 || i == 400 || i >= 520) ? page(9000 + i) : m[kBase + i * kPageSize];
    m[kBase + i * kPageSize] = p;
    all += p;
  }
  {
    PageWriterOptions o;
    o.compare = &parent;
    PageWriter w(*l1, "7", o);
    w.add(kBase, all.data(), 530);
    w.finish();
    EXPECT_EQ(w.pages(), 12u);  // 3, 400 and the 10 the parent lacks
    EXPECT_EQ(w.parent_pages(), 518u);
  }
  EXPECT_EQ(read_all(*l1), m);
}

TEST(PageChain, MissingParentIsAnErrorNamingIt) {
  Model m;
  auto base = full(4, 1, &m);
  auto l1 = std::make_shared<MemDir>();
  l1->label = "child";
  {
    PageWriter w(*l1, "7");
    w.add_parent(kBase, 4);
    w.finish();
  }
  try {
    PageReader r(*l1, "7");
    FAIL() << "no error";
  } catch (const ckpt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("parent"), std::string::npos) << e.what();
  }
}

TEST(PageChain, ParentLackingAPageIsAnError) {
  Model m;
  auto base = full(4, 1, &m);
  auto l1 = std::make_shared<MemDir>();
  l1->parent_dir = base;
  {
    PageWriter w(*l1, "7");
    w.add_parent(kBase, 5);  // the parent has 4
    w.finish();
  }
  try {
    PageReader r(*l1, "7");
    FAIL() << "no error";
  } catch (const ckpt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("lacks"), std::string::npos) << e.what();
  }
}

TEST(PageChain, RunsOfBothKindsStayOrdered) {
  MemDir d;
  PageWriter w(d, "7");
  std::string p = page(1);
  w.add(kBase + kPageSize, p.data(), 1);
  EXPECT_THROW(w.add_parent(kBase, 1), ckpt::Error);
}

}  // namespace
