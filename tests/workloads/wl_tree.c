/*
 * wl_tree - a process tree with sessions and process groups.
 *
 *   root R (session and group of its own, as started by the harness)
 *   +- A   setsid(): leads a new session and group
 *   |  +- A1   in A's session and group
 *   +- B   setpgid(0, 0): leads a new group in R's session
 *   |  +- B1   forked into B's group (joins it)
 *   +- C   stays in R's group
 *   +- D   joins B's group (one it was not born in), once B made it
 *
 * Every process checks continuously that getppid(), getpgrp() and getsid(0)
 * are what setup made them, and that its children are alive and not zombies
 * (waitpid(WNOHANG), kill(pid, 0)).  Each beats a counter in a shared
 * anonymous mapping; the root checks every beat advances (5 s of active
 * time) and logs progress.
 */
#include "wl.h"

#include <stdatomic.h>
#include <sys/mman.h>

enum { R, A, A1, B, B1, C, D, NPROC };
static const char *const role_name[NPROC] = { "R", "A", "A1", "B", "B1", "C", "D" };

struct slot {
	_Atomic uint64_t beat;
	_Atomic int pid;
};

static struct slot *slots;
static struct wl_ready ready;

struct expect {
	pid_t ppid, pgid, sid;
	pid_t children[4];
	int nchildren;
};

static void check_self(int role, const struct expect *e)
{
	if (getppid() != e->ppid)
		wl_fail("%s: getppid() = %d, expected %d", role_name[role], (int)getppid(),
			(int)e->ppid);
	if (getpgrp() != e->pgid)
		wl_fail("%s: getpgrp() = %d, expected %d", role_name[role], (int)getpgrp(),
			(int)e->pgid);
	if (getsid(0) != e->sid)
		wl_fail("%s: getsid(0) = %d, expected %d", role_name[role], (int)getsid(0),
			(int)e->sid);
	if (atomic_load(&slots[role].pid) != getpid())
		wl_fail("%s: shared slot says pid %d, I am %d", role_name[role],
			atomic_load(&slots[role].pid), (int)getpid());
	for (int i = 0; i < e->nchildren; i++)
		wl_check_child(e->children[i]);
}

/* Loop of every non-root process. */
static void __attribute__((noreturn)) member_loop(int role, const struct expect *e)
{
	check_self(role, e);
	wl_ready_signal(&ready);
	for (;;) {
		atomic_fetch_add(&slots[role].beat, 1);
		check_self(role, e);
		wl_sleep_ms(50);
	}
}

/* Forks a child that runs fn(role); returns its pid in the parent. */
static pid_t spawn(void (*fn)(int), int role)
{
	pid_t pid = wl_fork();
	if (pid == 0) {
		atomic_store(&slots[role].pid, getpid());
		fn(role);
		_exit(1);
	}
	return pid;
}

/* A grandchild: stays where it was born (A's session, B's group). */
static void leaf(int role)
{
	struct expect e = { .ppid = getppid(), .pgid = getpgrp(), .sid = getsid(0) };
	member_loop(role, &e);
}

static void child_a(int role)
{
	if (setsid() < 0)
		wl_fail("A: setsid: %s", strerror(errno));
	struct expect e = { .ppid = getppid(), .pgid = getpid(), .sid = getpid() };
	e.children[e.nchildren++] = spawn(leaf, A1);
	member_loop(role, &e);
}

static void child_b(int role)
{
	if (setpgid(0, 0) < 0)
		wl_fail("B: setpgid: %s", strerror(errno));
	struct expect e = { .ppid = getppid(), .pgid = getpid(), .sid = getsid(0) };
	e.children[e.nchildren++] = spawn(leaf, B1);
	member_loop(role, &e);
}

static void child_c(int role)
{
	struct expect e = { .ppid = getppid(), .pgid = getpgrp(), .sid = getsid(0) };
	member_loop(role, &e);
}

static void child_d(int role)
{
	/* B's group exists once B ran its setpgid. */
	pid_t pb;
	double deadline = wl_now() + 15.0;
	while ((pb = atomic_load(&slots[B].pid)) == 0 || getpgid(pb) != pb) {
		if (wl_now() > deadline)
			wl_fail("D: B's group did not appear");
		wl_sleep_ms(5);
	}
	if (setpgid(0, pb) < 0)
		wl_fail("D: setpgid(0, %d): %s", (int)pb, strerror(errno));
	struct expect e = { .ppid = getppid(), .pgid = pb, .sid = getsid(0) };
	member_loop(role, &e);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv, 0);
	slots = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (slots == MAP_FAILED)
		wl_fail("mmap: %s", strerror(errno));
	atomic_store(&slots[R].pid, getpid());

	/* The root keeps whatever session/group it was started in. */
	struct expect e = { .pgid = getpgrp(), .sid = getsid(0) };
	wl_ready_init(&ready);
	e.children[e.nchildren++] = spawn(child_a, A);
	e.children[e.nchildren++] = spawn(child_b, B);
	e.children[e.nchildren++] = spawn(child_c, C);
	e.children[e.nchildren++] = spawn(child_d, D);
	wl_ready_wait(&ready, NPROC - 1);

	/* Cross-check the layout once everyone is set up. */
	pid_t pa = atomic_load(&slots[A].pid), pb = atomic_load(&slots[B].pid);
	if (getsid(pa) != pa || getpgid(pa) != pa)
		wl_fail("A %d: sid %d pgid %d", (int)pa, (int)getsid(pa), (int)getpgid(pa));
	if (getpgid(pb) != pb || getsid(pb) != e.sid)
		wl_fail("B %d: sid %d pgid %d", (int)pb, (int)getsid(pb), (int)getpgid(pb));
	pid_t pb1 = atomic_load(&slots[B1].pid);
	if (getpgid(pb1) != pb)
		wl_fail("B1 %d: pgid %d, expected B's group %d", (int)pb1, (int)getpgid(pb1), (int)pb);
	pid_t pd = atomic_load(&slots[D].pid);
	if (getpgid(pd) != pb)
		wl_fail("D %d: pgid %d, expected B's group %d", (int)pd, (int)getpgid(pd), (int)pb);
	wl_log("ready");

	struct wl_clock clk;
	struct wl_stall stall[NPROC];
	double last_progress = 0;
	wl_clock_init(&clk);
	for (int r = 0; r < NPROC; r++)
		wl_stall_init(&stall[r], atomic_load(&slots[r].beat), 0);
	for (;;) {
		double active = wl_clock_tick(&clk);
		atomic_fetch_add(&slots[R].beat, 1);
		if (getpgrp() != e.pgid || getsid(0) != e.sid)
			wl_fail("R: pgrp %d sid %d, expected %d %d", (int)getpgrp(), (int)getsid(0),
				(int)e.pgid, (int)e.sid);
		for (int i = 0; i < e.nchildren; i++)
			wl_check_child(e.children[i]);
		for (int r = 1; r < NPROC; r++)
			if (wl_stalled(&stall[r], atomic_load(&slots[r].beat), active))
				wl_fail("%s (pid %d) stopped beating for %.0f s", role_name[r],
					atomic_load(&slots[r].pid), WL_STALL_LIMIT);
		if (wl_progress_due(&last_progress))
			wl_progress();
		wl_sleep_ms(20);
	}
}
