// Feeds a pagemap image and a pages file built from arbitrary bytes to
// PageReader and walks every page. Any crash, over-read or exception other
// than ckpt::Error is a bug. Input layout: see fuzz_common.h.
#include <google/protobuf/stubs/logging.h>

#include <fuzzer/FuzzedDataProvider.h>
#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_common.h"
#include "image/page_store.h"
#include "pagemap.pb.h"

namespace {

using namespace ckpt;

// The pagemap bytes wrapped in a valid one-record frame.
std::string frame_pagemap(const std::string& msg) {
  std::string img;
  auto put32 = [&](uint32_t v) { img.append(reinterpret_cast<const char*>(&v), 4); };
  put32(image::kMagic);
  put32(static_cast<uint32_t>(image::Kind::Pagemap));
  put32(image::kFormatMajor | (uint32_t(image::kFormatMinor) << 16));
  put32(0);
  put32(static_cast<uint32_t>(msg.size()));
  img += msg;
  put32(0xffffffff);
  put32(1);
  put32(0);
  put32(image::kTrailerMagic);
  fuzz::fix_record_crc(img);
  return img;
}

// Sets every chunk crc that points inside the pages file to the real one.
void fix_chunk_crcs(std::string& map_msg, const std::string& pages) {
  img::Pagemap map;
  if (!map.ParseFromString(map_msg)) return;
  for (auto& c : *map.mutable_chunks()) {
    if (c.stored_len() <= pages.size() && c.offset() <= pages.size() - c.stored_len())
      c.set_crc(image::crc32c(pages.data() + c.offset(), c.stored_len()));
  }
  map_msg = map.SerializeAsString();
}

// Reads the pair back and walks every page; only ckpt::Error may come out.
void check(std::string map, std::string pages) {
  fuzz::MemImages src;
  src.images[image::pagemap_name("1")] = std::move(map);
  src.images[image::pages_name("1")] = std::move(pages);
  try {
    image::PageReader r(src, "1");
    uint64_t seen = 0, last_end = 0;
    r.for_each([&](uint64_t vaddr, const uint8_t* p, size_t n) {
      if (n == 0 || vaddr < last_end) __builtin_trap();  // pieces must be in address order
      // Touch the first and last byte so ASan sees any bad pointer.
      volatile uint8_t sink = p[0] ^ p[n * image::kPageSize - 1];
      (void)sink;
      last_end = vaddr + n * image::kPageSize;
      seen += n;
    });
    if (seen != r.pages()) __builtin_trap();
  } catch (const Error&) {
  }
}

// True about once in n+1; false once the input is used up, so a short input
// means a well-formed image.
bool rare(FuzzedDataProvider& fdp, int n) {
  return fdp.ConsumeIntegralInRange(0, n) == n;
}

// Pages of chunk data: one byte repeated, or with some noise at the start of
// each page (enough to tell pages apart; filling whole pages costs speed).
std::string page_data(FuzzedDataProvider& fdp, size_t npages) {
  std::string d(npages * image::kPageSize, static_cast<char>(fdp.ConsumeIntegral<uint8_t>()));
  if (fdp.ConsumeBool()) {
    uint32_t x = fdp.ConsumeIntegral<uint32_t>();
    for (size_t p = 0; p < npages; p++)
      for (size_t i = 0; i < 64; i++)
        d[p * image::kPageSize + i] = static_cast<char>((x = x * 1103515245 + 12345) >> 23);
  }
  return d;
}

// Structured mode: the input drives a generator of mostly consistent
// pagemaps and pages files, with one knob per check in PageReader. Byte-level
// mutation of a protobuf alone almost never gets a map past the count and
// offset checks, so for_each would hardly be exercised.
void structured(FuzzedDataProvider& fdp, std::string& map_img, std::string& pages) {
  img::Pagemap map;
  map.set_page_size(rare(fdp, 15) ? fdp.ConsumeIntegral<uint32_t>() : image::kPageSize);
  if (rare(fdp, 15)) map.set_pages_file(fdp.ConsumeRandomLengthString(16));

  uint64_t vaddr = fdp.ConsumeBool() ? 0 : 0x7ffffffff000ull - 64 * image::kPageSize;
  if (rare(fdp, 31)) vaddr = ~0ull - 2 * image::kPageSize + 1;
  uint64_t total = 0;
  int nruns = fdp.ConsumeIntegralInRange(0, 5);
  for (int i = 0; i < nruns; i++) {
    vaddr += fdp.ConsumeIntegralInRange(0, 3) * image::kPageSize;
    if (rare(fdp, 31)) vaddr += fdp.ConsumeIntegralInRange(1, 4095);
    if (rare(fdp, 31)) vaddr -= image::kPageSize;
    // Small, so the fuzzer stays fast; small chunks (below) still give
    // runs that span chunks.
    uint64_t n =
        rare(fdp, 15) ? fdp.ConsumeIntegralInRange(0, 40) : fdp.ConsumeIntegralInRange(0, 6);
    auto* r = map.add_runs();
    r->set_vaddr(vaddr);
    r->set_nr_pages(n);
    vaddr += n * image::kPageSize;
    total += n;
  }

  pages = std::string(image::kPageSize, '\0');
  uint32_t kind = static_cast<uint32_t>(image::Kind::Pages);
  memcpy(&pages[0], &image::kMagic, 4);
  memcpy(&pages[4], &kind, 4);
  memcpy(&pages[8], &image::kFormatMajor, 2);
  if (rare(fdp, 31)) pages[fdp.ConsumeIntegralInRange(0, 15)] ^= 1;

  // Chunks cover the runs' pages unless a knob says otherwise.
  uint64_t left = total + (rare(fdp, 15) ? 1 : 0);
  for (int i = 0; i < 64 && (left > 0 || rare(fdp, 31)); i++) {
    uint64_t n = std::min<uint64_t>(
        left, rare(fdp, 3) ? fdp.ConsumeIntegralInRange(1, 4) : image::kChunkPages);
    if (rare(fdp, 31)) n = fdp.ConsumeIntegralInRange(0, 4);                     // extra or short
    if (rare(fdp, 63)) n = image::kChunkPages + fdp.ConsumeIntegral<uint8_t>();  // oversized
    left -= std::min(left, n);
    // An oversized chunk is refused before its data is looked at: skip
    // building megabytes for it.
    std::string data = page_data(fdp, n <= image::kChunkPages ? n : 1);
    int codec = rare(fdp, 15) ? fdp.ConsumeIntegralInRange(0, 3) : fdp.ConsumeIntegralInRange(0, 1);
    std::string stored;
    if (codec != img::CODEC_ZSTD || data.empty()) {
      stored = std::move(data);
    } else {
      stored.resize(ZSTD_compressBound(data.size()));
      size_t z = ZSTD_compress(stored.data(), stored.size(), data.data(), data.size(), 1);
      stored.resize(ZSTD_isError(z) ? 0 : z);
    }
    if (codec != img::CODEC_ZSTD || rare(fdp, 31))
      pages.resize((pages.size() + image::kPageSize - 1) / image::kPageSize * image::kPageSize);
    auto* c = map.add_chunks();
    c->set_offset(pages.size() + (rare(fdp, 31) ? fdp.ConsumeIntegralInRange(-4100, 4100) : 0));
    c->set_stored_len(stored.size() + (rare(fdp, 31) ? fdp.ConsumeIntegralInRange(-8, 8) : 0));
    c->set_nr_pages(n);
    c->set_codec(static_cast<img::Codec>(codec));
    c->set_crc(image::crc32c(stored.data(), stored.size()));
    if (rare(fdp, 15) && !stored.empty())
      stored[fdp.ConsumeIntegralInRange<size_t>(0, stored.size() - 1)] ^= 0x20;
    pages += stored;
  }
  map.set_total_pages(rare(fdp, 31) ? fdp.ConsumeIntegral<uint8_t>() : total);
  if (rare(fdp, 15)) pages.resize(fdp.ConsumeIntegralInRange<size_t>(0, pages.size()));
  map_img = frame_pagemap(map.SerializeAsString());
}

}  // namespace

