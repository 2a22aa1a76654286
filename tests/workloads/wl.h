/*
 * wl.h - shared helpers for the e2e workloads (header-only).
 *
 * Protocol every workload follows (the harness tests/e2e/ckpt_e2e.py relies
 * on it):
 *   --log FILE   append-only log, one line per write(2) on an O_APPEND fd, so
 *                several processes of one tree can share it;
 *   --dir DIR    scratch directory for files the workload creates.
 * Lines:
 *   start <pid>          once, when the program starts (a restart shows up as
 *                        a second `start`);
 *   ready                once per tree, by the root, after every process of
 *                        the tree is set up;
 *   progress <N>         by the root, N = 1, 2, 3, ... at least every 200 ms;
 *   FAIL <pid>: <what>   a violated invariant; the process then exits 1.
 * After `start` nothing is written to stdout/stderr.
 *
 * Checkpointing freezes the tree for seconds and restored syscalls may return
 * EINTR: every wait here retries EINTR, and time-based watchdogs use an
 * "active" clock that ignores gaps longer than a second (a frozen tree sees
 * CLOCK_MONOTONIC jump).
 */
#ifndef CKPT_TESTS_WORKLOADS_WL_H
#define CKPT_TESTS_WORKLOADS_WL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A watchdog fires when a value has not changed for this much active time. */
#define WL_STALL_LIMIT 5.0
/* The root logs progress this often (the contract says at most 200 ms). */
#define WL_PROGRESS_PERIOD 0.1

static int wl_log_fd = -1;
static const char *wl_log_path;
static const char *wl_dir;
static uint64_t wl_progress_n;

/* ---- I/O that survives EINTR ------------------------------------------ */

