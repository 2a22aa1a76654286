/*
 * wl_sysv - SysV IPC shared by two processes.
 *
 * The root makes, with a key of its own (0x69700000 | pid, logged as
 * "ipc-key 0x..." so the harness can remove them afterwards):
 *   - a shared memory segment of 3 pages, attached by the root and, through
 *     fork, by a child, which makes its third page read-only (its attach is
 *     then two VMAs: the segment's nattch is 3, and must stay 3);
 *   - a semaphore set: semaphore 0 is a mutex (semop without SEM_UNDO)
 *     around the counter in the segment;
 *   - a message queue: the child sends numbered messages (type 1 + n % 3),
 *     the root receives them and checks that none is lost or out of order.
 * The root bumps a counter in the segment under the mutex, the child echoes
 * it back; both check the segment's patterns, its key, size and nattch.
 *
 * In ckpt's own IPC namespace (the host's) the objects are not saved by a
 * dump: they stay, and the restored processes attach the same segment again.
 * In a container the whole namespace is saved and recreated.
 */
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

#include "wl.h"

#define PAGE 4096
#define SEG_SIZE (3 * PAGE)

struct seg {
	volatile uint64_t counter; /* root, under the mutex */
	volatile uint64_t echo;    /* child, under the mutex */
	volatile uint64_t words[PAGE / 8 - 2];
};

struct msg {
	long type;
	char text[64];
};

static int shm_id, sem_id, msg_id;
static key_t key;
static unsigned char *base;

static uint64_t word_pattern(size_t i) { return wl_mix(i + 0x5959); }
static unsigned char byte_pattern(size_t i) { return (unsigned char)(i * 13 + 7); }

static void sem_add(int delta)
{
	struct sembuf op = { 0, (short)delta, 0 };
	while (semop(sem_id, &op, 1) < 0)
		if (errno != EINTR)
			wl_fail("semop %d: %s", delta, strerror(errno));
}

static void check_patterns(void)
{
	struct seg *s = (struct seg *)base;
	for (size_t i = 0; i < PAGE / 8 - 2; i += 37)
		if (s->words[i] != word_pattern(i))
			wl_fail("segment word %zu changed", i);
	for (size_t i = PAGE; i < SEG_SIZE; i += 101)
		if (base[i] != byte_pattern(i))
			wl_fail("segment byte %zu is %u, expected %u", i, base[i], byte_pattern(i));
}

static void check_segment(void)
{
	struct shmid_ds ds;
	if (shmctl(shm_id, IPC_STAT, &ds) < 0)
		wl_fail("shmctl(IPC_STAT): %s", strerror(errno));
	if (ds.shm_perm.__key != key || ds.shm_segsz != SEG_SIZE)
		wl_fail("segment %d: key %#x size %zu", shm_id, ds.shm_perm.__key, (size_t)ds.shm_segsz);
	/* The root's attach, and the child's in two pieces. */
	if (ds.shm_nattch != 3)
		wl_fail("segment nattch is %lu, expected 3", (unsigned long)ds.shm_nattch);
	int v = semctl(sem_id, 0, GETVAL);
	if (v != 0 && v != 1)
		wl_fail("mutex semaphore is %d", v);
}

static void child_loop(pid_t parent)
{
	struct seg *s = (struct seg *)base;
	if (mprotect(base + 2 * PAGE, PAGE, PROT_READ) < 0)
		wl_fail("mprotect: %s", strerror(errno));
	uint64_t last = 0, seq = 0;
	for (;;) {
		sem_add(-1);
		uint64_t c = s->counter;
		if (c < last)
			wl_fail("counter went back from %llu to %llu", (unsigned long long)last,
				(unsigned long long)c);
		last = c;
		s->echo = c;
		sem_add(1);

		struct msg m;
		m.type = 1 + (long)(seq % 3);
		int len = snprintf(m.text, sizeof m.text, "msg %llu", (unsigned long long)seq);
		if (msgsnd(msg_id, &m, (size_t)len, IPC_NOWAIT) == 0)
			seq++;
		else if (errno != EAGAIN && errno != EINTR)
			wl_fail("msgsnd: %s", strerror(errno));

		check_patterns();
		wl_check_ppid(parent);
		wl_sleep_ms(10);
	}
}

