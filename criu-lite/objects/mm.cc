#include "objects/mm.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <future>

#include "image/page_store.h"
#include "image/record_file.h"
#include "objects/dirty_tracking.h"
#include "objects/ghosts.h"
#include "objects/ipc_shm_vma.h"
#include "objects/lazy_pages.h"
#include "objects/progress.h"
#include "sys/cancel.h"
#include "sys/cpu.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"
#include "sys/uapi.h"
#include "sys/uffd.h"

namespace ckpt {

namespace {

constexpr uint64_t kPage = 4096;

uint32_t prot_of(const proc::Vma& v) {
  return (v.r ? PROT_READ : 0) | (v.w ? PROT_WRITE : 0) | (v.x ? PROT_EXEC : 0);
}

uint32_t madv_bits(const proc::Vma& v) {
  uint32_t m = 0;
  if (v.has_flag("hg")) m |= img::MADV_BIT_HUGEPAGE;
  if (v.has_flag("nh")) m |= img::MADV_BIT_NOHUGEPAGE;
  if (v.has_flag("dc")) m |= img::MADV_BIT_DONTFORK;
  if (v.has_flag("dd")) m |= img::MADV_BIT_DONTDUMP;
  if (v.has_flag("wf")) m |= img::MADV_BIT_WIPEONFORK;
  if (v.has_flag("mg")) m |= img::MADV_BIT_MERGEABLE;
  if (v.has_flag("sr")) m |= img::MADV_BIT_SEQUENTIAL;
  if (v.has_flag("rr")) m |= img::MADV_BIT_RANDOM;
  return m;
}

std::string range_name(const proc::Vma& v) {
  return strfmt("%llx-%llx", static_cast<unsigned long long>(v.start),
                static_cast<unsigned long long>(v.end));
}

img::Vma classify(DumpContext& ctx, pid_t pid, const proc::Vma& v) {
  img::Vma o;
  o.set_start(v.start);
  o.set_end(v.end);
  o.set_pgoff(v.pgoff);
  o.set_prot(prot_of(v));
  o.set_madv(madv_bits(v));
  o.set_growsdown(v.has_flag("gd"));
  o.set_locked(v.has_flag("lo"));
  o.set_may_write(v.has_flag("mw"));
  const std::string& p = v.path;
  std::string where = strfmt("vma %s %s", range_name(v).c_str(), p.c_str());
  if (p == "[vdso]") {
    o.set_kind(img::VMA_VDSO);
  } else if (p == "[vvar]") {
    o.set_kind(img::VMA_VVAR);
  } else if (p == "[vvar_vclock]") {
    o.set_kind(img::VMA_VVAR_VCLOCK);
  } else if (p == "[vsyscall]") {
    o.set_kind(img::VMA_VSYSCALL);
  } else if (p.empty() || p == "[heap]" || p == "[stack]" || p.rfind("[anon:", 0) == 0 ||
             p.rfind("[anon_shmem:", 0) == 0) {
    o.set_heap(p == "[heap]");
    o.set_stack(p == "[stack]");
    if (p.rfind("[anon:", 0) == 0) o.set_name(p.substr(6, p.size() - 7));
    if (v.shared || p.rfind("[anon_shmem:", 0) == 0) {
      o.set_kind(img::VMA_ANON_SHARED);
    } else {
      o.set_kind(img::VMA_ANON_PRIVATE);
    }
  } else if (p == "/dev/zero" && v.deleted && v.shared) {
    o.set_kind(img::VMA_ANON_SHARED);
  } else if (p.rfind("/SYSV", 0) == 0 && v.deleted && v.shared) {
    in_context(where, [&] { describe_sysv_shm_vma(pid, v, &o); });  // ipc_shm_vma.h
  } else if (v.has_flag("pf") || v.has_flag("io")) {
    throw Error(where + ": device memory mapping (VM_PFNMAP/VM_IO) is not supported");
  } else if (!p.empty() && p[0] == '/') {
    o.set_kind(v.shared ? img::VMA_FILE_SHARED : img::VMA_FILE_PRIVATE);
    o.set_path(p);
    if (v.deleted || is_memfd_link(p)) {
      // The file has no name any more: its content is saved with the images.
      UniqueFd f =
          open_or_throw(strfmt("/proc/%d/map_files/%s", pid, range_name(v).c_str()), O_RDONLY);
      o.set_ghost_id(in_context(where, [&] {
        return ctx.ghosts->add(ctx, f.get(), p + (v.deleted ? " (deleted)" : ""));
      }));
    }
    struct stat st {};
    if (stat(strfmt("/proc/%d/map_files/%s", pid, range_name(v).c_str()).c_str(), &st) == 0) {
      o.set_file_dev(st.st_dev);
      o.set_file_ino(st.st_ino);
    }
  } else {
    throw Error(where + ": unsupported kind of mapping");
  }
  if (o.kind() == img::VMA_ANON_SHARED) {
    struct stat st {};
    if (stat(strfmt("/proc/%d/map_files/%s", pid, range_name(v).c_str()).c_str(), &st) != 0)
      throw_errno(where + ": stat map_files");
    o.set_shmem_id(st.st_ino);
    o.set_shmem_size(static_cast<uint64_t>(st.st_size));
  }
  return o;
}

// Collects runs of pages to read and reads them with as few
// process_vm_readv calls as possible. Two batches take turns: while a
// helper thread hands one to the writer (checksum, write), this thread reads
// the next, so reading the task and writing the image overlap.
class PageCopier {
 public:
  // running: the task runs meanwhile (a pre-copy round); a range it has
  // unmapped since is saved as zeros, since its next round saves whatever is
  // mapped there again (untracked, hence dirty).
  PageCopier(pid_t pid, image::PageWriter& w, Progress* progress, bool running = false)
      : pid_(pid), w_(w), progress_(progress), running_(running) {
    // Not zeroed: first touches of fresh pages are what costs here.
    for (auto& b : batches_) b.buf.reset(new char[kBufBytes]);
  }
  ~PageCopier() {
    if (writing_.valid()) writing_.wait();
  }
  void add(uint64_t vaddr, uint64_t npages, bool readable) {
    while (npages > 0) {
      Batch& b = batches_[cur_];
      uint64_t room = (kBufBytes - b.used) / kPage;
      if (room == 0 || b.iov.size() == kMaxIov) {
        flush();
        continue;
      }
      uint64_t n = std::min(npages, room);
      b.iov.push_back({reinterpret_cast<void*>(vaddr), n * kPage});
      b.readable.push_back(readable);
      b.unread.push_back(kRead);
      b.used += n * kPage;
      vaddr += n * kPage;
      npages -= n;
    }
  }
  // Pages the parent checkpoint holds unchanged, or that post-copy sends
  // later (lazy): not read, only recorded, in order with the others.
  void add_parent(uint64_t vaddr, uint64_t npages) { add_unread(vaddr, npages, kInParent); }
  void add_lazy(uint64_t vaddr, uint64_t npages) { add_unread(vaddr, npages, kLazy); }
  // Reads the current batch and starts writing it.
  void flush() {
    Batch& b = batches_[cur_];
    if (b.iov.empty()) return;
    read(b);
    wait_writer();
    writing_ = std::async(std::launch::async, [this, &b] { write(b); });
    cur_ ^= 1;
  }
  // Everything added so far is in the writer.
  void finish() {
    flush();
    wait_writer();
  }

