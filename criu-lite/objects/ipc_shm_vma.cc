#include "objects/ipc_shm_vma.h"

#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <cstdlib>

#include "sys/error.h"

namespace ckpt {

namespace {

constexpr uint64_t kPage = 4096;
constexpr size_t kStatOff = 8192;  // in the scratch page, clear of paths at 4096

std::string range_name(uint64_t start, uint64_t end) {
  return strfmt("%llx-%llx", static_cast<unsigned long long>(start),
                static_cast<unsigned long long>(end));
}

}  // namespace

void describe_sysv_shm_vma(pid_t pid, const proc::Vma& v, img::Vma* out) {
  out->set_kind(img::VMA_SYSV_SHM);
  out->set_path(v.path);
  out->set_sysv_shm_id(static_cast<int32_t>(v.inode));
  out->set_sysv_shm_key(static_cast<int32_t>(strtoul(v.path.c_str() + 5, nullptr, 16)));
  struct stat st {};
  std::string mf = strfmt("/proc/%d/map_files/%s", pid, range_name(v.start, v.end).c_str());
  if (stat(mf.c_str(), &st) != 0) throw_errno("stat " + mf);
  out->set_shmem_size(static_cast<uint64_t>(st.st_size));
}

void restore_sysv_shm_vma(RemoteThread& rt, const RemoteScratch& scratch, pid_t pid,
                          const img::Vma& v, const std::function<uint64_t(uint64_t)>& free_range) {
  int id = v.sysv_shm_id();
  unsigned key = static_cast<unsigned>(v.sysv_shm_key());
  std::string what = strfmt("SysV shm segment id %d (key %#x)", id, key);
  in_context(what, [&] {
    long r = rt.call(__NR_shmctl, static_cast<uint64_t>(id), IPC_STAT, scratch.addr() + kStatOff);
    if (r == -EINVAL || r == -EIDRM)
      throw Error(
          "not in the restoring process's IPC namespace (segments of ckpt's own namespace "
          "are not recreated: it must still exist)");
    if (r < 0) throw Error("shmctl(IPC_STAT)", static_cast<int>(-r));
    shmid_ds ds{};
    scratch.read(pid, kStatOff, &ds, sizeof ds);
    if (static_cast<unsigned>(ds.shm_perm.__key) != key || ds.shm_segsz != v.shmem_size())
      throw Error(strfmt("id %d is now another segment (key %#x, %llu bytes; was %llu bytes)", id,
                         static_cast<unsigned>(ds.shm_perm.__key),
                         static_cast<unsigned long long>(ds.shm_segsz),
                         static_cast<unsigned long long>(v.shmem_size())));
    bool exec = v.prot() & PROT_EXEC;
    uint64_t flags = (v.may_write() ? 0 : SHM_RDONLY) | (exec ? SHM_EXEC : 0);
    uint64_t seg = (v.shmem_size() + kPage - 1) / kPage * kPage;
    uint64_t len = v.end() - v.start();
    if (v.pgoff() + len > seg) throw Error("the mapping is larger than the segment");
    if (v.pgoff() == 0 && len == seg) {
      uint64_t at = rt.check("shmat", __NR_shmat, static_cast<uint64_t>(id), v.start(), flags);
      if (at != v.start()) throw Error(strfmt("shmat attached at %llx", (unsigned long long)at));
    } else {
      uint64_t at =
          rt.check("shmat", __NR_shmat, static_cast<uint64_t>(id), free_range(seg), flags);
      rt.check("mremap part of the attach", __NR_mremap, at + v.pgoff(), len, len,
               MREMAP_MAYMOVE | MREMAP_FIXED, v.start());
      if (v.pgoff()) rt.check("munmap", __NR_munmap, at, v.pgoff());
      if (v.pgoff() + len < seg)
        rt.check("munmap", __NR_munmap, at + v.pgoff() + len, seg - v.pgoff() - len);
    }
    uint32_t prot = PROT_READ | (v.may_write() ? PROT_WRITE : 0) | (exec ? PROT_EXEC : 0);
    if (v.prot() != prot) rt.check("mprotect", __NR_mprotect, v.start(), len, v.prot());
  });
}

}  // namespace ckpt
