#include "objects/vma_flags.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>

#include "sys/bpf.h"
#include "sys/bpf_asm.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/uffd.h"

namespace ckpt::vma_flags {

namespace {

// vm_flags bits (include/linux/mm.h, 64-bit) and their smaps codes
// (fs/proc/task_mmu.c, show_smap_vma_flags), for the codes ckpt reads and
// the permission ones. prepare() checks the ones a process can set itself.
struct Code {
  const char* code;
  uint64_t bit;
};
constexpr Code kCodes[] = {
    {"rd", 0x1},        {"wr", 0x2},        {"ex", 0x4},           {"sh", 0x8},
    {"mr", 0x10},       {"mw", 0x20},       {"me", 0x40},          {"ms", 0x80},
    {"gd", 0x100},      {"um", 0x200},      {"pf", 0x400},         {"uw", 0x1000},
    {"lo", 0x2000},     {"io", 0x4000},     {"sr", 0x8000},        {"rr", 0x10000},
    {"dc", 0x20000},    {"de", 0x40000},    {"ac", 0x100000},      {"nr", 0x200000},
    {"ht", 0x400000},   {"wf", 0x2000000},  {"dd", 0x4000000},     {"mm", 0x10000000},
    {"hg", 0x20000000}, {"nh", 0x40000000}, {"mg", 0x80000000ULL}, {"ui", 1ULL << 41},
};

// What the program writes per mapping.
struct Record {
  uint64_t start, end, flags;
};

struct Reader {
  UniqueFd prog;
  std::string why_not;  // set if unusable
};

// The iterator program: for each mapping (ctx->vma; NULL once at the end)
// write {vm_start, vm_end, vm_flags} to the seq file.
std::vector<bpf_insn> program(const bpf::Btf::Member& start, const bpf::Btf::Member& end,
                              const bpf::Btf::Member& flags, const bpf::Btf::Member& seq) {
  bpf::Asm a;
  constexpr int kOut = 1;
  a.mov(6, 1);        // r6 = ctx: {meta, task, vma}, 8 bytes each
  a.ldxdw(2, 6, 16);  // r2 = ctx->vma
  a.jeqi(2, 0, kOut);
  a.ldxdw(3, 2, static_cast<int16_t>(start.offset));
  a.stxdw(10, -24, 3);
  a.ldxdw(3, 2, static_cast<int16_t>(end.offset));
  a.stxdw(10, -16, 3);
  a.ldxdw(3, 2, static_cast<int16_t>(flags.offset));
  a.stxdw(10, -8, 3);
  a.ldxdw(1, 6, 0);                                 // r1 = ctx->meta
  a.ldxdw(1, 1, static_cast<int16_t>(seq.offset));  // r1 = meta->seq
  a.mov(2, 10);
  a.addi(2, -24);
  a.movi(3, sizeof(Record));
  a.call(BPF_FUNC_seq_write);
  a.label(kOut);
  a.movi(0, 0);
  a.exit();
  return a.code();
}

UniqueFd load() {
  std::optional<bpf::Btf> btf = bpf::Btf::kernel();
  if (!btf) throw Error("the kernel has no BTF (/sys/kernel/btf/vmlinux)");
  auto func = btf->find(BTF_KIND_FUNC, "bpf_iter_task_vma");
  if (!func) throw Error("the kernel has no task-VMA iterator (bpf_iter_task_vma)");
  auto member = [&](const char* type, const char* name) {
    auto id = btf->find(BTF_KIND_STRUCT, type);
    std::optional<bpf::Btf::Member> m;
    if (id) m = btf->member(*id, name);
    if (!m || m->size != 8 || m->offset > 4096)
      throw Error(strfmt("BTF: no 8-byte member %s of struct %s", name, type));
    return *m;
  };
  auto insns = program(member("vm_area_struct", "vm_start"), member("vm_area_struct", "vm_end"),
                       member("vm_area_struct", "vm_flags"), member("bpf_iter_meta", "seq"));
  // bpf_seq_write is for GPL programs; this one is ckpt's own.
  return bpf::prog_load_iter(insns, *func, "GPL", "ckpt_vma_flags");
}

std::vector<Record> iterate(int prog, pid_t pid) {
  UniqueFd link = bpf::link_iter_task(prog, pid);
  UniqueFd it = bpf::iter_create(link.get());
  std::string out;
  char buf[16 * 1024];
  for (;;) {
    ssize_t n = ::read(it.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno(strfmt("read the VMA iterator of pid %d", pid));
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  if (out.size() % sizeof(Record))
    throw Error(strfmt("VMA iterator of pid %d: %zu bytes, not whole records", pid, out.size()));
  std::vector<Record> recs(out.size() / sizeof(Record));
  memcpy(recs.data(), out.data(), out.size());
  return recs;
}

// Mappings in ckpt itself with each flag prepare() checks; unmapped (and
// their userfaultfd closed) when it goes.
class Sample {
 public:
  static constexpr size_t kPages = 24;
  Sample() {
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* p =
        mmap(nullptr, kPages * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw_errno("mmap");
    base_ = static_cast<char*>(p);
    // Every other page gets one flag, so each is a mapping of its own.
    const int advice[] = {MADV_DONTFORK, MADV_DONTDUMP, MADV_WIPEONFORK, MADV_SEQUENTIAL,
                          MADV_RANDOM,   MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_MERGEABLE};
    size_t i = 1;
    for (int a : advice) {
      madvise(at(i), page_, a);  // refused where the kernel lacks it: then unchecked
      i += 2;
    }
    mlock(at(i), page_);
    i += 2;
    // userfaultfd registrations: missing, write-protect.
    long fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd >= 0) {
      uffd_ = Uffd::own(UniqueFd(static_cast<int>(fd)));
      try {
        uffd_->api(0);
        uffd_->register_missing(reinterpret_cast<uint64_t>(at(i)), page_);
        uffd_->register_wp(reinterpret_cast<uint64_t>(at(i + 2)), page_);
      } catch (const Error&) {
      }
    }
    void* g = mmap(nullptr, page_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN, -1, 0);
    if (g != MAP_FAILED) grows_ = g;
  }
  ~Sample() {
    uffd_.reset();
    munlock(base_, kPages * page_);
    munmap(base_, kPages * page_);
    if (grows_) munmap(grows_, page_);
  }
  Sample(const Sample&) = delete;
  Sample& operator=(const Sample&) = delete;
  bool contains(const proc::Vma& v) const {
    auto b = reinterpret_cast<uint64_t>(base_);
    auto g = reinterpret_cast<uint64_t>(grows_);
    return (v.start >= b && v.end <= b + kPages * page_) || (grows_ && v.end == g + page_);
  }

 private:
  char* at(size_t i) const { return base_ + i * page_; }
  size_t page_ = 4096;
  char* base_ = nullptr;
  void* grows_ = nullptr;
  std::optional<Uffd> uffd_;
};

// Compares the codes the bits give with smaps on the sample's mappings;
// how many mappings it compared, or a throw naming the first difference.
size_t check(int prog) {
  Sample sample;
  std::vector<proc::Vma> smaps = proc::read_smaps(getpid());
  std::vector<Record> recs = iterate(prog, getpid());
  std::set<std::string> known;
  for (const Code& c : kCodes) known.insert(c.code);
  size_t compared = 0;
  std::set<std::string> seen;
  for (const proc::Vma& v : smaps) {
    if (!sample.contains(v)) continue;
    const Record* r = nullptr;
    for (const Record& x : recs)
      if (x.start == v.start && x.end == v.end) r = &x;
    if (!r) throw Error(strfmt("mapping %lx-%lx: not seen by the iterator", v.start, v.end));
    std::set<std::string> want, got;
    for (const auto& f : v.vm_flags)
      if (known.count(f)) want.insert(f);
    for (const auto& f : codes(r->flags)) got.insert(f);
    if (want != got) {
      std::string w, g;
      for (const auto& f : want) w += f + " ";
      for (const auto& f : got) g += f + " ";
      throw Error(strfmt("mapping %lx-%lx: smaps says \"%s\", the bits \"%s\"", v.start, v.end,
                         w.c_str(), g.c_str()));
    }
    seen.insert(want.begin(), want.end());
    compared++;
  }
  // The sample must have shown flags beyond the permissions, or nothing
  // was checked.
  for (const char* must : {"dc", "dd", "wf", "sr", "rr"})
    if (!seen.count(must)) throw Error(strfmt("the sample mappings have no \"%s\"", must));
  return compared;
}

Reader& reader() {
  static Reader r;
  static std::once_flag once;
  std::call_once(once, [] {
    try {
      if (const char* e = getenv("CKPT_VMA_FLAGS"); e && strcmp(e, "smaps") == 0)
        throw Error("CKPT_VMA_FLAGS=smaps");
      r.prog = load();
      size_t n = check(r.prog.get());
      LOG_DEBUG("VMA flags: read with a BPF iterator (checked against smaps on %zu mappings)", n);
    } catch (const Error& e) {
      r.prog.reset();
      r.why_not = e.what();
      LOG_DEBUG("VMA flags: read from smaps (no BPF iterator: %s)", e.what());
    }
  });
  return r;
}

}  // namespace

std::vector<std::string> codes(uint64_t vm_flags) {
  std::vector<std::string> out;
  for (const Code& c : kCodes)
    if (vm_flags & c.bit) out.emplace_back(c.code);
  return out;
}

bool prepare() {
  return static_cast<bool>(reader().prog);
}

std::optional<std::vector<proc::Vma>> read(pid_t pid) {
  Reader& r = reader();
  if (!r.prog) return std::nullopt;
  std::vector<proc::Vma> maps = proc::read_maps(pid);
  std::vector<Record> recs = iterate(r.prog.get(), pid);
  size_t j = 0;
  for (proc::Vma& v : maps) {
    // The gate area ([vsyscall]) is shown by maps but is no mapping of the
    // process; smaps gives it its permissions' codes.
    if (v.path == "[vsyscall]" && (j == recs.size() || recs[j].start != v.start)) {
      if (v.r) v.vm_flags.emplace_back("rd");
      if (v.x) v.vm_flags.emplace_back("ex");
      continue;
    }
    if (j == recs.size() || recs[j].start != v.start || recs[j].end != v.end) {
      LOG_DEBUG("pid %d: the VMA iterator and maps disagree at %lx: reading smaps", pid, v.start);
      return std::nullopt;
    }
    v.vm_flags = codes(recs[j++].flags);
  }
  if (j != recs.size()) {
    LOG_DEBUG("pid %d: the VMA iterator has %zu mappings, maps fewer: reading smaps", pid,
              recs.size());
    return std::nullopt;
  }
  return maps;
}

}  // namespace ckpt::vma_flags