 private:
  enum Unread : uint8_t { kRead, kInParent, kLazy };
  struct Batch {
    std::unique_ptr<char[]> buf;
    std::vector<iovec> iov;
    std::vector<bool> readable;
    std::vector<Unread> unread;  // not kRead: no bytes in buf
    size_t used = 0;
  };

  void add_unread(uint64_t vaddr, uint64_t npages, Unread how) {
    Batch& b = batches_[cur_];
    if (b.iov.size() == kMaxIov) flush();
    Batch& c = batches_[cur_];
    c.iov.push_back({reinterpret_cast<void*>(vaddr), npages * kPage});
    c.readable.push_back(false);
    c.unread.push_back(how);
  }

  void read(Batch& b) {
    // One call for all readable runs; PROT_NONE runs go through /proc/PID/mem.
    std::vector<iovec> local, remote;
    size_t off = 0, want = 0;
    for (size_t i = 0; i < b.iov.size(); i++) {
      if (b.unread[i] != kRead) continue;
      if (b.readable[i]) {
        local.push_back({b.buf.get() + off, b.iov[i].iov_len});
        remote.push_back(b.iov[i]);
        want += b.iov[i].iov_len;
      }
      off += b.iov[i].iov_len;
    }
    ssize_t got = local.empty() ? 0
                                : process_vm_readv(pid_, local.data(), local.size(), remote.data(),
                                                   remote.size(), 0);
    bool all = got == static_cast<ssize_t>(want);
    off = 0;
    for (size_t i = 0; i < b.iov.size(); i++) {
      if (b.unread[i] != kRead) continue;
      if (!b.readable[i] || !all) {
        try {
          remote_read(pid_, reinterpret_cast<uint64_t>(b.iov[i].iov_base), b.buf.get() + off,
                      b.iov[i].iov_len);
        } catch (const Error&) {
          if (!running_) throw;
          memset(b.buf.get() + off, 0, b.iov[i].iov_len);
        }
      }
      off += b.iov[i].iov_len;
    }
  }

  void write(Batch& b) {
    size_t off = 0;
    for (size_t i = 0; i < b.iov.size(); i++) {
      const auto& v = b.iov[i];
      if (b.unread[i] == kInParent) {
        w_.add_parent(reinterpret_cast<uint64_t>(v.iov_base), v.iov_len / kPage);
        continue;
      }
      if (b.unread[i] == kLazy) {
        w_.add_lazy(reinterpret_cast<uint64_t>(v.iov_base), v.iov_len / kPage);
        continue;
      }
      w_.add(reinterpret_cast<uint64_t>(v.iov_base), b.buf.get() + off, v.iov_len / kPage);
      off += v.iov_len;
    }
  }

  // Waits for the batch being written (rethrowing its error) and recycles it.
  void wait_writer() {
    if (!writing_.valid()) return;
    writing_.get();
    Batch& done = batches_[cur_ ^ 1];
    if (progress_) progress_->advance(done.used / kPage);
    cancel::check();
    done.iov.clear();
    done.readable.clear();
    done.unread.clear();
    done.used = 0;
  }

