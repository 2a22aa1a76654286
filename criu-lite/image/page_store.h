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
//
// Incremental checkpoints: add_parent() records pages that are unchanged
// since the parent checkpoint (a run marked in_parent, no data). With
// PageWriterOptions::compare set, add() itself finds such pages by comparing
// with the parent's content. PageReader follows the chain: a run in the
// parent is read from the parent's image of the same id, and so on up.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "image/image_io.h"
#include "pagemap.pb.h"

struct ZSTD_CCtx_s;  // zstd.h's ZSTD_CCtx, kept out of this header

namespace ckpt::image {

constexpr size_t kPageSize = 4096;
constexpr size_t kChunkPages = 256;  // 1 MiB of logical data per chunk

class PageReader;

struct PageWriterOptions {
  int zstd_level = 0;  // 0: store raw
  // Pages add() is given that this reader holds with the same content are
  // recorded as in the parent instead of stored. Must outlive the writer.
  const PageReader* compare = nullptr;
};

class PageWriter {
 public:
  // Writes pages-ID.img and, on finish(), pagemap-ID.img through sink.
  PageWriter(ImageSink& sink, const std::string& id, PageWriterOptions opts = {});
  ~PageWriter();
  // npages pages starting at vaddr (page-aligned), data is npages*4096 bytes.
  // Calls must come in increasing vaddr order.
  void add(uint64_t vaddr, const void* data, size_t npages);
  // npages pages starting at vaddr that the parent checkpoint holds
  // unchanged; same ordering rule as add().
  void add_parent(uint64_t vaddr, size_t npages);
  // npages pages at vaddr whose content comes later, from elsewhere
  // (post-copy migration); same ordering rule.
  void add_lazy(uint64_t vaddr, size_t npages);
  // Flushes the last chunk, commits the page file, saves the pagemap.
  void finish();
  uint64_t pages() const { return total_pages_; }  // stored here
  uint64_t parent_pages() const { return parent_pages_; }
  uint64_t lazy_pages() const { return lazy_pages_; }
  uint64_t stored_bytes() const;

 private:
  enum class Where { kHere, kParent, kLazy };
  void add_run(uint64_t vaddr, size_t npages, Where where);
  void add_data(uint64_t vaddr, const char* data, size_t npages);
  void flush_chunk();
  void write_chunk(const char* data, size_t len);
  ImageSink& sink_;
  std::string id_;
  PageWriterOptions opts_;
  std::unique_ptr<StreamWriter> out_;
  ckpt::img::Pagemap map_;
  std::string pending_;  // logical bytes of the chunk being filled
  uint64_t total_pages_ = 0;
  uint64_t parent_pages_ = 0;
  uint64_t lazy_pages_ = 0;
  class CompareState;
  std::unique_ptr<CompareState> compare_;
  std::string zbuf_;
  struct CCtxFree {
    void operator()(ZSTD_CCtx_s* c) const;
  };
  std::unique_ptr<ZSTD_CCtx_s, CCtxFree> cctx_;  // reused for every chunk
};

using PageFn = std::function<void(uint64_t vaddr, const uint8_t* data, size_t npages)>;

// Reads back the pages of one address space, following the parent chain of
// an incremental checkpoint.
class PageReader {
 public:
  // Loads and validates pagemap-ID.img and checks pages-ID.img is large
  // enough for every chunk (a truncated file is an error here, before any
  // page is used). Runs in the parent are checked against the parent's
  // pagemap (recursively): a chain that lacks a page is an error here too.
  PageReader(const ImageSource& src, const std::string& id);
  ~PageReader();
  const ckpt::img::Pagemap& pagemap() const { return map_; }
  // Every page of the address space, the ones in parents included.
  uint64_t pages() const { return map_.total_pages() + map_.parent_pages() + map_.lazy_pages(); }
  // Whether every page of [vaddr, vaddr + npages pages) is in this image or
  // its parents.
  bool covers(uint64_t vaddr, uint64_t npages) const;
  // Calls fn for consecutive pieces of the page data, in address order; a
  // piece never crosses a run or a chunk. Each chunk's crc is checked before
  // its first piece is handed out (Error naming the image and the chunk).
  void for_each(const PageFn& fn) const;

  // Reads pieces of the address space by address, each chunk of each image
  // of the chain loaded (read, checked, decompressed) once as long as the
  // requests come in increasing address order.
  class Cursor {
   public:
    explicit Cursor(const PageReader& r);
    ~Cursor();
    // Calls fn for the pages of [vaddr, vaddr + npages pages) that the image
    // or its parents hold, in address order (gaps and lazy runs are
    // skipped).
    void read(uint64_t vaddr, uint64_t npages, const PageFn& fn);

   private:
    struct State;
    std::unique_ptr<State> s_;
  };

 private:
  std::string id_;
  ckpt::img::Pagemap map_;
  std::shared_ptr<const Blob> pages_;
  std::vector<uint64_t> run_data_;     // per run: index of its first page in the data
  std::vector<uint64_t> chunk_first_;  // per chunk: index of its first page in the data
  std::shared_ptr<const ImageSource> parent_src_;
  std::unique_ptr<PageReader> parent_;
};

inline std::string pages_name(const std::string& id) {
  return "pages-" + id + ".img";
}
inline std::string pagemap_name(const std::string& id) {
  return "pagemap-" + id + ".img";
}

}  // namespace ckpt::image
