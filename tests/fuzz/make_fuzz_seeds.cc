// Writes a seed corpus of valid images for the fuzz targets:
//   make_fuzz_seeds DIR  ->  DIR/record/*, DIR/page/*, DIR/migrate/*
// Valid inputs let the fuzzers start deep in the readers instead of at the
// magic number check.
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "core.pb.h"
#include "files.pb.h"
#include "fuzz_common.h"
#include "image/page_store.h"
#include "inventory.pb.h"
#include "migrate/transport.h"
#include "mm.pb.h"
#include "pagemap.pb.h"
#include "pstree.pb.h"

namespace {

using namespace ckpt;
using image::Kind;

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string record_image(Kind kind, const std::vector<const google::protobuf::MessageLite*>& msgs) {
  fuzz::MemImages m;
  image::RecordWriter w("seed.img", kind);
  for (const auto* msg : msgs) w.add(*msg);
  w.save(m);
  return m.images["seed.img"];
}

void record_seeds(const std::string& dir) {
  img::Inventory inv;
  inv.set_format_major(1);
  inv.set_ckpt_version("0.1.0");
  inv.set_arch("x86_64");
  inv.set_root_pid(42);
  inv.set_page_size(4096);
  inv.set_compression("zstd");
  inv.mutable_stats()->set_tasks(2);

  img::PstreeEntry p1, p2;
  p1.set_pid(42);
  p1.add_threads(42);
  p1.add_threads(43);
  p2.set_pid(44);
  p2.set_ppid(42);

  img::TaskCore core;
  core.set_pid(42);
  core.set_comm("sleep");
  core.add_rlimits()->set_cur(~0ull);
  auto* t = core.add_threads();
  t->set_tid(42);
  t->mutable_regs()->set_rip(0x401000);
  t->set_xstate(std::string(64, '\x5a'));
  t->mutable_creds()->add_uids(1000);

  img::MmCore mm;
  mm.set_pid(42);
  auto* v = mm.add_vmas();
  v->set_start(0x400000);
  v->set_end(0x401000);
  v->set_kind(img::VMA_FILE_PRIVATE);
  v->set_path("/bin/sleep");
  mm.add_auxv(6);

  img::Pagemap pm;
  pm.set_page_size(4096);
  auto* r = pm.add_runs();
  r->set_vaddr(0x400000);
  r->set_nr_pages(1);

  img::FileDesc f1, f2;
  f1.set_id(1);
  f1.mutable_reg()->set_path("/tmp/x");
  f2.set_id(2);
  f2.mutable_pipe()->set_pipe_id(77);

  img::FdTable fdt;
  fdt.set_pid(42);
  auto* e = fdt.add_fds();
  e->set_fd(3);
  e->set_desc_id(1);

  img::PipeData pd;
  pd.set_pipe_id(77);
  pd.set_data("buffered");

  const std::pair<const char*, std::string> seeds[] = {
      {"inventory", record_image(Kind::Inventory, {&inv})},
      {"pstree", record_image(Kind::Pstree, {&p1, &p2})},
      {"core", record_image(Kind::Core, {&core})},
      {"mm", record_image(Kind::Mm, {&mm})},
      {"pagemap", record_image(Kind::Pagemap, {&pm})},
      {"files", record_image(Kind::Files, {&f1, &f2})},
      {"fdtable", record_image(Kind::FdTable, {&fdt})},
      {"pipe-data", record_image(Kind::PipeData, {&pd})},
      {"empty", record_image(Kind::Pstree, {})},
  };
  for (const auto& [name, bytes] : seeds) {
    write_file(dir + "/" + name, std::string(1, '\0') + bytes);
    write_file(dir + "/" + name + "-fixcrc", std::string(1, fuzz::kFixCrc) + bytes);
  }
}

// The pages part and the bare Pagemap message of one small address space.
void page_seed(const std::string& dir, const std::string& name, int level, const std::string& data,
               uint64_t hole_after_pages) {
  fuzz::MemImages m;
  image::PageWriter w(m, "1", image::PageWriterOptions{level});
  size_t n = data.size() / image::kPageSize;
  size_t first = std::min<size_t>(n, hole_after_pages);
  w.add(0x10000, data.data(), first);
  if (n > first)
    w.add(0x10000 + (first + 3) * image::kPageSize, data.data() + first * image::kPageSize,
          n - first);
  w.finish();
  const std::string& pages = m.images[image::pages_name("1")];
  const std::string& map_img = m.images[image::pagemap_name("1")];
  img::Pagemap map;
  image::load_message(m, image::pagemap_name("1"), Kind::Pagemap, map);
  std::string bare = map.SerializeAsString();
  write_file(dir + "/" + name + "-image", fuzz::page_input(0, map_img, pages));
  write_file(
      dir + "/" + name + "-framed",
      fuzz::page_input(fuzz::kFrameMap | fuzz::kFixChunkCrc | fuzz::kFixPagesHeader, bare, pages));
}

void page_seeds(const std::string& dir) {
  std::string text;
  while (text.size() < 6 * image::kPageSize)
    text += "ckpt page seed " + std::to_string(text.size());
  text.resize(6 * image::kPageSize);
  std::string noise(2 * image::kPageSize, '\0');
  uint32_t x = 1;
  for (auto& c : noise) c = static_cast<char>((x = x * 1103515245 + 12345) >> 16);
  page_seed(dir, "raw", 0, noise, 1);
  page_seed(dir, "zstd", 3, text, 2);
  page_seed(dir, "empty", 0, "", 0);
  // Generator inputs (kStructured): any bytes are valid, a few start it off.
  for (int i = 0; i < 4; i++) {
    std::string knobs(64, static_cast<char>(i * 0x41));
    write_file(dir + "/structured-" + std::to_string(i),
               std::string(1, static_cast<char>(fuzz::kStructured)) + knobs);
  }
}

// Migration streams: two sets (the second with the first as parent), with a
// record image, a streamed image, an aborted one and a control message.
void migrate_seeds(const std::string& dir) {
  auto frame = [](auto fill, const std::string& body = "") {
    mig::Envelope e;
    fill(e);
    return migrate::encode_frame(e, body.data(), body.size());
  };
  std::string content = "record image bytes", pages(5000, 'p');
  std::string s;
  s += frame([](mig::Envelope& e) { e.mutable_hello()->set_role("source"); });
  s += frame([&](mig::Envelope& e) {
    auto* b = e.mutable_image_begin();
    b->set_set(1);
    b->set_name("core-1.img");
    b->set_size(content.size());
    b->set_image(1);
  });
  auto data1 = [](mig::Envelope& e) {
    e.mutable_image_data()->set_set(1);
    e.mutable_image_data()->set_image(1);
  };
  s += frame(data1, content);
  s += frame(data1, "");  // an empty body is valid
  s += frame([&](mig::Envelope& e) {
    auto* x = e.mutable_image_end();
    x->set_set(1);
    x->set_name("core-1.img");
    x->set_size(content.size());
    x->set_crc32c(image::crc32c(content.data(), content.size()));
    x->set_image(1);
  });
  s += frame([](mig::Envelope& e) { e.mutable_set_commit()->set_set(1); });
  write_file(dir + "/one-set", s);
  s += frame([&](mig::Envelope& e) {
    auto* b = e.mutable_image_begin();
    b->set_set(2);
    b->set_name("pages-1.img");
    b->set_image(1);
  });
  s += frame(
      [](mig::Envelope& e) {
        e.mutable_image_data()->set_set(2);
        e.mutable_image_data()->set_image(1);
      },
      pages);
  s += frame([&](mig::Envelope& e) {
    auto* x = e.mutable_image_end();
    x->set_set(2);
    x->set_name("pages-1.img");
    x->set_size(pages.size());
    x->set_crc32c(image::crc32c(pages.data(), pages.size()));
    x->set_image(1);
  });
  s += frame([](mig::Envelope& e) {
    e.mutable_image_abort()->set_set(2);
    e.mutable_image_abort()->set_image(7);
  });
  s += frame([](mig::Envelope& e) { e.mutable_control()->set_what("round-done"); });
  s += frame([](mig::Envelope& e) {
    auto* c = e.mutable_set_commit();
    c->set_set(2);
    c->set_has_parent(true);
    c->set_parent_set(1);
  });
  write_file(dir + "/two-sets", s);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];
  for (const std::string& d : {dir, dir + "/record", dir + "/page", dir + "/migrate"})
    mkdir(d.c_str(), 0755);
  try {
    record_seeds(dir + "/record");
    page_seeds(dir + "/page");
    migrate_seeds(dir + "/migrate");
  } catch (const ckpt::Error& e) {
    fprintf(stderr, "make_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