  static constexpr size_t kBufBytes = 4u << 20;
  static constexpr size_t kMaxIov = 1024;
  pid_t pid_;
  image::PageWriter& w_;
  Progress* progress_;
  bool running_;
  Batch batches_[2];
  int cur_ = 0;
  std::future<void> writing_;
};

// Pages of [start, end) worth saving: present or swapped, not the shared
// zero page, and for private file mappings only the copied-on-write ones.
template <class F>
void scan_pages(int pagemap_fd, uint64_t start, uint64_t end, bool file_backed, F&& on_run) {
  page_region regions[512];
  pm_scan_arg arg{};
  arg.size = sizeof arg;
  arg.start = start;
  arg.end = end;
  arg.vec = reinterpret_cast<uint64_t>(regions);
  arg.vec_len = 512;
  arg.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
  // PAGE_IS_FILE makes the kernel look at every page's struct page (13 ms
  // per GiB here, in the stop); an anonymous mapping has no file pages.
  arg.return_mask =
      PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO | (file_backed ? PAGE_IS_FILE : 0);
  for (;;) {
    long n = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
    if (n < 0) throw_errno("PAGEMAP_SCAN");
    for (long i = 0; i < n; i++) {
      const page_region& r = regions[i];
      bool swapped = r.categories & PAGE_IS_SWAPPED;
      bool present = r.categories & PAGE_IS_PRESENT;
      bool keep = swapped || (present && !(r.categories & PAGE_IS_PFNZERO) &&
                              !(file_backed && (r.categories & PAGE_IS_FILE)));
      if (keep) on_run(r.start, (r.end - r.start) / kPage);
    }
    if (arg.walk_end >= end || n == 0) break;
    arg.start = arg.walk_end;
  }
}

void dump_shmem(DumpContext& ctx, DumpTask& t, const proc::Vma& v, const img::Vma& iv) {
  if (!ctx.shmem_done.insert(iv.shmem_id()).second) return;
  UniqueFd fd =
      open_or_throw(strfmt("/proc/%d/map_files/%s", t.pid, range_name(v).c_str()), O_RDONLY);
  image::PageWriter w(*ctx.sink, shmem_pages_id(iv.shmem_id()), {ctx.opts.zstd_level});
  std::vector<char> buf(1u << 20);
  off_t size = static_cast<off_t>(iv.shmem_size());
  off_t pos = 0;
  while (pos < size) {
    off_t data = lseek(fd.get(), pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;
      throw_errno("shared memory SEEK_DATA");
    }
    off_t hole = lseek(fd.get(), data, SEEK_HOLE);
    if (hole < 0) hole = size;
    for (off_t p = data; p < hole;) {
      size_t n = static_cast<size_t>(std::min<off_t>(hole - p, static_cast<off_t>(buf.size())));
      n = n / kPage * kPage;
      if (n == 0) break;
      ssize_t r = pread(fd.get(), buf.data(), n, p);
      if (r != static_cast<ssize_t>(n)) throw_errno("read shared memory object");
      w.add(static_cast<uint64_t>(p), buf.data(), n / kPage);
      p += static_cast<off_t>(n);
    }
    pos = hole;
  }
  w.finish();
  ctx.stats.pages += w.pages();
  ctx.stats.page_bytes += w.stored_bytes();
}

}  // namespace

void anon_pages_written(int pagemap_fd, uint64_t start, uint64_t end,
                        const std::function<void(uint64_t start, uint64_t npages)>& on_run) {
  scan_pages(pagemap_fd, start, end, false, on_run);
}

uint64_t estimate_pages(const proc::Status& status) {
  return (status.rss_anon_kb + status.swap_kb) / 4;
}

namespace {

// The kind of a VMA as far as its pages go, told from its smaps entry alone
// (dump_pages runs while the task does: no remote syscall, no ghost files).
img::VmaKind page_kind(const proc::Vma& v) {
  if (v.path == "[vdso]" || v.path == "[vvar]" || v.path == "[vsyscall]" ||
      v.path == "[vvar_vclock]")
    return img::VMA_VDSO;
  if (v.shared) return img::VMA_ANON_SHARED;  // not copied ahead
  if (v.path.empty() || v.path[0] == '[') return img::VMA_ANON_PRIVATE;
  return img::VMA_FILE_PRIVATE;
}

}  // namespace

void dump_pages(DumpContext& ctx, DumpTask& t) {
  dump_mm(ctx, t, true);
}

void dump_mm(DumpContext& ctx, DumpTask& t, bool pages_only) {
  img::MmCore mm;
  mm.set_pid(static_cast<uint32_t>(t.vpid));
  mm.set_start_code(t.stat.start_code);
  mm.set_end_code(t.stat.end_code);
  mm.set_start_data(t.stat.start_data);
  mm.set_end_data(t.stat.end_data);
  mm.set_start_brk(t.stat.start_brk);
  mm.set_start_stack(t.stat.start_stack);
  mm.set_arg_start(t.stat.arg_start);
  mm.set_arg_end(t.stat.arg_end);
  mm.set_env_start(t.stat.env_start);
  mm.set_env_end(t.stat.env_end);
  if (!pages_only) {
    mm.set_brk(t.remote->check("brk(0)", __NR_brk, 0));
    for (uint64_t w : proc::read_auxv(t.pid)) mm.add_auxv(w);
    mm.set_exe_path(read_link(strfmt("/proc/%d/exe", t.pid)));
  }

  UniqueFd pagemap = open_or_throw(strfmt("/proc/%d/pagemap", t.pid), O_RDONLY);
  // Incremental: pages dirty tracking saw unwritten stay in the parent;
  // without tracking, the writer compares each page with the parent's.
  std::unique_ptr<image::PageReader> parent;
  const PageDelta* delta = nullptr;
  if (ctx.parent && ctx.parent->exists(image::pagemap_name(std::to_string(t.vpid)))) {
    parent = in_context("parent checkpoint", [&] {
      return std::make_unique<image::PageReader>(*ctx.parent, std::to_string(t.vpid));
    });
    auto d = ctx.deltas.find(t.pid);
    if (d != ctx.deltas.end()) delta = d->second.get();
  } else if (ctx.parent_elsewhere) {
    // The previous round of a migration: what tracking saw unwritten is
    // there, and nothing here can check it.
    auto d = ctx.deltas.find(t.pid);
    if (d != ctx.deltas.end()) delta = d->second.get();
  }
  image::PageWriterOptions wopts{ctx.opts.zstd_level};
  if (parent && !delta) wopts.compare = parent.get();
  image::PageWriter w(*ctx.sink, std::to_string(t.vpid), wopts);
  PageCopier copier(t.pid, w, ctx.progress, pages_only);
  auto add_run = [&](const proc::Vma& v, uint64_t start, uint64_t n) {
    if (!delta) return copier.add(start, n, v.r);
    delta->split(start, n, [&](uint64_t s, uint64_t k, bool dirty) {
      // A clean page the parent does not have would be a tracking error:
      // save it rather than trust it.
      if (dirty || (parent && !parent->covers(s, k)) ||
          (ctx.parent_covers && !ctx.parent_covers(t.vpid, s, k)))
        copier.add(s, k, v.r);
      else
        copier.add_parent(s, k);
    });
  };
  for (const auto& v : t.vmas) {
    img::Vma iv;
    if (pages_only) {
      iv.set_kind(page_kind(v));
      if (iv.kind() == img::VMA_ANON_SHARED || iv.kind() == img::VMA_VDSO) continue;
    } else {
      iv = classify(ctx, t.pid, v);
    }
    bool lazy_vma = ctx.opts.lazy_pages && iv.kind() == img::VMA_ANON_PRIVATE;
    switch (iv.kind()) {
      case img::VMA_ANON_PRIVATE:
      case img::VMA_FILE_PRIVATE:
        // Post-copy: the whole mapping is to come from the source, which
        // tells written pages from untouched ones after the resume
        // (anon_pages_written): the page table walk (1.5 ms per GiB here)
        // is not part of the stop.
        if (lazy_vma) {
          copier.add_lazy(v.start, (v.end - v.start) / kPage);
          break;
        }
        scan_pages(pagemap.get(), v.start, v.end, iv.kind() == img::VMA_FILE_PRIVATE,
                   [&](uint64_t start, uint64_t n) { add_run(v, start, n); });
        break;
      case img::VMA_ANON_SHARED:
        in_context(strfmt("shared memory at %s", range_name(v).c_str()),
                   [&] { dump_shmem(ctx, t, v, iv); });
        break;
      case img::VMA_VDSO:
        t.vdso_base = v.start;
        break;
      default:
        break;
    }
    *mm.add_vmas() = std::move(iv);
  }
  copier.finish();
  w.finish();
  ctx.stats.vmas += static_cast<uint32_t>(t.vmas.size());
  ctx.stats.pages += w.pages();
  ctx.stats.parent_pages += w.parent_pages();
  ctx.stats.lazy_pages += w.lazy_pages();
  ctx.stats.page_bytes += w.stored_bytes();
  if (!pages_only) image::save_message(*ctx.sink, mm_name(t.vpid), image::Kind::Mm, mm);
}

// ---------------------------------------------------------------- restore

ShmemTable::~ShmemTable() {
  for (auto& [id, o] : objs_) {
    munmap(reinterpret_cast<void*>(o.addr), o.size);
    if (o.fd >= 0) close(o.fd);
  }
}

void ShmemTable::load(const image::ImageSource& src, const std::vector<img::MmCore>& mms) {
  for (const auto& mm : mms) {
    for (const auto& v : mm.vmas()) {
      if (v.kind() != img::VMA_ANON_SHARED || objs_.count(v.shmem_id())) continue;
      uint64_t size = std::max<uint64_t>(v.shmem_size(), kPage);
      void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED)
        throw_errno(
            strfmt("map shared memory object %llu", static_cast<unsigned long long>(v.shmem_id())));
      objs_[v.shmem_id()] = {reinterpret_cast<uint64_t>(p), size, -1};
      objs_[v.shmem_id()].fd =
          openat_or_throw(
              host_proc_dir(),
              strfmt("self/map_files/%llx-%llx",
                     static_cast<unsigned long long>(reinterpret_cast<uint64_t>(p)),
                     static_cast<unsigned long long>(reinterpret_cast<uint64_t>(p) + size)),
              O_RDWR)
              .release();
      image::PageReader r(src, shmem_pages_id(v.shmem_id()));
      r.for_each([&](uint64_t off, const uint8_t* data, size_t n) {
        if (off + n * kPage > size) throw Error("shared memory pages beyond the object's size");
        memcpy(static_cast<char*>(p) + off, data, n * kPage);
      });
    }
  }
}

