// Page data of one address space (a process, or a shared memory object).
//
// pages-ID.img : a 4096-byte header (the record header of kind Pages, zero
//                padded), then chunks. Raw chunks start page-aligned so the
//                restore can use the mapped file directly.
// pagemap-ID.img: one Pagemap message (proto/pagemap.proto): the runs of
//                pages in address order and the chunk table with a crc32c
//                per chunk.
//
// The dumper hands pages over in address order through PageWriter::add;
// the writer cuts the stream into chunks of kChunkPages, compresses each
// with zstd when asked (storing it raw when that does not pay), and writes
// through a StreamWriter, so the same code feeds a file or a socket.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "image/image_io.h"
#include "pagemap.pb.h"

struct ZSTD_CCtx_s;  // zstd.h's ZSTD_CCtx, kept out of this header

namespace ckpt::image {

constexpr size_t kPageSize = 4096;
constexpr size_t kChunkPages = 256;  // 1 MiB of logical data per chunk

struct PageWriterOptions {
  int zstd_level = 0;  // 0: store raw
};

class PageWriter {
 public:
  // Writes pages-ID.img and, on finish(), pagemap-ID.img through sink.
  PageWriter(ImageSink& sink, const std::string& id, PageWriterOptions opts = {});
  ~PageWriter();
  // npages pages starting at vaddr (page-aligned), data is npages*4096 bytes.
  // Calls must come in increasing vaddr order.
  void add(uint64_t vaddr, const void* data, size_t npages);
  // Flushes the last chunk, commits the page file, saves the pagemap.
  void finish();
  uint64_t pages() const { return total_pages_; }
  uint64_t stored_bytes() const;

 private:
  void flush_chunk();
  void write_chunk(const char* data, size_t len);
  ImageSink& sink_;
  std::string id_;
  PageWriterOptions opts_;
  std::unique_ptr<StreamWriter> out_;
  ckpt::img::Pagemap map_;
  std::string pending_;  // logical bytes of the chunk being filled
  uint64_t total_pages_ = 0;
  std::string zbuf_;
  struct CCtxFree {
    void operator()(ZSTD_CCtx_s* c) const;
  };
  std::unique_ptr<ZSTD_CCtx_s, CCtxFree> cctx_;  // reused for every chunk
};

// Reads back the pages of one address space.
class PageReader {
 public:
  // Loads and validates pagemap-ID.img and checks pages-ID.img is large
  // enough for every chunk (a truncated file is an error here, before any
  // page is used).
  PageReader(const ImageSource& src, const std::string& id);
  const ckpt::img::Pagemap& pagemap() const { return map_; }
  uint64_t pages() const { return map_.total_pages(); }
  // Calls fn for consecutive pieces of the page data, in address order; a
  // piece never crosses a run or a chunk. Each chunk's crc is checked before
  // its first piece is handed out (Error naming the image and the chunk).
  void for_each(
      const std::function<void(uint64_t vaddr, const uint8_t* data, size_t npages)>& fn) const;

 private:
  std::string id_;
  ckpt::img::Pagemap map_;
  std::shared_ptr<const Blob> pages_;
};

inline std::string pages_name(const std::string& id) {
  return "pages-" + id + ".img";
}
inline std::string pagemap_name(const std::string& id) {
  return "pagemap-" + id + ".img";
}

}  // namespace ckpt::image
