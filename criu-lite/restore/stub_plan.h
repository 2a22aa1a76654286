/* The shared memory of the restore stubs: what the controller (ckpt) and the
 * stubs read and write while the tree is forked and takes its files.
 *
 * One memfd, mapped shared by the controller and by every stub. It holds
 * the phase words and counters (the controller raises phase, each stub bumps
 * a counter when it is done with one, the last one wakes the controller), an
 * error slot per stub, and, for the freestanding stub (criu-lite/stub/), the
 * whole plan of the tree: every task with its pid, parent, session, group,
 * children, umask, cwd and fd table. It is a memfd and not an anonymous
 * mapping because the freestanding stub is exec'd: it maps the memfd again
 * from the number it is given on its command line.
 *
 * This header is C as well as C++: the freestanding stub is C compiled
 * without libc. Everything is fixed-size integers, offsets instead of
 * pointers (the mapping lands at different addresses), and the words the
 * two sides wait on are 32-bit futex words used with __atomic builtins
 * (std::atomic_ref on the C++ side).
 */
#pragma once

#include <stdint.h>

#define CKPT_STUB_MAGIC 0x706c6e31u /* "1nlp" */

/* Phases the controller raises (ckpt_stub_control.phase). */
enum {
  CKPT_STUB_PHASE_FORK = 0,    /* fork the tree, make sessions */
  CKPT_STUB_PHASE_LEADERS = 1, /* process group leaders make their groups */
  CKPT_STUB_PHASE_MEMBERS = 2, /* the other members join them */
  CKPT_STUB_PHASE_FILES = 3,   /* take the fds from the holder, then park */
};

struct ckpt_stub_control {
  /* Futex words. */
  int32_t root_go; /* on_root is done (-1: it failed) */
  int32_t root_ns; /* the root ran in_root */
  int32_t fork_go; /* before_fork is done (-1: it failed) */
  int32_t phase;
  int32_t created;
  int32_t grouped;
  int32_t joined;
  int32_t ready;
  int32_t failed; /* index + 1 of the first stub that failed */
  int32_t n_all;  /* tasks and zombies: how many arrive at each phase */
  /* The freestanding stub's plan (zero for copies of ckpt). */
  uint32_t magic;
  uint32_t n_tasks;
  uint32_t n_zombies;
  int32_t fault_after_files; /* CKPT_FAULT=restore-after-files */
  int32_t clone_retries;     /* clone3 calls of freestanding stubs that met a pid not free yet */
  int32_t groups_inherited;  /* every process is born in its group or leads it: the
                                group phases are skipped (leaders make theirs before
                                forking) */
  uint64_t size;             /* of the whole mapping */
  uint64_t slots_off;        /* struct ckpt_stub_slot[n_all] */
  uint64_t tasks_off;        /* struct ckpt_stub_task[n_tasks + n_zombies], zombies last */
  uint64_t children_off;     /* uint32_t[]: task indexes, ranges per task */
  uint64_t fds_off;          /* struct ckpt_stub_fd[]: ranges per task */
  uint64_t strings_off;      /* NUL-terminated strings (cwd) */
  /* The early root (restore/early_root.h): exec'd before its plan exists,
   * with a block of this header and one slot. It sets early_parked, waits
   * for plan_go (-1: give up), then maps the block again at its new size. */
  int32_t early;
  int32_t early_parked;
  int32_t plan_go;
  int32_t pad;
};

#define CKPT_STUB_ERROR_LEN 496

/* One per task and zombie: a stub that fails says why here. */
struct ckpt_stub_slot {
  int32_t state; /* 1: parked, 2: failed */
  int32_t err;   /* errno to append to error (0: none) */
  uint64_t vdso; /* where the freestanding stub's [vdso] is once it parked */
  char error[CKPT_STUB_ERROR_LEN];
};

/* The kernel's special mappings, in the order of ckpt_stub_task.special. */
enum { CKPT_STUB_VVAR, CKPT_STUB_VVAR_VCLOCK, CKPT_STUB_VDSO, CKPT_STUB_SPECIALS };

struct ckpt_stub_task {
  int32_t pid;  /* in the tree's innermost pid namespace */
  int32_t ppid; /* what getppid() must say once forked; -1 for the root */
  int32_t sid;  /* 0: unknown (not checked) */
  int32_t pgid;
  int32_t exit_signal; /* given to clone3 by the parent */
  int32_t zombie;      /* 1: exits with exit_status once grouped */
  int32_t exit_status; /* a wait status */
  uint32_t umask;
  uint32_t children, n_children; /* range of children_off: children first, then zombies */
  uint32_t fds, n_fds;           /* range of fds_off, ascending fd numbers */
  int32_t holder_fd;             /* where the holder's pidfd stays (files.h) */
  uint32_t cwd;                  /* offset in strings_off; 0: leave as is */
  /* Where the process had [vvar], [vvar_vclock] and [vdso] (start, end; 0
   * if it had none): the stub moves its own there where nothing is in the
   * way, and the rebuild finds them in place. */
  uint64_t special[CKPT_STUB_SPECIALS][2];
};

struct ckpt_stub_fd {
  int32_t fd;      /* number in the task */
  int32_t holder;  /* the holder's fd of the description (controller fills it
                      before CKPT_STUB_PHASE_FILES); -1: none */
  int32_t same_as; /* index in the task's range of an earlier fd of the same
                      description (dup it), -1 */
  int32_t cloexec;
  uint32_t desc; /* description id, for messages */
  uint32_t pad;
};

#ifdef __cplusplus
static_assert(sizeof(struct ckpt_stub_control) == 128, "layout shared with the C stub");
static_assert(sizeof(struct ckpt_stub_slot) == 512, "layout shared with the C stub");
static_assert(sizeof(struct ckpt_stub_task) == 104, "layout shared with the C stub");
static_assert(sizeof(struct ckpt_stub_fd) == 24, "layout shared with the C stub");
#else
_Static_assert(sizeof(struct ckpt_stub_control) == 128, "layout shared with the C++ side");
_Static_assert(sizeof(struct ckpt_stub_slot) == 512, "layout shared with the C++ side");
_Static_assert(sizeof(struct ckpt_stub_task) == 104, "layout shared with the C++ side");
_Static_assert(sizeof(struct ckpt_stub_fd) == 24, "layout shared with the C++ side");
#endif