const ShmemObject& ShmemTable::get(uint64_t id) const {
  auto it = objs_.find(id);
  if (it == objs_.end())
    throw Error(
        strfmt("shared memory object %llu was not loaded", static_cast<unsigned long long>(id)));
  return it->second;
}

namespace {

struct Range {
  uint64_t start, end;
  bool operator==(const Range&) const = default;
};

// A free place of size bytes that overlaps none of the ranges.
uint64_t find_gap(std::vector<Range> used, uint64_t size) {
  std::sort(used.begin(), used.end(),
            [](const Range& a, const Range& b) { return a.start < b.start; });
  uint64_t cand = 0x100000000ULL;  // above the usual low executable area
  const uint64_t limit = 0x7ffff0000000ULL;
  for (const auto& r : used) {
    if (r.end <= cand) continue;
    if (r.start >= cand + size + kPage) break;
    cand = (r.end + kPage + 0xffff) & ~0xffffULL;
  }
  if (cand + size > limit) throw Error("no free address range for restore scratch memory");
  return cand;
}

bool is_special(img::VmaKind k) {
  return k == img::VMA_VDSO || k == img::VMA_VVAR || k == img::VMA_VVAR_VCLOCK ||
         k == img::VMA_VSYSCALL;
}

img::VmaKind special_kind(const std::string& path) {
  if (path == "[vdso]") return img::VMA_VDSO;
  if (path == "[vvar]") return img::VMA_VVAR;
  if (path == "[vvar_vclock]") return img::VMA_VVAR_VCLOCK;
  if (path == "[vsyscall]") return img::VMA_VSYSCALL;
  return img::VMA_UNKNOWN;
}

// Writes a NUL-terminated path into scratch at off; returns its address.
uint64_t put_path(const RemoteScratch& s, pid_t pid, size_t off, const std::string& path) {
  if (path.size() + 1 > s.size() - off) throw Error("path too long: " + path);
  s.write(pid, off, path.c_str(), path.size() + 1);
  return s.addr() + off;
}

}  // namespace

