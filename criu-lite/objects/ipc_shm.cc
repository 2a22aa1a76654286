// SysV shared memory segments: metadata from SHM_STAT_ANY, content read
// through a read-only attach of our own. Only pages that hold data are
// saved: the segment is shmem, whose pages mincore() sees while they are in
// memory; swapped-out pages are read back in first (MADV_WILLNEED on shmem
// swaps in without allocating holes), and if /proc/sysvipc/shm still counts
// swapped bytes the whole segment is saved.
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "image/page_store.h"
#include "objects/ipc_common.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"
#include "sys/ns_thread.h"

namespace ckpt::ipc {

namespace {

constexpr uint64_t kPage = 4096;
constexpr long kHugetlbfsMagic = 0x958458f6;

uint64_t round_pages(uint64_t size) {
  return (size + kPage - 1) / kPage * kPage;
}

// A segment attached in ckpt; detached when it goes.
class Attach {
 public:
  Attach(int id, int flags) {
    void* p = shmat(id, nullptr, flags);
    if (p == reinterpret_cast<void*>(-1)) throw_errno("shmat");
    p_ = static_cast<char*>(p);
  }
  ~Attach() { shmdt(p_); }
  Attach(const Attach&) = delete;
  Attach& operator=(const Attach&) = delete;
  char* get() const { return p_; }

 private:
  char* p_;
};

// Bytes of segment id that are swapped out, from /proc/sysvipc/shm (this
// thread's namespace): "key shmid perms size cpid lpid nattch uid gid cuid
// cgid atime dtime ctime rss swap".
uint64_t swapped_bytes(int id) {
  std::istringstream in(read_file("/proc/sysvipc/shm"));
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::vector<std::string> f;
    std::string w;
    while (l >> w) f.push_back(w);
    if (f.size() >= 16 && f[1] == std::to_string(id)) return std::stoull(f[15]);
  }
  return 0;
}

// Which pages of the attached segment hold data.
std::vector<unsigned char> resident_pages(char* p, uint64_t len, int id, bool* whole) {
  std::vector<unsigned char> vec(len / kPage);
  *whole = false;
  for (int round = 0; round < 3; round++) {
    madvise(p, len, MADV_WILLNEED);
    if (mincore(p, len, vec.data()) != 0) throw_errno("mincore");
    if (swapped_bytes(id) == 0) return vec;
  }
  LOG_DEBUG("shm id %d: pages stay swapped out, saving the whole segment", id);
  *whole = true;
  return vec;
}

void save_pages(const img::IpcNs& ns, img::SysvShm* s, image::ImageSink& sink, int zstd_level) {
  int id = s->perm().id();
  Attach a(id, SHM_RDONLY);
  uint64_t len = round_pages(s->size());
  struct statfs sf {};
  if (statfs(strfmt("/proc/self/map_files/%lx-%lx", reinterpret_cast<unsigned long>(a.get()),
                    reinterpret_cast<unsigned long>(a.get() + len))
                 .c_str(),
             &sf) == 0 &&
      sf.f_type == kHugetlbfsMagic)
    throw Error("SHM_HUGETLB segments are not supported");
  bool whole = false;
  std::vector<unsigned char> vec = resident_pages(a.get(), len, id, &whole);
  image::PageWriter w(sink, shm_pages_id(ns.ns_id(), id), {zstd_level});
  for (uint64_t i = 0; i < vec.size();) {
    if (!whole && !(vec[i] & 1)) {
      i++;
      continue;
    }
    uint64_t j = i;
    while (j < vec.size() && (whole || (vec[j] & 1))) j++;
    w.add(i * kPage, a.get() + i * kPage, j - i);
    i = j;
  }
  w.finish();
  s->set_pages(w.pages());
}

}  // namespace

void dump_shm(img::IpcNs& ns, image::ImageSink& sink, int zstd_level) {
  shm_info info{};
  int max = shmctl(0, SHM_INFO, reinterpret_cast<shmid_ds*>(&info));
  if (max < 0) throw_errno("shmctl(SHM_INFO)");
  bool rmid_forced = read_sysctl("kernel/shm_rmid_forced") != "0";
  for (int idx = 0; idx <= max; idx++) {
    shmid_ds ds{};
    int id = shmctl(idx, SHM_STAT_ANY, &ds);
    if (id < 0) {
      if (errno == EINVAL || errno == EIDRM) continue;  // a free slot
      throw_errno(strfmt("shmctl(%d, SHM_STAT_ANY)", idx));
    }
    img::SysvShm* s = ns.add_shm();
    *s->mutable_perm() = perm_of(ds.shm_perm, id);
    s->set_size(ds.shm_segsz);
    s->set_locked(ds.shm_perm.mode & SHM_LOCKED);
    s->set_dest(ds.shm_perm.mode & SHM_DEST);
    s->set_nattch(static_cast<uint32_t>(ds.shm_nattch));
    in_context(describe("shm", s->perm()), [&] {
      // Recreated by ckpt, the segment's creator is gone, and with
      // shm_rmid_forced such an orphan is destroyed once nothing attaches it.
      if (rmid_forced && ds.shm_nattch == 0)
        throw Error(
            "kernel.shm_rmid_forced=1 and no process attaches the segment: it would not "
            "survive the restore");
      save_pages(ns, s, sink, zstd_level);
    });
  }
}

void restore_shm(const img::IpcNs& ns, const image::ImageSource& src) {
  for (const auto& s : ns.shm()) {
    const img::SysvPerm& p = s.perm();
    in_context(describe("shm", p), [&] {
      write_sysctl("kernel/shm_next_id", std::to_string(p.id()));
      int id;
      {
        ThreadIdsAs as(p.cuid(), p.cgid());
        id = shmget(p.key(), s.size(), IPC_CREAT | IPC_EXCL | static_cast<int>(p.mode() & 0777));
      }
      if (id < 0) throw_errno("shmget");
      if (id != p.id()) {
        shmctl(id, IPC_RMID, nullptr);
        throw Error(
            strfmt("shmget gave id %d (the slot is taken: restore into a fresh namespace)", id));
      }
      shmid_ds ds{};
      if (shmctl(id, IPC_STAT, &ds) != 0) throw_errno("shmctl(IPC_STAT)");
      ds.shm_perm.uid = p.uid();
      ds.shm_perm.gid = p.gid();
      ds.shm_perm.mode = static_cast<unsigned short>(p.mode());
      if (shmctl(id, IPC_SET, &ds) != 0) throw_errno("shmctl(IPC_SET)");
      if (s.pages()) {
        Attach a(id, 0);
        uint64_t len = round_pages(s.size());
        image::PageReader r(src, shm_pages_id(ns.ns_id(), p.id()));
        r.for_each([&](uint64_t off, const uint8_t* data, size_t n) {
          if (off + n * kPage > len) throw Error("pages beyond the segment's size");
          memcpy(a.get() + off, data, n * kPage);
        });
      }
      if (s.locked() && shmctl(id, SHM_LOCK, nullptr) != 0) throw_errno("shmctl(SHM_LOCK)");
    });
  }
}

void finish_shm(const img::IpcNs& ns) {
  for (const auto& s : ns.shm())
    if (s.dest() && shmctl(s.perm().id(), IPC_RMID, nullptr) != 0)
      throw_errno(describe("shm", s.perm()) + ": IPC_RMID");
}

}  // namespace ckpt::ipc