/* Writes all of buf; returns 0, or -1 with errno set. */
static inline int wl_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads exactly len bytes; returns 0, 1 on EOF, or -1 with errno set. */
static inline int wl_read_all(int fd, void *buf, size_t len)
{
	char *p = buf;
	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			return 1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* pread of exactly len bytes at off; returns 0, 1 on EOF, or -1 with errno set. */
static inline int wl_pread_all(int fd, void *buf, size_t len, off_t off)
{
	char *p = buf;
	while (len > 0) {
		ssize_t n = pread(fd, p, len, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			return 1;
		p += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Sleeps up to ms milliseconds; a signal may cut it short, which is fine. */
static inline void wl_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* ---- log ---------------------------------------------------------------- */

/* Appends one line to the log with a single write(2). */
static inline void __attribute__((format(printf, 1, 2))) wl_log(const char *fmt, ...)
{
	char buf[512];
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	wl_write_all(wl_log_fd, buf, (size_t)n);
	errno = saved;
}

/* Logs "FAIL <pid>: <what>" and exits the calling process with status 1. */
static inline void __attribute__((format(printf, 1, 2), noreturn)) wl_fail(const char *fmt, ...)
{
	char what[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	wl_log("FAIL %d: %s", (int)getpid(), what);
	_exit(1);
}

/* Logs the next "progress N" line (root only). */
static inline void wl_progress(void)
{
	wl_progress_n++;
	wl_log("progress %llu", (unsigned long long)wl_progress_n);
}

static inline void wl_usage(const char *prog)
{
	fprintf(stderr, "usage: %s --log FILE [--dir DIR]\n", prog);
	exit(2);
}

/*
 * Parses --log/--dir, opens the log and logs `start <pid>`.  With need_dir,
 * --dir is mandatory and must be a directory.
 */
static inline void wl_init(int argc, char **argv, int need_dir)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--log") == 0 && i + 1 < argc)
			wl_log_path = argv[++i];
		else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			wl_dir = argv[++i];
		else
			wl_usage(argv[0]);
	}
	if (!wl_log_path || (need_dir && !wl_dir))
		wl_usage(argv[0]);
	wl_log_fd = open(wl_log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (wl_log_fd < 0) {
		fprintf(stderr, "%s: open %s: %s\n", argv[0], wl_log_path, strerror(errno));
		exit(2);
	}
	wl_log("start %d", (int)getpid());
}

/* ---- time that ignores freezes ------------------------------------------ */

static inline double wl_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Active time: CLOCK_MONOTONIC minus every gap longer than a second between
 * two ticks.  Call wl_clock_tick() often (each loop iteration).
 */
struct wl_clock {
	double last;
	double active;
};

static inline void wl_clock_init(struct wl_clock *c)
{
	c->last = wl_now();
	c->active = 0;
}

static inline double wl_clock_tick(struct wl_clock *c)
{
	double now = wl_now();
	double d = now - c->last;
	c->last = now;
	if (d > 0 && d <= 1.0)
		c->active += d;
	return c->active;
}

/* Watchdog: a value that must change within WL_STALL_LIMIT of active time. */
struct wl_stall {
	uint64_t value;
	double since;
};

static inline void wl_stall_init(struct wl_stall *s, uint64_t value, double active)
{
	s->value = value;
	s->since = active;
}

/* Returns 1 if value has not changed for longer than the limit. */
static inline int wl_stalled(struct wl_stall *s, uint64_t value, double active)
{
	if (value != s->value) {
		s->value = value;
		s->since = active;
		return 0;
	}
	return active - s->since > WL_STALL_LIMIT;
}

/* Root-side progress pacing: returns 1 when it is time to log progress. */
static inline int wl_progress_due(double *last)
{
	double now = wl_now();
	if (now - *last >= WL_PROGRESS_PERIOD) {
		*last = now;
		return 1;
	}
	return 0;
}

/* ---- process tree helpers ------------------------------------------------- */

static inline void wl_check_ppid(pid_t expected)
{
	pid_t p = getppid();
	if (p != expected)
		wl_fail("parent changed: getppid() = %d, expected %d", (int)p, (int)expected);
}

/* A child must be alive and not a zombie (waitpid(WNOHANG) must say 0). */
static inline void wl_check_child(pid_t child)
{
	int status;
	pid_t r;
	do
		r = waitpid(child, &status, WNOHANG);
	while (r < 0 && errno == EINTR);
	if (r == child)
		wl_fail("child %d exited (wait status 0x%x)", (int)child, status);
	if (r < 0)
		wl_fail("waitpid(%d): %s", (int)child, strerror(errno));
	if (kill(child, 0) < 0)
		wl_fail("kill(%d, 0): %s", (int)child, strerror(errno));
}

/* fork() that fails the workload on error (children log no `start` line). */
static inline pid_t wl_fork(void)
{
	pid_t pid = fork();
	if (pid < 0)
		wl_fail("fork: %s", strerror(errno));
	return pid;
}

/*
 * Setup barrier across a tree: every descendant calls wl_ready_signal() once
 * it is set up; the root calls wl_ready_wait(n) with the number of
 * descendants and logs `ready` afterwards.  The pipe is closed by everyone
 * after use, so it is not part of the checkpointed state.
 */
struct wl_ready {
	int fd[2];
};

static inline void wl_ready_init(struct wl_ready *r)
{
	if (pipe2(r->fd, O_CLOEXEC) < 0)
		wl_fail("pipe2: %s", strerror(errno));
}

static inline void wl_ready_signal(struct wl_ready *r)
{
	char c = 'r';
	if (wl_write_all(r->fd[1], &c, 1) < 0)
		wl_fail("ready pipe write: %s", strerror(errno));
	close(r->fd[0]);
	close(r->fd[1]);
}

static inline void wl_ready_wait(struct wl_ready *r, int n)
{
	close(r->fd[1]);
	double deadline = wl_now() + 15.0;
	for (int got = 0; got < n;) {
		struct pollfd p = { r->fd[0], POLLIN, 0 };
		int rc = poll(&p, 1, 200);
		if (rc < 0 && errno != EINTR)
			wl_fail("poll ready pipe: %s", strerror(errno));
		if (rc > 0) {
			char buf[64];
			ssize_t k = read(r->fd[0], buf, sizeof(buf));
			if (k < 0 && errno != EINTR)
				wl_fail("read ready pipe: %s", strerror(errno));
			if (k == 0)
				wl_fail("setup: only %d of %d processes got ready", got, n);
			if (k > 0)
				got += (int)k;
		}
		if (wl_now() > deadline)
			wl_fail("setup: only %d of %d processes ready after 15 s", got, n);
	}
	close(r->fd[0]);
}

/* ---- misc --------------------------------------------------------------- */

/* Cheap 64-bit mixer for address/generation patterns. */
static inline uint64_t wl_mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/*
 * Reads a whole (small) file from offset 0 through a long-lived fd, so no
 * transient fd shows up in a checkpoint (works on /proc seq files too).
 * Returns the length read, NUL-terminated in buf, or -1.
 */
static inline ssize_t wl_pread_file(int fd, char *buf, size_t size)
{
	size_t len = 0;
	while (len + 1 < size) {
		ssize_t n = pread(fd, buf + len, size - 1 - len, (off_t)len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return (ssize_t)len;
}

/* Opens a file for wl_pread_file(), failing the workload on error. */
static inline int wl_open_ro(const char *path)
{
	int fd;
	do
		fd = open(path, O_RDONLY | O_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		wl_fail("open %s: %s", path, strerror(errno));
	return fd;
}

/* Compares two signal sets over all real signals 1..64. */
static inline int wl_sigset_equal(const sigset_t *a, const sigset_t *b)
{
	for (int s = 1; s <= 64; s++)
		if (sigismember(a, s) != sigismember(b, s))
			return 0;
	return 1;
}

/* Formats a signal set as a hex mask for messages. */
static inline const char *wl_sigset_str(const sigset_t *set, char *buf, size_t size)
{
	uint64_t m = 0;
	for (int s = 1; s <= 64; s++)
		if (sigismember(set, s) == 1)
			m |= 1ULL << (s - 1);
	snprintf(buf, size, "%016llx", (unsigned long long)m);
	return buf;
}

#endif /* CKPT_TESTS_WORKLOADS_WL_H */
