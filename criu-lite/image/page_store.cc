#include "image/page_store.h"

#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "image/crc32c.h"
#include "image/record_file.h"
#include "sys/error.h"

namespace ckpt::image {

namespace {

constexpr size_t kChunkBytes = kChunkPages * kPageSize;
constexpr size_t kRecordHeaderSize = 16;  // record_file.h's header, reused for the pages file

// The pages file starts with the record header of kind Pages padded to a
// page, so raw chunks can sit page-aligned behind it.
std::string pages_header() {
  std::string h(kPageSize, '\0');
  uint32_t kind = static_cast<uint32_t>(Kind::Pages);
  uint16_t major = kFormatMajor, minor = kFormatMinor;
  memcpy(&h[0], &kMagic, 4);
  memcpy(&h[4], &kind, 4);
  memcpy(&h[8], &major, 2);
  memcpy(&h[10], &minor, 2);
  return h;
}

void check_pages_header(const Blob& b, const std::string& name) {
  auto fail = [&](const std::string& what) { throw Error("image " + name + ": " + what); };
  if (b.size() < kRecordHeaderSize)
    fail(strfmt("truncated (%zu bytes, header needs %zu)", b.size(), kRecordHeaderSize));
  uint32_t magic, kind;
  uint16_t major, minor;
  memcpy(&magic, b.data(), 4);
  memcpy(&kind, b.data() + 4, 4);
  memcpy(&major, b.data() + 8, 2);
  memcpy(&minor, b.data() + 10, 2);
  if (magic != kMagic) fail(strfmt("bad magic 0x%08x (not a ckpt image)", magic));
  if (kind != static_cast<uint32_t>(Kind::Pages)) {
    const char* found = kind_name(static_cast<Kind>(kind));
    if (strcmp(found, "unknown") == 0) fail(strfmt("has unknown kind %u, expected pages", kind));
    fail(strfmt("is a %s image, expected pages", found));
  }
  if (major > kFormatMajor)
    fail(strfmt("format version %u.%u is newer than this ckpt (%u.x)", major, minor, kFormatMajor));
  if (major < kFormatMajor)
    fail(strfmt("format version %u.%u is older than this ckpt supports (%u.x)", major, minor,
                kFormatMajor));
  if (b.size() < kPageSize)
    fail(strfmt("truncated (%zu bytes, header needs %zu)", b.size(), kPageSize));
}

struct DCtxFree {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

}  // namespace

void PageWriter::CCtxFree::operator()(ZSTD_CCtx_s* c) const {
  ZSTD_freeCCtx(c);
}

PageWriter::PageWriter(ImageSink& sink, const std::string& id, PageWriterOptions opts)
    : sink_(sink), id_(id), opts_(opts) {
  if (opts_.zstd_level > 0) {
    cctx_.reset(ZSTD_createCCtx());
    if (!cctx_) throw Error("zstd: cannot allocate a compression context");
  }
  map_.set_pages_file(pages_name(id_));
  map_.set_page_size(kPageSize);
  pending_.reserve(kChunkBytes);
  if (opts_.compare) compare_ = std::make_unique<CompareState>(*opts_.compare);
  out_ = sink_.open_stream(pages_name(id_));
  std::string header = pages_header();
  out_->write(header.data(), header.size());
}

PageWriter::~PageWriter() = default;

// Compares added pages with the parent's, page by page.
class PageWriter::CompareState {
 public:
  explicit CompareState(const PageReader& parent) : cursor(parent) {}
  PageReader::Cursor cursor;
};

void PageWriter::add(uint64_t vaddr, const void* data, size_t npages) {
  const std::string name = pages_name(id_);
  if (!out_) throw Error("image " + name + ": pages added after finish()");
  if (npages == 0) return;
  auto* p = static_cast<const char*>(data);
  if (!compare_) {
    add_run(vaddr, npages, Where::kHere);
    add_data(vaddr, p, npages);
    return;
  }
  // same[i]: page i is in the parent with the same bytes.
  std::vector<bool> same(npages, false);
  compare_->cursor.read(vaddr, npages, [&](uint64_t a, const uint8_t* pd, size_t n) {
    size_t first = (a - vaddr) / kPageSize;
    for (size_t i = 0; i < n; i++)
      same[first + i] = memcmp(pd + i * kPageSize, p + (first + i) * kPageSize, kPageSize) == 0;
  });
  size_t i = 0;
  while (i < npages) {
    size_t j = i;
    while (j < npages && same[j] == same[i]) j++;
    add_run(vaddr + i * kPageSize, j - i, same[i] ? Where::kParent : Where::kHere);
    if (!same[i]) add_data(vaddr + i * kPageSize, p + i * kPageSize, j - i);
    i = j;
  }
}

void PageWriter::add_parent(uint64_t vaddr, size_t npages) {
  if (!out_) throw Error("image " + pages_name(id_) + ": pages added after finish()");
  if (npages == 0) return;
  add_run(vaddr, npages, Where::kParent);
}

void PageWriter::add_lazy(uint64_t vaddr, size_t npages) {
  if (!out_) throw Error("image " + pages_name(id_) + ": pages added after finish()");
  if (npages == 0) return;
  add_run(vaddr, npages, Where::kLazy);
}

void PageWriter::add_run(uint64_t vaddr, size_t npages, Where where) {
  const bool in_parent = where == Where::kParent, lazy = where == Where::kLazy;
  const std::string name = pages_name(id_);
  if (vaddr % kPageSize != 0)
    throw Error(strfmt("image %s: page address 0x%lx is not page-aligned", name.c_str(), vaddr));
  if (npages > (std::numeric_limits<uint64_t>::max() - vaddr) / kPageSize)
    throw Error(strfmt("image %s: %zu pages at 0x%lx run past the end of the address space",
                       name.c_str(), npages, vaddr));

  // A new run only where the addresses are not contiguous or the kind
  // changes: a VMA dumped in several add() calls stays one run.
  ckpt::img::PageRun* last =
      map_.runs_size() > 0 ? map_.mutable_runs(map_.runs_size() - 1) : nullptr;
  uint64_t last_end = last ? last->vaddr() + last->nr_pages() * kPageSize : 0;
  if (last && vaddr < last_end)
    throw Error(strfmt("image %s: pages at 0x%lx added after 0x%lx (must be in address order)",
                       name.c_str(), vaddr, last_end));
  if (last && vaddr == last_end && last->in_parent() == in_parent && last->lazy() == lazy) {
    last->set_nr_pages(last->nr_pages() + npages);
  } else {
    auto* run = map_.add_runs();
    run->set_vaddr(vaddr);
    run->set_nr_pages(npages);
    run->set_in_parent(in_parent);
    run->set_lazy(lazy);
  }
  (in_parent ? parent_pages_ : lazy ? lazy_pages_ : total_pages_) += npages;
}

void PageWriter::add_data(uint64_t vaddr, const char* p, size_t npages) {
  while (npages > 0) {
    if (pending_.empty() && npages >= kChunkPages) {
      // Whole chunks go out straight from the caller's buffer: one copy
      // less for the bulk of a large address space.
      write_chunk(p, kChunkBytes);
      p += kChunkBytes;
      npages -= kChunkPages;
      continue;
    }
    size_t n = std::min(npages, kChunkPages - pending_.size() / kPageSize);
    pending_.append(p, n * kPageSize);
    p += n * kPageSize;
    npages -= n;
    if (pending_.size() == kChunkBytes) flush_chunk();
  }
}

void PageWriter::flush_chunk() {
  if (pending_.empty()) return;
  write_chunk(pending_.data(), pending_.size());
  pending_.clear();
}

void PageWriter::write_chunk(const char* data, size_t len) {
  const char* stored = data;
  size_t stored_len = len;
  auto codec = ckpt::img::CODEC_RAW;
  if (cctx_) {
    size_t bound = ZSTD_compressBound(len);
    if (zbuf_.size() < bound) zbuf_.resize(bound);
    size_t n =
        ZSTD_compressCCtx(cctx_.get(), zbuf_.data(), zbuf_.size(), data, len, opts_.zstd_level);
    if (ZSTD_isError(n))
      throw Error(strfmt("image %s: zstd: %s", pages_name(id_).c_str(), ZSTD_getErrorName(n)));
    // A raw chunk can be mapped straight from the file at restore; a small
    // saving does not pay for losing that.
    if (n <= len - len / 8) {
      stored = zbuf_.data();
      stored_len = n;
      codec = ckpt::img::CODEC_ZSTD;
    }
  }
  if (codec == ckpt::img::CODEC_RAW) {
    static const char kZeros[kPageSize] = {};
    size_t pad = (kPageSize - out_->offset() % kPageSize) % kPageSize;
    if (pad > 0) out_->write(kZeros, pad);
  }
  auto* c = map_.add_chunks();
  c->set_offset(out_->offset());
  c->set_stored_len(stored_len);
  c->set_nr_pages(len / kPageSize);
  c->set_codec(codec);
  c->set_crc(crc32c(stored, stored_len));
  out_->write(stored, stored_len);
}

void PageWriter::finish() {
  if (!out_) throw Error("image " + pages_name(id_) + ": finish() called twice");
  flush_chunk();
  map_.set_total_pages(total_pages_);
  map_.set_parent_pages(parent_pages_);
  map_.set_lazy_pages(lazy_pages_);
  // Pages before the map that points into them, like the inventory last.
  out_->commit();
  out_.reset();
  save_message(sink_, pagemap_name(id_), Kind::Pagemap, map_);
}

uint64_t PageWriter::stored_bytes() const {
  uint64_t sum = 0;
  for (const auto& c : map_.chunks()) sum += c.stored_len();
  return sum;
}

PageReader::PageReader(const ImageSource& src, const std::string& id) : id_(id) {
  const std::string map_name = pagemap_name(id);
  const std::string pname = pages_name(id);
  load_message(src, map_name, Kind::Pagemap, map_);
  auto bad_map = [&](const std::string& what) { throw Error("image " + map_name + ": " + what); };
  auto bad_pages = [&](const std::string& what) { throw Error("image " + pname + ": " + what); };

  if (map_.page_size() != kPageSize)
    bad_map(strfmt("page size %u, this host uses %zu", map_.page_size(), kPageSize));
  // The name is fixed by the id; a map pointing elsewhere is corrupt (and
  // must not make us open an arbitrary file).
  if (!map_.pages_file().empty() && map_.pages_file() != pname)
    bad_map("names pages file '" + map_.pages_file() + "', expected " + pname);

  uint64_t run_pages = 0, in_parent_pages = 0, lazy_pages = 0, run_end = 0;
  run_data_.reserve(static_cast<size_t>(map_.runs_size()));
  for (int i = 0; i < map_.runs_size(); i++) {
    const auto& r = map_.runs(i);
    if (r.nr_pages() == 0) bad_map(strfmt("run %d is empty", i));
    if (r.vaddr() % kPageSize != 0)
      bad_map(strfmt("run %d at 0x%lx is not page-aligned", i, r.vaddr()));
    if (i > 0 && r.vaddr() < run_end)
      bad_map(strfmt("run %d at 0x%lx overlaps or precedes run %d", i, r.vaddr(), i - 1));
    if (r.nr_pages() > (std::numeric_limits<uint64_t>::max() - r.vaddr()) / kPageSize)
      bad_map(strfmt("run %d at 0x%lx with %lu pages runs past the end of the address space", i,
                     r.vaddr(), r.nr_pages()));
    run_end = r.vaddr() + r.nr_pages() * kPageSize;
    // Runs are disjoint in 2^64 bytes: the sums cannot overflow.
    if (r.in_parent() && r.lazy()) bad_map(strfmt("run %d is both lazy and in the parent", i));
    run_data_.push_back(run_pages);
    (r.in_parent() ? in_parent_pages : r.lazy() ? lazy_pages : run_pages) += r.nr_pages();
  }
  if (in_parent_pages != map_.parent_pages())
    bad_map(strfmt("page counts disagree: runs in the parent %lu, parent_pages %lu",
                   in_parent_pages, map_.parent_pages()));
  if (lazy_pages != map_.lazy_pages())
    bad_map(strfmt("page counts disagree: lazy runs %lu, lazy_pages %lu", lazy_pages,
                   map_.lazy_pages()));

  pages_ = src.open(pname);
  check_pages_header(*pages_, pname);
  const uint64_t file_size = pages_->size();
  uint64_t chunk_pages = 0, chunk_end = kPageSize;
  for (int i = 0; i < map_.chunks_size(); i++) {
    const auto& c = map_.chunks(i);
    // The limit also bounds the buffer for_each decompresses into.
    if (c.nr_pages() == 0 || c.nr_pages() > kChunkPages)
      bad_map(strfmt("chunk %d holds %lu pages (1 to %zu allowed)", i, c.nr_pages(), kChunkPages));
    if (c.codec() == ckpt::img::CODEC_RAW) {
      if (c.stored_len() != c.nr_pages() * kPageSize)
        bad_map(
            strfmt("raw chunk %d stores %lu bytes for %lu pages", i, c.stored_len(), c.nr_pages()));
      if (c.offset() % kPageSize != 0)
        bad_map(strfmt("raw chunk %d at offset %lu is not page-aligned", i, c.offset()));
    } else if (c.codec() == ckpt::img::CODEC_ZSTD) {
      if (c.stored_len() == 0) bad_map(strfmt("zstd chunk %d is empty", i));
    } else {
      bad_map(strfmt("chunk %d has unknown codec %d", i, static_cast<int>(c.codec())));
    }
    // Chunks in file order without overlap: also stops a small file from
    // standing for an unbounded amount of page data.
    if (c.offset() < chunk_end)
      bad_map(
          strfmt("chunk %d at offset %lu overlaps the header or chunk %d", i, c.offset(), i - 1));
    if (c.stored_len() > file_size || c.offset() > file_size - c.stored_len())
      bad_pages(strfmt("truncated (%lu bytes, chunk %d needs %lu more at offset %lu)", file_size, i,
                       c.stored_len(), c.offset()));
    if (c.codec() == ckpt::img::CODEC_ZSTD) {
      unsigned long long content =
          ZSTD_getFrameContentSize(pages_->data() + c.offset(), c.stored_len());
      if (content != c.nr_pages() * kPageSize)
        bad_pages(strfmt("chunk %d is not a zstd frame of %lu bytes", i, c.nr_pages() * kPageSize));
    }
    chunk_end = c.offset() + c.stored_len();
    chunk_first_.push_back(chunk_pages);
    chunk_pages += c.nr_pages();
  }
  if (run_pages != map_.total_pages() || chunk_pages != map_.total_pages())
    bad_map(strfmt("page counts disagree: runs %lu, chunks %lu, total %lu", run_pages, chunk_pages,
                   map_.total_pages()));

  if (in_parent_pages == 0) return;
  parent_src_ = src.parent();
  if (!parent_src_)
    bad_map(strfmt("%lu pages are in the parent checkpoint, but %s has none", in_parent_pages,
                   src.where().c_str()));
  parent_ = in_context("parent " + parent_src_->where(),
                       [&] { return std::make_unique<PageReader>(*parent_src_, id); });
  for (const auto& r : map_.runs())
    if (r.in_parent() && !parent_->covers(r.vaddr(), r.nr_pages()))
      bad_map(strfmt("pages at 0x%lx (%lu) are said to be in the parent, which lacks them",
                     r.vaddr(), r.nr_pages()));
}

PageReader::~PageReader() = default;

bool PageReader::covers(uint64_t vaddr, uint64_t npages) const {
  const auto& runs = map_.runs();
  uint64_t end = vaddr + npages * kPageSize;
  // The last run that starts at or below vaddr.
  auto it = std::upper_bound(runs.begin(), runs.end(), vaddr,
                             [](uint64_t a, const auto& r) { return a < r.vaddr(); });
  if (it == runs.begin()) return npages == 0;
  --it;
  uint64_t at = vaddr;
  for (; it != runs.end() && at < end; ++it) {
    uint64_t rend = it->vaddr() + it->nr_pages() * kPageSize;
    if (it->vaddr() > at) return false;  // a gap
    if (rend <= at) continue;
    if (it->lazy()) return false;
    uint64_t upto = std::min(end, rend);
    if (it->in_parent() && !parent_->covers(at, (upto - at) / kPageSize)) return false;
    at = upto;
  }
  return at >= end;
}

namespace {

// One chunk read, checked and (if compressed) decompressed. Buffers are
// reused from chunk to chunk; not std::string, so growing them does not zero
// a megabyte that is overwritten anyway.
struct LoadedChunk {
  std::unique_ptr<uint8_t[]> in, out;
  size_t in_size = 0, out_size = 0;
  const uint8_t* data = nullptr;
};

uint8_t* grow(std::unique_ptr<uint8_t[]>& b, size_t& size, size_t want) {
  if (size < want) {
    b.reset(new uint8_t[want]);
    size = want;
  }
  return b.get();
}

}  // namespace

struct PageReader::Cursor::State {
  const PageReader& r;
  LoadedChunk lc;
  int loaded = -1;
  std::unique_ptr<ZSTD_DCtx, DCtxFree> dctx;
  std::unique_ptr<Cursor> parent;