int main(int argc, char **argv)
{
	wl_init(argc, argv, 0);
	key = (key_t)(0x69700000 | (getpid() & 0xfffff));
	/* Leftovers of an earlier run with the same pid. */
	int old;
	if ((old = shmget(key, 0, 0)) >= 0)
		shmctl(old, IPC_RMID, NULL);
	if ((old = semget(key, 0, 0)) >= 0)
		semctl(old, 0, IPC_RMID);
	if ((old = msgget(key, 0)) >= 0)
		msgctl(old, IPC_RMID, NULL);
	wl_log("ipc-key %#x", (unsigned)key);

	shm_id = shmget(key, SEG_SIZE, IPC_CREAT | IPC_EXCL | 0600);
	sem_id = semget(key, 1, IPC_CREAT | IPC_EXCL | 0600);
	msg_id = msgget(key, IPC_CREAT | IPC_EXCL | 0600);
	if (shm_id < 0 || sem_id < 0 || msg_id < 0)
		wl_fail("create IPC objects: %s", strerror(errno));
	if (semctl(sem_id, 0, SETVAL, 1) < 0)
		wl_fail("SETVAL: %s", strerror(errno));
	base = shmat(shm_id, NULL, 0);
	if (base == (void *)-1)
		wl_fail("shmat: %s", strerror(errno));
	struct seg *s = (struct seg *)base;
	for (size_t i = 0; i < PAGE / 8 - 2; i++)
		s->words[i] = word_pattern(i);
	for (size_t i = PAGE; i < SEG_SIZE; i++)
		base[i] = byte_pattern(i);

	pid_t parent = getpid();
	pid_t child = wl_fork();
	if (child == 0)
		child_loop(parent);
	/* The child's attach becomes two VMAs when it protects its last page. */
	double until = wl_now() + 10;
	for (;;) {
		struct shmid_ds ds;
		if (shmctl(shm_id, IPC_STAT, &ds) == 0 && ds.shm_nattch == 3)
			break;
		if (wl_now() > until)
			wl_fail("the child did not split its attach");
		wl_sleep_ms(5);
	}
	wl_log("ready");

	uint64_t n = 0, expect = 0;
	double last = 0;
	struct wl_clock clk;
	wl_clock_init(&clk);
	struct wl_stall echo_stall, msg_stall;
	wl_stall_init(&echo_stall, 0, 0);
	wl_stall_init(&msg_stall, 0, 0);
	for (;;) {
		double active = wl_clock_tick(&clk);
		sem_add(-1);
		s->counter = ++n;
		uint64_t echo = s->echo;
		sem_add(1);
		if (echo > n)
			wl_fail("echo %llu ahead of counter %llu", (unsigned long long)echo,
				(unsigned long long)n);

		struct msg m;
		for (;;) {
			ssize_t got = msgrcv(msg_id, &m, sizeof m.text - 1, 0, IPC_NOWAIT);
			if (got < 0) {
				if (errno == ENOMSG)
					break;
				if (errno == EINTR)
					continue;
				wl_fail("msgrcv: %s", strerror(errno));
			}
			m.text[got] = '\0';
			char want[64];
			snprintf(want, sizeof want, "msg %llu", (unsigned long long)expect);
			if (strcmp(m.text, want) != 0 || m.type != 1 + (long)(expect % 3))
				wl_fail("message '%s' type %ld, expected '%s' type %ld", m.text, m.type,
					want, 1 + (long)(expect % 3));
			expect++;
		}

		check_patterns();
		check_segment();
		if (wl_stalled(&echo_stall, echo, active))
			wl_fail("the child stopped echoing (echo %llu, counter %llu)",
				(unsigned long long)echo, (unsigned long long)n);
		if (wl_stalled(&msg_stall, expect, active))
			wl_fail("no message from the child since %llu", (unsigned long long)expect);
		wl_check_child(child);
		if (wl_progress_due(&last))
			wl_progress();
		wl_sleep_ms(20);
	}
}
