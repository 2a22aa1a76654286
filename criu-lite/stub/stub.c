/* The freestanding restore stub: a few pages of code, no libc, no heap.
 *
 * The root stub of a restore (a copy of ckpt, already in the tree's new
 * namespaces) executes this program from a memfd; it forks the rest of the
 * tree, so every stub is a copy of a process of a few pages instead of a
 * copy of ckpt (109 mappings, 3.5 MiB of anonymous memory): cheaper to
 * fork, no copy-on-write faults, nothing much to unmap when the controller
 * rebuilds its address space (docs/performance.md).
 *
 * It does what the C++ stubs (restore/stubs.cc) do for a plain tree, in the
 * same order and with the same phases: forks its children and zombies with
 * clone3(set_tid), makes its session, drops an inherited controlling
 * terminal, makes or joins its process group, sets umask and cwd, takes its
 * fds from the holder with pidfd_getfd, and parks in pause() for the
 * controller to seize. One thing more: it moves the kernel's special
 * mappings to the dumped addresses where it can, sparing the controller
 * three remote mremaps per process. The plan and the phase words are in the
 * memfd described by restore/stub_plan.h.
 *
 *   argv: ckpt-stub CONTROL_FD CONTROL_SIZE HOLDER_PIDFD
 *
 * The controller chooses these stubs only for trees that need nothing else
 * (StubTree in restore/stubs.cc says which ones do). A stub that fails
 * writes why in its slot and exits; the controller kills the rest.
 */
#include <asm/ioctls.h>
#include <asm/unistd.h>
#include <linux/auxvec.h>
#include <linux/errno.h>
#include <linux/fcntl.h>
#include <linux/futex.h>
#include <linux/mman.h>
#include <linux/prctl.h>
#include <linux/sched.h>
#include <linux/time_types.h>
#include <stddef.h>
#include <stdint.h>

#include "restore/stub_plan.h"

#define SIGKILL 9
#define SIGCHLD 17
#define SIG_DFL 0

/* ---- raw syscalls ---------------------------------------------------------------- */

