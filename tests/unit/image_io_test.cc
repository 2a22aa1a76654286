#include "image/image_io.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "sys/error.h"
#include "sys/fd.h"

namespace {

namespace fs = std::filesystem;
using namespace ckpt::image;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "ckpt-image-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::set<std::string> listing(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

std::string slurp(const std::string& path) {
  return ckpt::read_file(path);
}

TEST(DirSink, CreatesMissingDirectory) {
  TempDir t;
  std::string dir = t.sub("images");
  DirSink sink(dir);
  EXPECT_TRUE(fs::is_directory(dir));
  EXPECT_EQ(sink.dir(), dir);
}

TEST(DirSink, UsesAnExistingDirectory) {
  TempDir t;
  DirSink sink(t.path());
  sink.put("a.img", "x", 1);
  sink.commit();
  EXPECT_EQ(slurp(t.sub("a.img")), "x");
}

TEST(DirSink, NotADirectory) {
  TempDir t;
  std::ofstream(t.sub("file")) << "x";
  EXPECT_THROW(DirSink(t.sub("file")), ckpt::Error);
}

TEST(DirSink, PutWritesUnderTheFinalNameOnly) {
  TempDir t;
  DirSink sink(t.path());
  sink.put("core-1.img", "hello", 5);
  EXPECT_EQ(listing(t.path()), std::set<std::string>{"core-1.img"});
  EXPECT_EQ(slurp(t.sub("core-1.img")), "hello");
  struct stat st;
  ASSERT_EQ(stat(t.sub("core-1.img").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);  // images hold process memory
  sink.commit();
}

TEST(DirSink, PutReplaces) {
  TempDir t;
  DirSink sink(t.path());
  sink.put("a.img", "first", 5);
  sink.put("a.img", "2nd", 3);
  sink.commit();
  EXPECT_EQ(slurp(t.sub("a.img")), "2nd");
}

TEST(DirSink, StreamInvisibleUntilCommit) {
  TempDir t;
  DirSink sink(t.path());
  auto w = sink.open_stream("pages-1.img");
  w->write("abc", 3);
  w->write("defg", 4);
  EXPECT_EQ(w->offset(), 7u);
  EXPECT_FALSE(fs::exists(t.sub("pages-1.img")));
  EXPECT_EQ(listing(t.path()), std::set<std::string>{".pages-1.img.tmp"});
  w->commit();
  EXPECT_EQ(listing(t.path()), std::set<std::string>{"pages-1.img"});
  EXPECT_EQ(slurp(t.sub("pages-1.img")), "abcdefg");
  sink.commit();
}

TEST(DirSink, UncommittedStreamIsDiscarded) {
  TempDir t;
  DirSink sink(t.path());
  {
    auto w = sink.open_stream("pages-1.img");
    w->write("abc", 3);
  }
  EXPECT_TRUE(listing(t.path()).empty());
  sink.commit();
  EXPECT_TRUE(listing(t.path()).empty());
}

TEST(DirSink, DestroyedBeforeCommitRemovesEverything) {
  TempDir t;
  std::string dir = t.sub("d");
  std::unique_ptr<StreamWriter> open_stream;
  {
    DirSink sink(dir);
    sink.put("inventory.img", "i", 1);
    sink.put("core-1.img", "c", 1);
    auto w = sink.open_stream("pages-1.img");
    w->write("p", 1);
    w->commit();
    auto w2 = sink.open_stream("pages-2.img");
    w2->write("q", 1);
    EXPECT_EQ(listing(dir).size(), 4u);
    // w2 still open: its tmp file must go too, whichever is destroyed first.
    open_stream = std::move(w2);
    open_stream.reset();
  }
  EXPECT_TRUE(listing(dir).empty());
}

TEST(DirSink, DestroyedBeforeCommitWithStreamOpen) {
  TempDir t;
  {
    DirSink sink(t.path());
    auto w = sink.open_stream("pages-1.img");
    w->write("p", 1);
    w.reset();
    sink.put("a.img", "a", 1);
  }
  EXPECT_TRUE(listing(t.path()).empty());
}

TEST(DirSink, CommittedFilesSurvive) {
  TempDir t;
  {
    DirSink sink(t.path());
    sink.put("a.img", "a", 1);
    auto w = sink.open_stream("b.img");
    w->write("b", 1);
    w->commit();
    sink.commit();
  }
  EXPECT_EQ(listing(t.path()), (std::set<std::string>{"a.img", "b.img"}));
}

TEST(DirSink, LeavesOtherFilesAlone) {
  TempDir t;
  std::ofstream(t.sub("mine.txt")) << "keep";
  {
    DirSink sink(t.path());
    sink.put("a.img", "a", 1);
  }
  EXPECT_EQ(listing(t.path()), std::set<std::string>{"mine.txt"});
}

TEST(DirSink, RejectsNamesOutsideTheDirectory) {
  TempDir t;
  DirSink sink(t.sub("d"));
  EXPECT_THROW(sink.put("../escape.img", "x", 1), ckpt::Error);
  EXPECT_THROW(sink.put("", "x", 1), ckpt::Error);
  EXPECT_THROW(sink.open_stream(".."), ckpt::Error);
  EXPECT_FALSE(fs::exists(t.sub("escape.img")));
}

TEST(DirSink, NoPutAfterCommit) {
  TempDir t;
  DirSink sink(t.path());
  sink.commit();
  EXPECT_THROW(sink.put("a.img", "a", 1), ckpt::Error);
  EXPECT_THROW(sink.open_stream("b.img"), ckpt::Error);
}

TEST(DirSource, OpensWhatTheSinkWrote) {
  TempDir t;
  {
    DirSink sink(t.path());
    std::string big(100000, 'z');
    sink.put("big.img", big.data(), big.size());
    sink.put("empty.img", "", 0);
    sink.commit();
  }
  DirSource src(t.path());
  EXPECT_EQ(src.where(), "image directory " + t.path());
  EXPECT_TRUE(src.exists("big.img"));
  EXPECT_FALSE(src.exists("nope.img"));
  EXPECT_FALSE(src.exists("../" + fs::path(t.path()).filename().string()));
  auto blob = src.open("big.img");
  ASSERT_EQ(blob->size(), 100000u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(blob->data()), blob->size()),
            std::string(100000, 'z'));
  auto empty = src.open("empty.img");
  EXPECT_EQ(empty->size(), 0u);
}

TEST(DirSource, BlobOutlivesSourceAndFile) {
  TempDir t;
  std::shared_ptr<const Blob> blob;
  {
    DirSink sink(t.path());
    sink.put("a.img", "mapped", 6);
    sink.commit();
    DirSource src(t.path());
    blob = src.open("a.img");
  }
  fs::remove(t.sub("a.img"));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(blob->data()), blob->size()), "mapped");
}

TEST(DirSource, MissingImage) {
  TempDir t;
  DirSource src(t.path());
  try {
    src.open("core-42.img");
    FAIL() << "no error";
  } catch (const ckpt::Error& e) {
    EXPECT_EQ(std::string(e.what()), "core-42.img: no such image in " + t.path());
  }
}

TEST(DirSource, MissingDirectory) {
  TempDir t;
  EXPECT_THROW(DirSource(t.sub("nope")), ckpt::Error);
}

TEST(DirSource, RefusesDirectoriesAndEscapes) {
  TempDir t;
  fs::create_directory(t.sub("sub"));
  DirSource src(t.path());
  EXPECT_THROW(src.open("sub"), ckpt::Error);
  EXPECT_THROW(src.open("../x"), ckpt::Error);
}

}  // namespace
