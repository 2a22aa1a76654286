// Kernel interfaces newer than Debian 12's headers (linux-libc-dev 6.1).
// Every definition is guarded and names the kernel that added it, so this
// header shrinks to nothing as the distribution's headers catch up.
#pragma once

#include <linux/fs.h>
#include <linux/types.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

// --- PAGEMAP_SCAN ioctl on /proc/PID/pagemap: Linux 6.7 -------------------
#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)

struct page_region {
  __u64 start;
  __u64 end;
  __u64 categories;
};

#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)

struct pm_scan_arg {
  __u64 size;
  __u64 flags;
  __u64 start;
  __u64 end;
  __u64 walk_end;
  __u64 vec;
  __u64 vec_len;
  __u64 max_pages;
  __u64 category_inverted;
  __u64 category_mask;
  __u64 category_anyof_mask;
  __u64 return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

// --- userfaultfd write-protect in async mode: Linux 6.7 -----------------
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif

// --- madvise(MADV_POPULATE_WRITE): Linux 5.14 -----------------------------
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

// --- memfd_create(MFD_EXEC): Linux 6.3; without it a memfd may be made
// non-executable by vm.memfd_noexec -----------------------------------------
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

// --- PTRACE_GET_RSEQ_CONFIGURATION's result: Linux 5.13 (the request is
// in glibc's <sys/ptrace.h>; the struct is only in linux/ptrace.h, which
// clashes with glibc's header) -------------------------------------------
struct ckpt_rseq_configuration {
  __u64 rseq_abi_pointer;
  __u32 rseq_abi_size;
  __u32 signature;
  __u32 flags;
  __u32 pad;
};

// --- prctl(PR_SET_MM, PR_SET_MM_MAP) argument (linux/prctl.h, 3.18) -------
struct ckpt_prctl_mm_map {
  __u64 start_code;
  __u64 end_code;
  __u64 start_data;
  __u64 end_data;
  __u64 start_brk;
  __u64 brk;
  __u64 start_stack;
  __u64 arg_start;
  __u64 arg_end;
  __u64 env_start;
  __u64 env_end;
  __u64 auxv;
  __u32 auxv_size;
  __u32 exe_fd;
};
static_assert(sizeof(ckpt_prctl_mm_map) == 104, "PR_SET_MM_MAP takes 104 bytes");

// --- clone3 argument with set_tid (linux/sched.h, 5.5); glibc has no wrapper
struct ckpt_clone_args {
  __u64 flags;
  __u64 pidfd;
  __u64 child_tid;
  __u64 parent_tid;
  __u64 exit_signal;
  __u64 stack;
  __u64 stack_size;
  __u64 tls;
  __u64 set_tid;
  __u64 set_tid_size;
  __u64 cgroup;
};

// --- prctl(PR_TIMER_CREATE_RESTORE_IDS): Linux 6.15. While on, timer_create
// takes the id to use from *timerid (0..INT_MAX; EEXIST if taken) ---------
#ifndef PR_TIMER_CREATE_RESTORE_IDS
#define PR_TIMER_CREATE_RESTORE_IDS 77
#define PR_TIMER_CREATE_RESTORE_IDS_OFF 0
#define PR_TIMER_CREATE_RESTORE_IDS_ON 1
#define PR_TIMER_CREATE_RESTORE_IDS_GET 2
#endif

// --- sched_getattr/sched_setattr argument (linux/sched/types.h, 3.14; the
// utilization clamps are 5.3); glibc before 2.41 has no struct ---------------
struct ckpt_sched_attr {
  __u32 size;
  __u32 sched_policy;
  __u64 sched_flags;
  __s32 sched_nice;
  __u32 sched_priority;
  __u64 sched_runtime;
  __u64 sched_deadline;
  __u64 sched_period;
  __u32 sched_util_min;
  __u32 sched_util_max;
};
#ifndef SCHED_FLAG_RESET_ON_FORK
#define SCHED_FLAG_RESET_ON_FORK 0x01
#endif
#ifndef SCHED_DEADLINE
#define SCHED_DEADLINE 6
#endif

// --- BPF (linux/bpf.h): tcx attach points, Linux 6.6. A tcx program returns
// TCX_NEXT to hand the packet to the next program, TCX_PASS to let it in. --
#define CKPT_BPF_TCX_INGRESS 46  // enum bpf_attach_type: after BPF_NETFILTER (6.4)
#ifndef TCX_NEXT
#define TCX_NEXT (-1)
#define TCX_PASS 0
#endif
#ifndef BPF_PSEUDO_KFUNC_CALL  // 5.13
#define BPF_PSEUDO_KFUNC_CALL 2
#endif

// --- The kfunc bpf_sk_assign_tcp_reqsk's attributes (include/net/tcp.h,
// Linux 6.9; not in any uapi header: its size is checked by the kfunc) ------
struct ckpt_bpf_tcp_req_attrs {
  __u32 rcv_tsval;  // the peer's timestamp: becomes ts_recent
  __u32 rcv_tsecr;  // our timestamp as the peer echoes it: sets the offset
  __u16 mss;
  __u8 rcv_wscale;
  __u8 snd_wscale;
  __u8 ecn_ok;
  __u8 wscale_ok;
  __u8 sack_ok;
  __u8 tstamp_ok;
  __u8 usec_ts_ok;
  __u8 reserved[3];
};
static_assert(sizeof(ckpt_bpf_tcp_req_attrs) == 20, "bpf_tcp_req_attrs is 20 bytes");