static inline long sys6(long n, long a, long b, long c, long d, long e, long f) {
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  long ret;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}
#define SYS0(n) sys6(n, 0, 0, 0, 0, 0, 0)
#define SYS1(n, a) sys6(n, (long)(a), 0, 0, 0, 0, 0)
#define SYS2(n, a, b) sys6(n, (long)(a), (long)(b), 0, 0, 0, 0)
#define SYS3(n, a, b, c) sys6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define SYS4(n, a, b, c, d) sys6(n, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define SYS6(n, a, b, c, d, e, f) \
  sys6(n, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

/* The compiler may emit calls to these for struct copies and zeroing; as
 * string instructions, so that they are never compiled into calls to
 * themselves. */
void* memset(void* d, int c, size_t n) {
  void* r = d;
  __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
  return r;
}
void* memcpy(void* d, const void* s, size_t n) {
  void* r = d;
  __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
  return r;
}

/* ---- the shared memory ------------------------------------------------------------ */

static struct ckpt_stub_control* ctl;
static int self = -1; /* index of this stub in the plan */

static inline void* at(uint64_t off) {
  return (char*)ctl + off;
}
static inline struct ckpt_stub_task* task(uint32_t i) {
  return (struct ckpt_stub_task*)at(ctl->tasks_off) + i;
}
static inline struct ckpt_stub_slot* slot(uint32_t i) {
  return (struct ckpt_stub_slot*)at(ctl->slots_off) + i;
}

static int load(int32_t* w) {
  return __atomic_load_n(w, __ATOMIC_SEQ_CST);
}

static void futex_wait(int32_t* w, int val) {
  struct __kernel_timespec ts = {0, 50 * 1000 * 1000};
  SYS6(__NR_futex, w, FUTEX_WAIT, val, &ts, 0, 0);
}
static void futex_wake(int32_t* w) {
  SYS6(__NR_futex, w, FUTEX_WAKE, 0x7fffffff, 0, 0, 0);
}

static void wait_phase(int p) {
  int v;
  while ((v = load(&ctl->phase)) < p) futex_wait(&ctl->phase, v);
}

/* Only the last stub to arrive wakes the controller (as in stubs.cc). */
static void arrive(int32_t* c) {
  if (__atomic_add_fetch(c, 1, __ATOMIC_SEQ_CST) >= ctl->n_all) futex_wake(c);
}

/* ---- failing with a message --------------------------------------------------------- */

struct msg {
  char* p;
  char* end;
};
static void put(struct msg* m, const char* s) {
  while (*s && m->p < m->end) *m->p++ = *s++;
}
static void put_int(struct msg* m, long v) {
  char b[24];
  int n = 0;
  unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
  do b[n++] = (char)('0' + u % 10);
  while ((u /= 10) != 0);
  if (v < 0) b[n++] = '-';
  while (n && m->p < m->end) *m->p++ = b[--n];
}

static struct msg begin(void) {
  struct ckpt_stub_slot* s = slot((uint32_t)self);
  struct msg m = {s->error, s->error + sizeof s->error - 1};
  return m;
}

/* Ends the message begun with begin(); err is a negative errno or 0. */
__attribute__((noreturn)) static void die(struct msg* m, long err) {
  struct ckpt_stub_slot* s = slot((uint32_t)self);
  *m->p = 0;
  s->err = (int32_t)-err;
  __atomic_store_n(&s->state, 2, __ATOMIC_SEQ_CST);
  int32_t expected = 0;
  __atomic_compare_exchange_n(&ctl->failed, &expected, self + 1, 0, __ATOMIC_SEQ_CST,
                              __ATOMIC_SEQ_CST);
  futex_wake(&ctl->failed);
  futex_wake(&ctl->created);
  futex_wake(&ctl->grouped);
  futex_wake(&ctl->joined);
  futex_wake(&ctl->ready);
  for (;;) SYS1(__NR_exit_group, 1);
}

/* what, then "A N B M C" with the numbers. */
__attribute__((noreturn)) static void fail4(const char* what, long a, const char* b, long c,
                                            const char* d, long err) {
  struct msg m = begin();
  put(&m, what);
  if (b) {
    put_int(&m, a);
    put(&m, b);
    if (d) {
      put_int(&m, c);
      put(&m, d);
    }
  }
  die(&m, err);
}
#define fail(what, err) fail4(what, 0, 0, 0, 0, err)

/* ---- the stub ----------------------------------------------------------------------- */

/* ---- the kernel's special mappings -------------------------------------------------- */

/* Where this process has [vvar], [vvar_vclock] and [vdso] now, and every
 * other mapping it has (its ELF, stack, the control block). Read once, by
 * the root: the others are forks, with the same mappings, and the special
 * ones where their parent left them. */
struct range {
  uint64_t start, end;
};
static struct range special[CKPT_STUB_SPECIALS];
static struct range others[32];
static int n_others;
static int maps_known;
static uint64_t vdso_now; /* for the controller's remote syscalls */

static int ends_with(const char* s, const char* end, const char* suffix) {
  const char* q = suffix;
  while (*q) q++;
  long n = q - suffix;
  if (end - s < n) return 0;
  for (long i = 0; i < n; i++)
    if (end[-n + i] != suffix[i]) return 0;
  return 1;
}

static uint64_t hex(const char** p, const char* end) {
  uint64_t v = 0;
  for (; *p < end; (*p)++) {
    char c = **p;
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) break;
    v = v << 4 | (uint64_t)d;
  }
  return v;
}

