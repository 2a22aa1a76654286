// The job's checkpoint directory: publishing, latest, what is restorable,
// pruning that keeps parents, leftovers, the lock.
#include "job/checkpoint_dir.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "image/image_io.h"
#include "image/record_file.h"
#include "inventory.pb.h"
#include "objects/pstree.h"
#include "sys/error.h"

namespace {

namespace fs = std::filesystem;
using ckpt::job::CheckpointDir;

class JobDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/job-unit-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir = tmpl;
  }
  void TearDown() override { fs::remove_all(dir); }

  // Writes a checkpoint the way a dump would (inventory last), published.
  std::string make(CheckpointDir& cd, const std::string& parent, uint64_t id) {
    auto p = cd.begin();
    ckpt::image::DirSink sink(cd.path(p.partial));
    ckpt::img::Inventory inv;
    inv.set_checkpoint_id(id);
    if (!parent.empty()) {
      inv.set_parent("../" + parent);
      inv.set_parent_id(ids[parent]);
      sink.put_symlink("parent", "../" + parent);
    }
    ckpt::image::save_message(sink, ckpt::kInventoryImage, ckpt::image::Kind::Inventory, inv);
    sink.commit();
    cd.publish(p);
    ids[p.name] = id;
    return p.name;
  }

  std::string dir;
  std::map<std::string, uint64_t> ids;
};

TEST_F(JobDir, PublishesInOrderAndLinksLatest) {
  CheckpointDir cd(dir, true);
  EXPECT_TRUE(cd.restorable().empty());
  std::string a = make(cd, "", 1);
  std::string b = make(cd, a, 2);
  EXPECT_EQ(a, "ckpt-000001");
  EXPECT_EQ(b, "ckpt-000002");
  EXPECT_EQ(cd.latest(), b);
  EXPECT_EQ(cd.restorable(), (std::vector<std::string>{b, a}));
  EXPECT_EQ(cd.depth(b), 1);
  EXPECT_EQ(cd.depth(a), 0);
  auto all = cd.list();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].parent, a);
  EXPECT_TRUE(all[1].complete);
}

TEST_F(JobDir, PartialAndIncompleteAreNeverRestorable) {
  CheckpointDir cd(dir, true);
  std::string a = make(cd, "", 1);
  // Being written (even with an inventory already), and named but empty.
  fs::copy(dir + "/" + a, dir + "/.partial-ckpt-000007");
  fs::create_directory(dir + "/ckpt-000009");
  EXPECT_EQ(cd.restorable(), std::vector<std::string>{a});
  EXPECT_EQ(cd.leftovers(), std::vector<std::string>{".partial-ckpt-000007"});
  // A new checkpoint is numbered after everything seen.
  auto p = cd.begin();
  EXPECT_EQ(p.name, "ckpt-000010");
  cd.abandon(p);
  cd.remove_leftovers();
  EXPECT_TRUE(cd.leftovers().empty());
  EXPECT_FALSE(fs::exists(dir + "/.partial-ckpt-000007"));
}

TEST_F(JobDir, BrokenChainIsNotRestorable) {
  CheckpointDir cd(dir, true);
  std::string a = make(cd, "", 1);
  std::string b = make(cd, a, 2);
  std::string c = make(cd, b, 3);
  // b replaced by another checkpoint: c's recorded parent id no longer fits.
  fs::remove_all(dir + "/" + b);
  {
    ckpt::image::DirSink sink(dir + "/" + b);
    ckpt::img::Inventory inv;
    inv.set_checkpoint_id(99);
    ckpt::image::save_message(sink, ckpt::kInventoryImage, ckpt::image::Kind::Inventory, inv);
    sink.commit();
  }
  EXPECT_EQ(cd.restorable(), (std::vector<std::string>{b, a}));
  fs::remove_all(dir + "/" + a);
  fs::remove_all(dir + "/" + b);
  EXPECT_TRUE(cd.restorable().empty());
}

TEST_F(JobDir, PruneKeepsTheNewestAndEveryParentTheyNeed) {
  CheckpointDir cd(dir, true);
  std::string f1 = make(cd, "", 1);
  std::string i1 = make(cd, f1, 2);
  std::string i2 = make(cd, i1, 3);
  std::string f2 = make(cd, "", 4);
  std::string i3 = make(cd, f2, 5);
  // keep 1: i3 and its parent f2; the first chain goes.
  auto removed = cd.prune(1);
  EXPECT_EQ(removed, (std::vector<std::string>{f1, i1, i2}));  // removed i2 first
  EXPECT_EQ(cd.restorable(), (std::vector<std::string>{i3, f2}));
  std::string i4 = make(cd, i3, 6);
  EXPECT_TRUE(cd.prune(2).empty());  // i4, i3 and f2 are one chain
  EXPECT_EQ(cd.restorable(), (std::vector<std::string>{i4, i3, f2}));
  cd.remove_all();
  EXPECT_TRUE(cd.list().empty());
  EXPECT_EQ(cd.latest(), "");
}

TEST_F(JobDir, OneSupervisorPerDirectory) {
  CheckpointDir cd(dir, true);
  EXPECT_THROW(CheckpointDir(dir, true), ckpt::Error);
  EXPECT_NO_THROW(CheckpointDir(dir, false));  // ckpt job status does not lock
}

}  // namespace