void restore_mm(RemoteThread& rt, RemoteScratch& scratch, pid_t pid, const img::MmCore& mm,
                const image::ImageSource& src, const ShmemTable& shmem, const GhostTable& ghosts,
                int holder_fd, MmRestoreStats* stats, LazyPager* lazy) {
  // A description ckpt holds, duplicated into the task.
  auto take = [&](int our_fd, const std::string& what) {
    return static_cast<long>(rt.check(("take " + what + " from ckpt (pidfd_getfd)").c_str(),
                                      __NR_pidfd_getfd, static_cast<uint64_t>(holder_fd),
                                      static_cast<uint64_t>(our_fd), 0));
  };
  // 1. Drop everything the stub inherited from ckpt but the kernel's special
  //    mappings, which are moved, not recreated.
  //    The gaps between the special mappings are unmapped whole: one
  //    munmap for all of ckpt's own mappings below them, one above.
  std::vector<proc::Vma> cur = proc::parse_maps(read_file(strfmt("/proc/%d/maps", pid)));
  std::map<img::VmaKind, Range> cur_special;
  for (const auto& v : cur) {
    img::VmaKind k = special_kind(v.path);
    if (k != img::VMA_UNKNOWN && k != img::VMA_VSYSCALL) cur_special[k] = {v.start, v.end};
  }
  {
    constexpr uint64_t kLow = 0x10000;            // mmap_min_addr and below stay as they are
    constexpr uint64_t kTop = 0x7ffffffff000ULL;  // end of the user address space (4-level)
    std::vector<Range> keep;
    for (auto& [k, r] : cur_special) keep.push_back(r);
    std::sort(keep.begin(), keep.end(),
              [](const Range& a, const Range& b) { return a.start < b.start; });
    uint64_t from = kLow;
    for (const auto& r : keep) {
      if (r.start > from) rt.check("munmap", __NR_munmap, from, r.start - from);
      from = std::max(from, r.end);
    }
    if (from < kTop) rt.check("munmap", __NR_munmap, from, kTop - from);
  }

  // 2. Move [vvar], [vvar_vclock], [vdso] to where they were, keeping their
  //    layout: first all to a free place, then to their targets, so that no
  //    move lands on a mapping not moved yet.
  std::vector<Range> dumped;
  std::map<img::VmaKind, Range> want_special;
  for (const auto& v : mm.vmas()) {
    dumped.push_back({v.start(), v.end()});
    if (is_special(v.kind()) && v.kind() != img::VMA_VSYSCALL)
      want_special[v.kind()] = {v.start(), v.end()};
  }
  for (auto& [k, r] : want_special) {
    auto it = cur_special.find(k);
    if (it == cur_special.end() || it->second.end - it->second.start != r.end - r.start)
      throw Error(
          "the kernel's special mappings ([vdso], [vvar]) differ from the dumped ones; "
          "restore on the same kernel build");
  }
  std::vector<Range> busy = dumped;
  for (auto& [k, r] : cur_special) busy.push_back(r);
  // Where no target overlaps any of them (the stub's were placed at random
  // by its execve, stubs.h), each moves straight to its target.
  bool direct = true;
  for (auto& [k, r] : want_special)
    for (auto& [k2, c] : cur_special)
      if (k2 != img::VMA_VSYSCALL && r.start < c.end && c.start < r.end) direct = false;
  // The freestanding restore stub moves its own there where it can
  // (restore/stubs.h): nothing to do then.
  bool in_place = cur_special == want_special;
  if (in_place) {
  } else if (!want_special.empty() && direct) {
    for (auto& [k, r] : want_special) {
      Range from = cur_special[k];
      rt.check("mremap special mapping", __NR_mremap, from.start, from.end - from.start,
               from.end - from.start, MREMAP_MAYMOVE | MREMAP_FIXED, r.start);
      if (k == img::VMA_VDSO) rt.set_syscall_ip(r.start + cpu::vdso_syscall_offset());
    }
    for (auto& [k, r] : cur_special)
      if (k != img::VMA_VSYSCALL && !want_special.count(k))
        rt.check("munmap special mapping", __NR_munmap, r.start, r.end - r.start);
  } else if (!want_special.empty()) {
    uint64_t lo = UINT64_MAX, hi = 0;
    for (auto& [k, r] : cur_special) {
      if (k == img::VMA_VSYSCALL) continue;
      lo = std::min(lo, r.start);
      hi = std::max(hi, r.end);
    }
    uint64_t tmp = find_gap(busy, hi - lo);
    uint64_t vdso_off = cpu::vdso_syscall_offset();
    for (auto& [k, r] : cur_special) {
      if (k == img::VMA_VSYSCALL) continue;
      uint64_t to = tmp + (r.start - lo);
      rt.check("mremap special mapping", __NR_mremap, r.start, r.end - r.start, r.end - r.start,
               MREMAP_MAYMOVE | MREMAP_FIXED, to);
      if (k == img::VMA_VDSO) rt.set_syscall_ip(to + vdso_off);
      r = {to, to + (r.end - r.start)};
    }
    for (auto& [k, r] : want_special) {
      Range from = cur_special[k];
      rt.check("mremap special mapping", __NR_mremap, from.start, from.end - from.start,
               from.end - from.start, MREMAP_MAYMOVE | MREMAP_FIXED, r.start);
      if (k == img::VMA_VDSO) rt.set_syscall_ip(r.start + vdso_off);
    }
    // Whatever the dump had no counterpart for (vvar_vclock on an older
    // kernel) would linger at the temporary place.
    for (auto& [k, r] : cur_special)
      if (k != img::VMA_VSYSCALL && !want_special.count(k))
        rt.check("munmap special mapping", __NR_munmap, r.start, r.end - r.start);
  }

  // 3. Scratch memory for syscall arguments, clear of every dumped VMA.
  busy = dumped;
  for (auto& [k, r] : want_special) busy.push_back(r);
  scratch = RemoteScratch(rt, 64 * 1024, find_gap(busy, 64 * 1024));

  // 4. Map every VMA: writable where pages are to be filled into it, else
  //    with its final protection straight away (no mprotect later).
  image::PageReader pages(src, std::to_string(mm.pid()));  // the image is named by the tree's pid
  std::vector<bool> has_pages(static_cast<size_t>(mm.vmas_size()), false);
  {
    const auto& runs = pages.pagemap().runs();
    int r = 0;
    for (int i = 0; i < mm.vmas_size(); i++) {
      const auto& v = mm.vmas(i);
      while (r < runs.size() && runs[r].vaddr() + runs[r].nr_pages() * kPage <= v.start()) r++;
      // Runs may span several VMAs: look at every run that starts before the end.
      for (int k = r; k < runs.size() && runs[k].vaddr() < v.end(); k++)
        if (runs[k].vaddr() + runs[k].nr_pages() * kPage > v.start()) {
          has_pages[static_cast<size_t>(i)] = true;
          break;
        }
    }
  }
  int vma_index = -1;
  constexpr size_t kPathOff = 4096;
  std::string open_path;
  long open_fd = -1;
  auto close_open = [&] {
    if (open_fd >= 0) rt.call(__NR_close, static_cast<uint64_t>(open_fd));
    open_fd = -1;
    open_path.clear();
  };
  for (const auto& v : mm.vmas()) {
    vma_index++;
    if (is_special(v.kind())) continue;
    uint64_t len = v.end() - v.start();
    uint64_t prot =
        has_pages[static_cast<size_t>(vma_index)] ? (v.prot() | PROT_READ | PROT_WRITE) : v.prot();
    uint64_t flags = MAP_FIXED | (v.growsdown() ? MAP_GROWSDOWN : 0);
    std::string where = strfmt("vma %llx-%llx", static_cast<unsigned long long>(v.start()),
                               static_cast<unsigned long long>(v.end()));
    in_context(where, [&] {
      switch (v.kind()) {
        case img::VMA_ANON_PRIVATE:
          rt.check("mmap", __NR_mmap, v.start(), len, prot, flags | MAP_PRIVATE | MAP_ANONYMOUS,
                   static_cast<uint64_t>(-1), 0);
          break;
        case img::VMA_FILE_PRIVATE:
        case img::VMA_FILE_SHARED: {
          bool shared = v.kind() == img::VMA_FILE_SHARED;
          int oflags = shared && v.may_write() ? O_RDWR : O_RDONLY;
          int memfd = v.ghost_id() ? ghosts.memfd(v.ghost_id()) : -1;
          std::string path = v.ghost_id() ? ghosts.path(v.ghost_id()) : v.path();
          std::string key = path + (oflags == O_RDWR ? "\n1" : "\n0");
          if (key != open_path) {
            close_open();
            struct stat st {};
            // The path as the task sees it (its root, its mount namespace).
            if (!v.ghost_id() &&
                stat(strfmt("/proc/%d/root%s", pid, v.path().c_str()).c_str(), &st) == 0 &&
                v.file_ino() && (st.st_ino != v.file_ino() || st.st_dev != v.file_dev()))
              LOG_WARN("pid %d: %s was replaced since the dump", pid, v.path().c_str());
            if (memfd >= 0) {
              UniqueFd mine = reopen_fd(memfd, oflags);
              open_fd = take(mine.get(), path);
            } else {
              open_fd = static_cast<long>(
                  rt.check(("open " + path).c_str(), __NR_openat, static_cast<uint64_t>(AT_FDCWD),
                           put_path(scratch, pid, kPathOff, path), oflags | O_CLOEXEC));
            }
            open_path = key;
          }
          if (shared) prot = v.prot();  // writing into a shared file would change it
          rt.check("mmap", __NR_mmap, v.start(), len, prot,
                   flags | (shared ? MAP_SHARED : MAP_PRIVATE), static_cast<uint64_t>(open_fd),
                   v.pgoff());
          break;
        }
        case img::VMA_ANON_SHARED: {
          close_open();
          const ShmemObject& o = shmem.get(v.shmem_id());
          long fd = take(o.fd, "shared memory");
          rt.check("mmap", __NR_mmap, v.start(), len, v.prot(), flags | MAP_SHARED,
                   static_cast<uint64_t>(fd), v.pgoff());
          rt.call(__NR_close, static_cast<uint64_t>(fd));
          break;
        }
        case img::VMA_SYSV_SHM: {  // ipc_shm_vma.h
          close_open();
          std::vector<Range> b = busy;
          b.push_back({scratch.addr(), scratch.addr() + scratch.size()});
          restore_sysv_shm_vma(rt, scratch, pid, v,
                               [&](uint64_t size) { return find_gap(b, size); });
          break;
        }
        default:
          throw Error("unknown vma kind in image");
      }
    });
  }
  close_open();

  // 5. Page contents. Private anonymous memory is filled with UFFDIO_COPY
  //    through a userfaultfd made inside the task: it allocates each page
  //    and copies into it without zeroing it first. Other pages (copied-on-
  //    write pages of file mappings) go through process_vm_writev, after
  //    pre-faulting big runs (much faster here than faulting page by page).
  //    A lazy restore leaves the registered memory empty and hands the
  //    descriptor to the pager, which fills it while the task runs.
  const std::string pages_id = std::to_string(mm.pid());
  if (!lazy && pages.pagemap().lazy_pages() > 0)
    throw Error(strfmt("%lu pages of %s are to come from a post-copy migration's source",
                       pages.pagemap().lazy_pages(), image::pagemap_name(pages_id).c_str()));
  std::vector<Range> uffd_ranges;
  Uffd uffd;
  long tfd = rt.call(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (tfd < 0 && lazy)
    throw Error(strfmt("userfaultfd in pid %d: %s", pid, strerror(static_cast<int>(-tfd))));
  if (tfd >= 0) {
    try {
      uffd = Uffd::adopt(pid, static_cast<int>(tfd));
      uffd.api(lazy ? LazyPager::features() : 0);
      for (int i = 0; i < mm.vmas_size(); i++)
        if (const auto& v = mm.vmas(i);
            v.kind() == img::VMA_ANON_PRIVATE && has_pages[static_cast<size_t>(i)]) {
          uffd.register_missing(v.start(), v.end() - v.start());
          uffd_ranges.push_back({v.start(), v.end()});
        }
    } catch (const Error& e) {
      if (lazy) {
        rt.call(__NR_close, static_cast<uint64_t>(tfd));
        throw;
      }
      LOG_DEBUG("pid %d: userfaultfd not usable (%s), writing pages directly", pid, e.what());
      for (const auto& r : uffd_ranges) uffd.unregister(r.start, r.end - r.start);
      uffd_ranges.clear();
    }
    rt.call(__NR_close, static_cast<uint64_t>(tfd));
  }
  // The registered range holding a, or where the next one starts.
  auto uffd_at = [&](uint64_t a, uint64_t* seg_end) {
    auto it = std::upper_bound(uffd_ranges.begin(), uffd_ranges.end(), a,
                               [](uint64_t x, const Range& r) { return x < r.start; });
    if (it != uffd_ranges.begin() && a < std::prev(it)->end) {
      *seg_end = std::prev(it)->end;
      return true;
    }
    *seg_end = it == uffd_ranges.end() ? UINT64_MAX : it->start;
    return false;
  };
  for (const auto& run : pages.pagemap().runs()) {
    uint64_t seg_end;
    if (run.nr_pages() >= 64 && !run.lazy() && !uffd_at(run.vaddr(), &seg_end))
      rt.call(__NR_madvise, run.vaddr(), std::min(run.nr_pages() * kPage, seg_end - run.vaddr()),
              MADV_POPULATE_WRITE);
  }
  // Writes a piece of page data; runs merge adjacent VMAs, so a piece may
  // cross from a file mapping into a registered one: split it there.
  // process_vm_writev into a registered range would wait for a fault
  // handler forever.
  auto put = [&](uint64_t vaddr, const uint8_t* data, size_t n) {
    uint64_t end = vaddr + n * kPage;
    while (vaddr < end) {
      uint64_t seg_end;
      bool registered = uffd_at(vaddr, &seg_end);
      uint64_t len = std::min(end, seg_end) - vaddr;
      if (registered)
        uffd.copy(vaddr, data, len);
      else
        remote_write(pid, vaddr, data, len);
      vaddr += len;
      data += len;
    }
  };
  if (!lazy) {
    pages.for_each(put);
    for (const auto& r : uffd_ranges) uffd.unregister(r.start, r.end - r.start);
  } else {
    // Only what lies outside the registered ranges is written now; the
    // rest is the pager's (lazy runs have no data here at all).
    std::vector<LazyRange> later;
    image::PageReader::Cursor cur(pages);
    for (const auto& run : pages.pagemap().runs()) {
      uint64_t at = run.vaddr(), end = run.vaddr() + run.nr_pages() * kPage;
      while (at < end) {
        uint64_t seg_end;
        bool registered = uffd_at(at, &seg_end);
        uint64_t upto = std::min(end, seg_end);
        if (registered) {
          if (!later.empty() && later.back().end == at)
            later.back().end = upto;
          else
            later.push_back({at, upto});
        } else if (run.lazy()) {
          throw Error(strfmt("pid %d: lazy pages at %#lx outside private anonymous memory", pid,
                             static_cast<unsigned long>(at)));
        } else {
          cur.read(at, (upto - at) / kPage, put);
        }
        at = upto;
      }
    }
    std::vector<LazyRange> regs;
    for (const auto& r : uffd_ranges) regs.push_back({r.start, r.end});
    if (!regs.empty()) lazy->add(pages_id, pid, std::move(uffd), std::move(regs), std::move(later));
  }
  if (stats) stats->pages += pages.pages();

  // 6. Final protections and madvise flags.
  vma_index = -1;
  for (const auto& v : mm.vmas()) {
    vma_index++;
    if (is_special(v.kind())) continue;
    uint64_t len = v.end() - v.start();
    if (v.kind() != img::VMA_ANON_SHARED && v.kind() != img::VMA_FILE_SHARED &&
        has_pages[static_cast<size_t>(vma_index)] && v.prot() != (PROT_READ | PROT_WRITE))
      rt.check("mprotect", __NR_mprotect, v.start(), len, v.prot());
    static const std::pair<uint32_t, int> kAdv[] = {
        {img::MADV_BIT_HUGEPAGE, MADV_HUGEPAGE},     {img::MADV_BIT_NOHUGEPAGE, MADV_NOHUGEPAGE},
        {img::MADV_BIT_DONTFORK, MADV_DONTFORK},     {img::MADV_BIT_DONTDUMP, MADV_DONTDUMP},
        {img::MADV_BIT_WIPEONFORK, MADV_WIPEONFORK}, {img::MADV_BIT_MERGEABLE, MADV_MERGEABLE},
        {img::MADV_BIT_SEQUENTIAL, MADV_SEQUENTIAL}, {img::MADV_BIT_RANDOM, MADV_RANDOM}};
    for (auto [bit, adv] : kAdv)
      if (v.madv() & bit) rt.call(__NR_madvise, v.start(), len, static_cast<uint64_t>(adv));
    if (!v.name().empty()) {
      uint64_t name = put_path(scratch, pid, kPathOff, v.name());
      rt.call(__NR_prctl, 0x53564d41 /* PR_SET_VMA */, 0 /* PR_SET_VMA_ANON_NAME */, v.start(), len,
              name);
    }
    if (v.locked() && rt.call(__NR_mlock, v.start(), len) < 0)
      LOG_WARN("pid %d: could not lock memory at %llx", pid,
               static_cast<unsigned long long>(v.start()));
  }
}

void restore_mm_fields(RemoteThread& rt, const RemoteScratch& scratch, pid_t pid,
                       const img::MmCore& mm) {
  ckpt_prctl_mm_map m{};
  m.start_code = mm.start_code();
  m.end_code = mm.end_code();
  m.start_data = mm.start_data();
  m.end_data = mm.end_data();
  m.start_brk = mm.start_brk();
  m.brk = mm.brk();
  m.start_stack = mm.start_stack();
  m.arg_start = mm.arg_start();
  m.arg_end = mm.arg_end();
  m.env_start = mm.env_start();
  m.env_end = mm.env_end();
  std::vector<uint64_t> auxv(mm.auxv().begin(), mm.auxv().end());
  constexpr size_t kAuxvOff = 1024, kExeOff = 4096;
  if (auxv.size() * 8 > kExeOff - kAuxvOff) throw Error("auxv image too large");
  scratch.write(pid, kAuxvOff, auxv.data(), auxv.size() * 8);
  m.auxv = scratch.addr() + kAuxvOff;
  m.auxv_size = static_cast<uint32_t>(auxv.size() * 8);
  long exe_fd = -1;
  if (!mm.exe_path().empty()) {
    exe_fd = rt.call(__NR_openat, static_cast<uint64_t>(AT_FDCWD),
                     put_path(scratch, pid, kExeOff, mm.exe_path()), O_RDONLY | O_CLOEXEC);
    if (exe_fd < 0) throw Error("open executable " + mm.exe_path(), static_cast<int>(-exe_fd));
  }
  m.exe_fd = static_cast<uint32_t>(exe_fd);
  scratch.write(pid, 0, &m, sizeof m);
  rt.check("prctl(PR_SET_MM_MAP)", __NR_prctl, PR_SET_MM, PR_SET_MM_MAP, scratch.addr(), sizeof m);
  if (exe_fd >= 0) rt.call(__NR_close, static_cast<uint64_t>(exe_fd));
}

}  // namespace ckpt