static void read_maps(void) {
  char buf[4096];
  long fd = SYS3(__NR_open, "/proc/self/maps", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return;
  long n = 0, r;
  while (n < (long)sizeof buf && (r = SYS3(__NR_read, fd, buf + n, sizeof buf - n)) > 0) n += r;
  SYS1(__NR_close, fd);
  if (n <= 0 || n == (long)sizeof buf) return; /* unreadable, or more than a stub has */
  for (const char* line = buf; line < buf + n;) {
    const char* eol = line;
    while (eol < buf + n && *eol != '\n') eol++;
    const char* p = line;
    struct range rg;
    rg.start = hex(&p, eol);
    if (p >= eol || *p != '-') return;
    p++;
    rg.end = hex(&p, eol);
    if (ends_with(line, eol, "[vvar]")) {
      special[CKPT_STUB_VVAR] = rg;
    } else if (ends_with(line, eol, "[vvar_vclock]")) {
      special[CKPT_STUB_VVAR_VCLOCK] = rg;
    } else if (ends_with(line, eol, "[vdso]")) {
      special[CKPT_STUB_VDSO] = rg;
    } else if (!ends_with(line, eol, "[vsyscall]")) {
      if (n_others == (int)(sizeof others / sizeof others[0])) return;
      /* The stack may still grow, and keeps a guard gap below it. */
      if (ends_with(line, eol, "[stack]")) rg.start -= rg.start > (2u << 20) ? (2u << 20) : 0;
      others[n_others++] = rg;
    }
    line = eol + 1;
  }
  maps_known = special[CKPT_STUB_VDSO].end != 0;
}

static int overlaps(uint64_t s, uint64_t e, struct range r) {
  return s < r.end && r.start < e;
}

/* Moves the special mappings to where the dumped process had them, if all
 * of them can go straight there: the same ones, the same sizes, nothing of
 * ours in the way. Otherwise they stay, and the controller moves them while
 * it rebuilds the address space (objects/mm.cc), as it always did. */
static void move_specials(const struct ckpt_stub_task* t) {
  if (!maps_known) return;
  for (int k = 0; k < CKPT_STUB_SPECIALS; k++) {
    uint64_t s = t->special[k][0], e = t->special[k][1];
    if ((special[k].end != 0) != (e != 0)) return;
    if (!e || (s == special[k].start && e == special[k].end)) continue;
    if (e - s != special[k].end - special[k].start || s % 4096 != 0) return;
    for (int i = 0; i < n_others; i++)
      if (overlaps(s, e, others[i])) return;
    for (int j = 0; j < CKPT_STUB_SPECIALS; j++)
      if (special[j].end && overlaps(s, e, special[j])) return;
  }
  for (int k = 0; k < CKPT_STUB_SPECIALS; k++) {
    uint64_t s = t->special[k][0], e = t->special[k][1];
    if (!e || s == special[k].start) continue;
    long r = SYS6(__NR_mremap, special[k].start, e - s, e - s, MREMAP_MAYMOVE | MREMAP_FIXED, s, 0);
    if (r < 0) return; /* where it was: the controller sees it in /proc */
    special[k].start = s;
    special[k].end = e;
  }
  vdso_now = special[CKPT_STUB_VDSO].start;
}

/* clone3 with the old pid. A pid freed a moment ago may still be taken
 * (stubs.cc): EEXIST is retried for up to two seconds. */
static long clone_with_pid(int32_t pid, int exit_signal) {
  struct clone_args args;
  memset(&args, 0, sizeof args);
  args.exit_signal = (uint64_t)exit_signal;
  args.set_tid = (uint64_t)(uintptr_t)&pid;
  args.set_tid_size = 1;
  for (int tries = 0;; tries++) {
    long r = SYS2(__NR_clone3, &args, sizeof args);
    if (r != -EEXIST || tries >= 2000) return r;
    __atomic_add_fetch(&ctl->clone_retries, 1, __ATOMIC_SEQ_CST);
    struct __kernel_timespec ms = {0, 1000 * 1000};
    SYS2(__NR_nanosleep, &ms, 0);
  }
}

/* Before its children are forked. With groups_inherited, a group leader
 * makes its group now, so that its children are born in it, and nobody
 * waits for the group phases (the controller found no process that has to
 * join a group it did not inherit). */
static void early_group(const struct ckpt_stub_task* t) {
  if (!ctl->groups_inherited || t->pgid != t->pid || SYS0(__NR_getpgrp) == t->pid) return;
  long r = SYS2(__NR_setpgid, 0, 0);
  if (r < 0) fail("setpgid (leader)", r);
}

/* Leaders make their groups once every process exists, then the members
 * join them (the order of the C++ stubs, restore/stubs.cc). */
static void make_groups(const struct ckpt_stub_task* t) {
  arrive(&ctl->created);
  wait_phase(CKPT_STUB_PHASE_LEADERS);
  int32_t pid = t->pid;
  if (t->pgid == pid && SYS0(__NR_getpgrp) != pid) {
    long r = SYS2(__NR_setpgid, 0, 0);
    if (r < 0) fail("setpgid (leader)", r);
  }
  arrive(&ctl->grouped);
  wait_phase(CKPT_STUB_PHASE_MEMBERS);
  if (t->pgid != pid && SYS0(__NR_getpgrp) != t->pgid) {
    long r = SYS2(__NR_setpgid, 0, t->pgid);
    if (r < 0) fail4("join process group ", t->pgid, "", 0, 0, r);
  }
}

__attribute__((noreturn)) static void zombie(const struct ckpt_stub_task* t) {
  if (t->sid == t->pid) {
    long r = SYS0(__NR_setsid);
    if (r < 0) fail("setsid", r);
  }
  early_group(t);
  if (ctl->groups_inherited) {
    arrive(&ctl->created);
  } else {
    make_groups(t);
    arrive(&ctl->joined);
  }
  arrive(&ctl->ready);
  /* Exit the way the process did: its parent reads the same status. */
  int st = t->exit_status;
  int sig = st & 0x7f;
  if (sig != 0 && sig != 0x7f) {
    struct {
      uint64_t handler, flags, restorer, mask;
    } dfl = {SIG_DFL, 0, 0, 0};
    SYS4(__NR_rt_sigaction, sig, &dfl, 0, 8);
    uint64_t none = 0;
    SYS4(__NR_rt_sigprocmask, 2 /* SIG_SETMASK */, &none, 0, 8);
    SYS2(__NR_prctl, PR_SET_DUMPABLE, 0); /* no core file for "core dumped" */
    SYS2(__NR_kill, SYS0(__NR_getpid), sig);
  }
  for (;;) SYS1(__NR_exit_group, (st >> 8) & 0xff);
}

/* Takes the task's fds from the holder (files.h: FileTable::install does the
 * same for the C++ stubs). Everything inherited goes first, except the
 * holder's pidfd, moved above every number the table uses; fds are placed
 * in ascending order, so a temporary fd never lands on one already placed. */
static void install_fds(const struct ckpt_stub_task* t, int holder) {
  int h = t->holder_fd;
  if (holder != h) {
    long r = SYS3(__NR_dup3, holder, h, O_CLOEXEC);
    if (r < 0) fail("move the holder's pidfd", r);
  }
  if (h > 0) SYS3(__NR_close_range, 0, h - 1, 0);
  SYS3(__NR_close_range, h + 1, ~0U, 0);
  struct ckpt_stub_fd* fds = (struct ckpt_stub_fd*)at(ctl->fds_off) + t->fds;
  for (uint32_t i = 0; i < t->n_fds; i++) {
    const struct ckpt_stub_fd* e = &fds[i];
    /* Every lower number is taken or free for good: a new fd lands on the
     * target itself when the table has no gaps below it. pidfd_getfd and
     * F_DUPFD_CLOEXEC give close-on-exec fds. */
    long tmp;
    if (e->same_as >= 0) {
      tmp = SYS3(__NR_fcntl, fds[e->same_as].fd, e->cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, e->fd);
      if (tmp < 0) fail4("fd ", e->fd, ": dup", 0, 0, tmp);
      if (tmp == e->fd) continue;
    } else if (e->holder >= 0) {
      tmp = SYS3(__NR_pidfd_getfd, h, e->holder, 0);
      if (tmp < 0) fail4("fd ", e->fd, ": take file description ", e->desc, " (pidfd_getfd)", tmp);
    } else {
      fail4("fd ", e->fd, ": file description ", e->desc, " was not opened by ckpt", 0);
    }
    if (tmp != e->fd) {
      long r = SYS3(__NR_dup3, tmp, e->fd, e->cloexec ? O_CLOEXEC : 0);
      SYS1(__NR_close, tmp);
      if (r < 0) fail4("fd ", e->fd, ": dup3", 0, 0, r);
    } else if (!e->cloexec) {
      long r = SYS3(__NR_fcntl, e->fd, F_SETFD, 0);
      if (r < 0) fail4("fd ", e->fd, ": clear close-on-exec", 0, 0, r);
    }
  }
}

static void check_session(const struct ckpt_stub_task* t) {
  if (t->sid != 0 && SYS1(__NR_getsid, 0) != t->sid)
    fail4("ended up in session ", SYS1(__NR_getsid, 0), " instead of ", t->sid,
          " (session layouts where a process is in neither its own nor its parent's "
          "session are not supported)",
          0);
}

__attribute__((noreturn)) static void run(int idx, int holder) {
again : {
  self = idx;
  const struct ckpt_stub_task* t = task((uint32_t)idx);
  if (idx != 0) {
    /* If our parent dies, so do we: a failed restore leaves nothing. */
    SYS2(__NR_prctl, PR_SET_PDEATHSIG, SIGKILL);
    if (SYS0(__NR_getppid) != t->ppid) fail("parent died", 0);
  }
  if (t->zombie) zombie(t);
  /* Before the children are forked: they inherit the places. */
  move_specials(t);
  __atomic_store_n(&slot((uint32_t)idx)->vdso, vdso_now, __ATOMIC_SEQ_CST);
  int32_t pid = t->pid;
  if (t->sid == pid && SYS1(__NR_getsid, 0) != pid) {
    long r = SYS0(__NR_setsid);
    if (r < 0) fail("setsid", r);
  }
  early_group(t);
  const uint32_t* kids = (const uint32_t*)at(ctl->children_off) + t->children;
  for (uint32_t i = 0; i < t->n_children; i++) {
    const struct ckpt_stub_task* c = task(kids[i]);
    long r = clone_with_pid(c->pid, c->exit_signal);
    if (r == 0) {
      idx = (int)kids[i];
      goto again;
    }
    if (r < 0) fail4("create child pid ", c->pid, " (clone3 set_tid)", 0, 0, r);
  }
  /* No session of this tree had a controlling terminal (or the C++ stubs
   * would run): one inherited from ckpt goes. TIOCNOTTY in a session
   * leader would hang up its session, and a leader has none anyway. */
  if (SYS1(__NR_getsid, 0) != SYS0(__NR_getpid)) {
    long tty = SYS3(__NR_open, "/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC, 0);
    if (tty >= 0) {
      long r = SYS3(__NR_ioctl, tty, TIOCNOTTY, 0);
      SYS1(__NR_close, tty);
      if (r < 0) fail("give up the inherited terminal (TIOCNOTTY)", r);
    }
  }
  if (ctl->groups_inherited) {
    check_session(t);
    arrive(&ctl->created);
  } else {
    make_groups(t);
    check_session(t);
    arrive(&ctl->joined);
  }

  /* The holder opens every description meanwhile. */
  wait_phase(CKPT_STUB_PHASE_FILES);
  SYS1(__NR_umask, t->umask);
  if (t->cwd) {
    const char* cwd = (const char*)at(ctl->strings_off) + t->cwd;
    long r = SYS1(__NR_chdir, cwd);
    if (r < 0) {
      struct msg m = begin();
      put(&m, "chdir ");
      put(&m, cwd);
      die(&m, r);
    }
  }
  install_fds(t, holder);
  if (ctl->fault_after_files && idx == 0) fail("injected fault restore-after-files", 0);
  __atomic_store_n(&slot((uint32_t)idx)->state, 1, __ATOMIC_SEQ_CST);
  arrive(&ctl->ready);
  /* From here the controller takes over with ptrace. */
  for (;;) SYS0(__NR_pause);
}
}

static long parse(const char* s) {
  long v = 0;
  if (!s || !*s) return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    v = v * 10 + (*s - '0');
  }
  return v;
}

__attribute__((noreturn, used)) void stub_start(long* sp) {
  long argc = sp[0];
  char** argv = (char**)(sp + 1);
  char** envp = argv + argc + 1;
  while (*envp) envp++;
  uint64_t* auxv = (uint64_t*)(envp + 1);
  uint64_t vdso = 0;
  for (; auxv[0] != AT_NULL; auxv += 2)
    if (auxv[0] == AT_SYSINFO_EHDR) vdso = auxv[1];
  long fd = argc > 3 ? parse(argv[1]) : -1;
  long size = argc > 3 ? parse(argv[2]) : -1;
  long holder = argc > 3 ? parse(argv[3]) : -1;
  if (fd < 0 || size <= 0 || holder < 0) SYS1(__NR_exit_group, 127);
  long p = SYS6(__NR_mmap, 0, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p < 0 && p > -4096) SYS1(__NR_exit_group, 126);
  ctl = (struct ckpt_stub_control*)p;
  SYS1(__NR_close, fd);
  self = 0;
  if (ctl->early) {
    /* Made before the images came (restore/early_root.h): here and
     * waiting. The controller writes the plan into the grown memfd. */
    __atomic_store_n(&ctl->early_parked, 1, __ATOMIC_SEQ_CST);
    futex_wake(&ctl->early_parked);
    int32_t v;
    while ((v = load(&ctl->plan_go)) == 0) futex_wait(&ctl->plan_go, 0);
    if (v < 0) SYS1(__NR_exit_group, 1);
    uint64_t want = ctl->size;
    if (want > (uint64_t)size) {
      p = SYS6(__NR_mremap, p, size, want, MREMAP_MAYMOVE, 0, 0);
      if (p < 0 && p > -4096) fail("map the restore plan at its full size", p);
      ctl = (struct ckpt_stub_control*)p;
    }
  }
  if (ctl->magic != CKPT_STUB_MAGIC) fail("the restore plan has a bad magic number", 0);
  /* The controller drives remote syscalls through our [vdso]: where this
   * execve put it, not where ckpt has its own, unless we move it. */
  vdso_now = vdso;
  read_maps();
  run(0, (int)holder);
}

/* The kernel enters here with the stack holding argc, argv, envp, auxv. */
__asm__(
    ".text\n"
    ".global _start\n"
    "_start:\n"
    "  xor %rbp, %rbp\n"
    "  mov %rsp, %rdi\n"
    "  and $-16, %rsp\n"
    "  call stub_start\n"
    "  hlt\n");
