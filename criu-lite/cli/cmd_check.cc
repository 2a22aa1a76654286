#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "objects/tcp_accept_queue.h"
#include "objects/vma_flags.h"
#include "sys/cpu.h"
#include "sys/fd.h"
#include "sys/nftables.h"
#include "sys/tcp_repair.h"
#include "sys/uapi.h"

namespace ckpt::cli {

namespace {

struct Probe {
  const char* name;
  const char* used_for;
  bool required;
  std::function<bool()> test;
};

bool syscall_exists(long nr, long a1 = -1, long a2 = 0) {
  errno = 0;
  long r = syscall(nr, a1, a2, 0, 0, 0);
  return !(r < 0 && errno == ENOSYS);
}

bool pagemap_scan() {
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  UniqueFd owner(fd);
  static char page[4096] __attribute__((aligned(4096)));
  page[0] = 1;
  page_region r[4];
  pm_scan_arg a{};
  a.size = sizeof a;
  a.start = reinterpret_cast<uint64_t>(page);
  a.end = a.start + 4096;
  a.vec = reinterpret_cast<uint64_t>(r);
  a.vec_len = 4;
  a.category_anyof_mask = PAGE_IS_PRESENT;
  a.return_mask = PAGE_IS_PRESENT;
  return ioctl(fd, PAGEMAP_SCAN, &a) >= 0;
}

bool uffd_features(uint64_t want) {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
  if (fd < 0) fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd < 0) return false;
  UniqueFd owner(fd);
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = want;
  return ioctl(fd, UFFDIO_API, &api) == 0;
}

bool soft_dirty() {
  // Bit 55 of a pagemap entry, reset by "clear_refs 4". Without
  // CONFIG_MEM_SOFT_DIRTY the kernel accepts the 4 and does nothing, and
  // the bit never comes on: write a page after clearing and look.
  int cr = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
  int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  UniqueFd cr_owner(cr), pm_owner(pm);
  if (cr < 0 || pm < 0) return false;
  long page = sysconf(_SC_PAGESIZE);
  void* p = mmap(nullptr, static_cast<size_t>(page), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  auto* b = static_cast<volatile char*>(p);
  b[0] = 1;
  bool ok = false;
  if (write(cr, "4", 1) == 1) {
    b[0] = 2;
    uint64_t e = 0;
    off_t off =
        static_cast<off_t>(reinterpret_cast<uintptr_t>(p) / static_cast<uintptr_t>(page) * 8);
    ok = pread(pm, &e, sizeof e, off) == sizeof e && (e >> 55 & 1);
  }
  munmap(p, static_cast<size_t>(page));
  return ok;
}

bool exists(const char* p) {
  struct stat st;
  return stat(p, &st) == 0;
}

}  // namespace

int cmd_check(const Args& args) {
  Common common;
  po::options_description desc("check");
  add_common(desc, common);
  po::variables_map vm;
  if (!parse(args, desc, nullptr, vm, "check")) return 0;
  apply_common(common);

  std::vector<Probe> probes = {
      {"ptrace PTRACE_SEIZE/INTERRUPT", "dump, restore", true,
       [] {
         return true; /* every kernel ckpt runs on; checked on use */
       }},
      {"PTRACE_GET_RSEQ_CONFIGURATION", "dump, restore (rseq)", true,
       [] {
         utsname u{};
         uname(&u);
         int maj = 0, min = 0;
         sscanf(u.release, "%d.%d", &maj, &min);
         return maj > 5 || (maj == 5 && min >= 13);
       }},
      {"clone3 with set_tid", "restore (same pids)", true,
       [] { return syscall_exists(SYS_clone3, 0, 0); }},
      {"pidfd_open / pidfd_getfd", "dump (files)", true,
       [] { return syscall_exists(SYS_pidfd_getfd, -1, -1); }},
      {"kcmp", "dump (shared file descriptions)", true,
       [] { return syscall_exists(SYS_kcmp, getpid(), getpid()); }},
      {"process_vm_readv/writev", "dump, restore (pages)", true,
       [] { return syscall_exists(SYS_process_vm_readv, getpid(), 0); }},
      {"PAGEMAP_SCAN ioctl", "dump (which pages exist)", true, pagemap_scan},
      {"/proc/PID/map_files", "dump, restore (shared memory)", true,
       [] { return exists("/proc/self/map_files"); }},
      {"/proc/PID/task/TID/children", "dump (tree walk)", true,
       [] {
         return exists(("/proc/self/task/" + std::to_string(getpid()) + "/children").c_str());
       }},
      {"prctl PR_SET_MM_MAP", "restore (mm fields)", true,
       [] {
         unsigned size = 0;
         return prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE, &size, 0, 0) == 0 && size == 104;
       }},
      {"XSAVE", "dump, restore (FPU/AVX state)", true, [] { return cpu::xcr0() != 0; }},
      {"vDSO with a syscall instruction", "remote syscalls", true,
       [] {
         try {
           cpu::vdso_syscall_offset();
           return true;
         } catch (...) {
           return false;
         }
       }},
      {"executable memfds", "restore (freestanding stubs; else copies of ckpt, slower)", false,
       [] {
         // vm.memfd_noexec=2 forbids them; kernels before 6.3 lack the knob.
         std::string v;
         return !try_read_file("/proc/sys/vm/memfd_noexec", &v) || v.rfind("2", 0) != 0;
       }},
      {"VMA flags by BPF iterator", "dump (smaps instead: walks every page, ~10 ms per GiB)", false,
       [] { return vma_flags::prepare(); }},
      {"TCP_REPAIR", "dump/restore --tcp-established", false, tcp_repair::available},
      {"TCP accept queue refill (BPF)", "connections queued on a listener", false,
       [] { return acceptq::available(); }},
      {"nftables", "network lock (--tcp-established)", false,
       [] {
         try {
           return NftCtx().try_run("list tables\n", nullptr);
         } catch (...) {
           return false;
         }
       }},
      {"userfaultfd", "migrate (post-copy)", false, [] { return uffd_features(0); }},
      {"userfaultfd WP_ASYNC", "migrate, incremental dumps (dirty tracking)", false,
       [] { return uffd_features(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED); }},
      {"userfaultfd events", "migrate, restore --lazy-pages (fork, mremap, unmap followed)", false,
       [] {
         return uffd_features(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |
                              UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP);
       }},
      {"soft-dirty bits", "not used (userfaultfd WP_ASYNC instead)", false, soft_dirty},
      {"cgroup v2 (cgroup.freeze)", "containers (freezing)", false,
       [] {
         return exists("/sys/fs/cgroup/cgroup.controllers") ||
                exists("/sys/fs/cgroup/unified/cgroup.controllers");
       }},
      {"cgroup v1 freezer", "containers (freezing)", false,
       [] {
         return exists("/sys/fs/cgroup/freezer/freezer.state") || exists("/sys/fs/cgroup/freezer");
       }},
  };
  utsname u{};
  uname(&u);
  printf("kernel %s %s, XCR0 %#llx, XSAVE area %u bytes\n", u.release, u.machine,
         static_cast<unsigned long long>(cpu::xcr0()), cpu::xstate_size());
  bool ok = true;
  for (auto& p : probes) {
    bool have = p.test();
    if (!have && p.required) ok = false;
    printf("  %-34s %-4s %s%s\n", p.name, have ? "yes" : "no", p.used_for,
           !have && p.required ? "  (REQUIRED)" : "");
  }
  printf(ok ? "everything ckpt dump/restore needs is present\n"
            : "some required kernel features are missing\n");
  return ok ? 0 : 1;
}

}  // namespace ckpt::cli