// Protobuf logs every string field that is not UTF-8; at thousands of inputs a
// second that is noise (and time), not a finding.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  uint8_t flags = data[0];
  if (flags & fuzz::kStructured) {
    FuzzedDataProvider fdp(data + 1, size - 1);
    std::string map, pages;
    structured(fdp, map, pages);
    check(std::move(map), std::move(pages));
    return 0;
  }
  uint32_t map_len;
  memcpy(&map_len, data + 1, 4);
  size_t rest = size - 5;
  if (map_len > rest) map_len = static_cast<uint32_t>(rest);
  std::string map(reinterpret_cast<const char*>(data + 5), map_len);
  std::string pages(reinterpret_cast<const char*>(data + 5 + map_len), rest - map_len);

  if ((flags & fuzz::kFixPagesHeader) && pages.size() >= 16) {
    uint32_t kind = static_cast<uint32_t>(image::Kind::Pages);
    memcpy(&pages[0], &image::kMagic, 4);
    memcpy(&pages[4], &kind, 4);
    memcpy(&pages[8], &image::kFormatMajor, 2);
    memcpy(&pages[10], &image::kFormatMinor, 2);
  }
  if (flags & fuzz::kFrameMap) {
    if (flags & fuzz::kFixChunkCrc) fix_chunk_crcs(map, pages);
    map = frame_pagemap(map);
  }

  check(std::move(map), std::move(pages));
  return 0;
}