  // Reads chunk i (unless it is the one loaded), checks and decompresses it.
  // Stored bytes are read into a buffer (warm in cache for the checksum and
  // for the consumer) rather than touched through the file mapping.
  const uint8_t* load(int i) {
    if (i == loaded) return lc.data;
    loaded = -1;
    const auto& c = r.map_.chunks(i);
    uint8_t* stored = grow(lc.in, lc.in_size, c.stored_len());
    r.pages_->read(c.offset(), stored, c.stored_len());
    if (crc32c(stored, c.stored_len()) != c.crc())
      throw Error(strfmt("image %s: chunk %d: checksum mismatch", pages_name(r.id_).c_str(), i));
    lc.data = stored;
    if (c.codec() == ckpt::img::CODEC_ZSTD) {
      if (!dctx) {
        dctx.reset(ZSTD_createDCtx());
        if (!dctx) throw Error("zstd: cannot allocate a decompression context");
      }
      size_t want = c.nr_pages() * kPageSize;
      uint8_t* out = grow(lc.out, lc.out_size, want);
      size_t n = ZSTD_decompressDCtx(dctx.get(), out, want, stored, c.stored_len());
      if (ZSTD_isError(n) || n != want)
        throw Error(strfmt("image %s: chunk %d does not decompress to %zu bytes%s%s",
                           pages_name(r.id_).c_str(), i, want, ZSTD_isError(n) ? ": " : "",
                           ZSTD_isError(n) ? ZSTD_getErrorName(n) : ""));
      lc.data = out;
    }
    loaded = i;
    return lc.data;
  }
};

PageReader::Cursor::Cursor(const PageReader& r) : s_(new State{r}) {}
PageReader::Cursor::~Cursor() = default;

// Loading the next chunk in a helper thread while fn consumes this one was
// measured slower here (1 GiB restore: 0.72 s against 0.60 s): the chunk
// then crosses to the other core's cache, and fn's own work (writing into
// a task) already keeps the second core busy faulting in pages.
void PageReader::Cursor::read(uint64_t vaddr, uint64_t npages, const PageFn& fn) {
  const PageReader& r = s_->r;
  const auto& runs = r.map_.runs();
  const uint64_t end = vaddr + npages * kPageSize;
  auto it = std::upper_bound(runs.begin(), runs.end(), vaddr,
                             [](uint64_t a, const auto& run) { return a < run.vaddr(); });
  if (it != runs.begin()) --it;
  for (; it != runs.end() && it->vaddr() < end; ++it) {
    uint64_t rend = it->vaddr() + it->nr_pages() * kPageSize;
    if (rend <= vaddr) continue;
    uint64_t at = std::max(vaddr, it->vaddr());
    uint64_t upto = std::min(end, rend);
    if (it->lazy()) continue;
    if (it->in_parent()) {
      if (!s_->parent) s_->parent = std::make_unique<Cursor>(*r.parent_);
      s_->parent->read(at, (upto - at) / kPageSize, fn);
      continue;
    }
    // The constructor proved runs and chunks hold the same number of
    // pages, so k stays within the chunks.
    uint64_t k =
        r.run_data_[static_cast<size_t>(it - runs.begin())] + (at - it->vaddr()) / kPageSize;
    uint64_t left = (upto - at) / kPageSize;
    while (left > 0) {
      auto ci = std::upper_bound(r.chunk_first_.begin(), r.chunk_first_.end(), k) -
                r.chunk_first_.begin() - 1;
      const uint8_t* data = s_->load(static_cast<int>(ci));
      uint64_t off = k - r.chunk_first_[static_cast<size_t>(ci)];
      uint64_t n = std::min(left, r.map_.chunks(static_cast<int>(ci)).nr_pages() - off);
      fn(at, data + off * kPageSize, n);
      at += n * kPageSize;
      k += n;
      left -= n;
    }
  }
}

void PageReader::for_each(const PageFn& fn) const {
  if (map_.runs_size() == 0) return;
  const auto& last = map_.runs(map_.runs_size() - 1);
  uint64_t first = map_.runs(0).vaddr();
  Cursor c(*this);
  c.read(first, (last.vaddr() - first) / kPageSize + last.nr_pages(), fn);
}

}  // namespace ckpt::image
