/*
 * wl_shmfile - a file in /dev/shm mapped MAP_SHARED by several processes.
 *
 * The root creates /dev/shm/ckpt-wl-shmfile-<pid> (64 KiB), maps it shared
 * and forks NCHILD children; each child opens the file again by its path
 * and maps it itself (so the mappings are separate VMAs of one file, not
 * one inherited VMA). Every process bumps its own slot in the file; each
 * checks that everybody's slot keeps advancing (a mapping that came back
 * private would freeze the others' view), that a pattern written by the
 * root at setup is intact, and that what it reads through the mapping equals
 * what pread() reads from the file. The file stays (the harness removes
 * /dev/shm/ckpt-wl-*-ROOTPID when it cleans up).
 */
#include "wl.h"

#include <stdatomic.h>
#include <stddef.h>
#include <sys/mman.h>

enum { NCHILD = 3, NPROC = NCHILD + 1, SIZE = 64 * 1024 };

struct shared {
	_Atomic uint64_t beat[NPROC];
	_Atomic int pid[NPROC];
	uint32_t pattern[1024];
};

static char path[128];
static pid_t root_pid;
static struct wl_ready ready;

static struct shared *map_file(int *fd_out)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		wl_fail("open %s: %s", path, strerror(errno));
	void *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		wl_fail("mmap %s: %s", path, strerror(errno));
	*fd_out = fd;
	return p;
}

static void check(struct shared *s, int fd, int me, struct wl_stall *stall, double active)
{
	for (int i = 0; i < 1024; i++)
		if (s->pattern[i] != (uint32_t)i * 2654435761u)
			wl_fail("slot %d: pattern word %d is %#x", me, i, s->pattern[i]);
	uint64_t seen;
	if (wl_pread_all(fd, &seen, sizeof seen, (off_t)offsetof(struct shared, beat[me])) != 0)
		wl_fail("pread %s: %s", path, strerror(errno));
	uint64_t now = atomic_load(&s->beat[me]);
	if (seen != now)
		wl_fail("slot %d: file says beat %llu, the mapping %llu (not shared?)", me,
			(unsigned long long)seen, (unsigned long long)now);
	for (int r = 0; r < NPROC; r++)
		if (r != me && wl_stalled(&stall[r], atomic_load(&s->beat[r]), active))
			wl_fail("slot %d: slot %d (pid %d) stopped advancing for %.0f s", me, r,
				atomic_load(&s->pid[r]), WL_STALL_LIMIT);
}

static void __attribute__((noreturn)) child_main(int me)
{
	int fd;
	struct shared *s = map_file(&fd);
	atomic_store(&s->pid[me], getpid());
	wl_ready_signal(&ready);
	struct wl_clock clk;
	struct wl_stall stall[NPROC];
	wl_clock_init(&clk);
	for (int r = 0; r < NPROC; r++)
		wl_stall_init(&stall[r], atomic_load(&s->beat[r]), 0);
	for (;;) {
		double active = wl_clock_tick(&clk);
		atomic_fetch_add(&s->beat[me], 1);
		wl_check_ppid(root_pid);
		check(s, fd, me, stall, active);
		wl_sleep_ms(20);
	}
}

int main(int argc, char **argv)
{
	wl_init(argc, argv, 0);
	snprintf(path, sizeof path, "/dev/shm/ckpt-wl-shmfile-%d", (int)getpid());
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, SIZE) != 0)
		wl_fail("create %s: %s", path, strerror(errno));
	close(fd);
	struct shared *s = map_file(&fd);
	for (int i = 0; i < 1024; i++)
		s->pattern[i] = (uint32_t)i * 2654435761u;
	atomic_store(&s->pid[0], getpid());
	root_pid = getpid();
	wl_ready_init(&ready);
	pid_t kids[NCHILD];
	for (int i = 0; i < NCHILD; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			wl_fail("fork: %s", strerror(errno));
		if (kids[i] == 0)
			child_main(i + 1);
	}
	wl_ready_wait(&ready, NCHILD);
	wl_log("ready");

	struct wl_clock clk;
	struct wl_stall stall[NPROC];
	double last_progress = 0;
	wl_clock_init(&clk);
	for (int r = 0; r < NPROC; r++)
		wl_stall_init(&stall[r], atomic_load(&s->beat[r]), 0);
	for (;;) {
		double active = wl_clock_tick(&clk);
		atomic_fetch_add(&s->beat[0], 1);
		for (int i = 0; i < NCHILD; i++)
			wl_check_child(kids[i]);
		check(s, fd, 0, stall, active);
		if (wl_progress_due(&last_progress))
			wl_progress();
		wl_sleep_ms(20);
	}
}
