/*
 * wl_evfds - files behind anonymous inodes: eventfd, signalfd, timerfd,
 * epoll, inotify.  One process, one loop:
 *
 *  - EV, an eventfd (non-blocking) whose count is always known: each loop
 *    adds a little, reads it all back (must be exactly the expected count)
 *    and leaves 1000 + n % 7 in it, so a checkpoint sees a non-zero count.
 *  - SEM, a semaphore eventfd: topped up by 3 when it runs low, read once a
 *    loop (each read must give 1; EAGAIN exactly when the count is 0).
 *  - SFD, a signalfd for SIGUSR1 (blocked): a SIGUSR1 is queued to ourselves
 *    with sigqueue(seq) and must come back through SFD with that value.
 *  - TFD, a timerfd, 50 ms period; its expirations must keep arriving.
 *  - EP, an epoll watching EV, TFD, SFD and the read end of a pipe, each
 *    with its own data value: every event must carry a known value, and EV,
 *    SFD and the pipe must be reported exactly when they are readable
 *    (level-triggered; we know when they are).
 *  - IN, an inotify with watches on DIR/a (wd 1) and DIR (wd 3; wd 2, on
 *    DIR/b, was removed: a gap the restore must keep): a file is created and
 *    deleted in DIR or DIR/a in turn, and the IN_CREATE and IN_DELETE events
 *    must arrive with the right wd and name.  Queued inotify events are not
 *    checkpointed: a round whose events are missing is forgiven only if the
 *    process was frozen in the middle of it (a gap of more than 50 ms; a dump and
 *    restore take longer, a create-unlink-read round microseconds).
 * Watchdogs: timer ticks, signals and inotify rounds must keep coming (5 s
 * of active time).
 */
#include "wl.h"

#include <limits.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>

#define D_EV 0x1111000000000001ULL
#define D_TFD 0x2222000000000002ULL
#define D_SFD 0x3333000000000003ULL
#define D_PIPE 0x4444000000000004ULL

static int ev, sem, sfd, tfd, ep, pip[2], in;
static int wd_a, wd_dir;
static uint64_t ev_expected, sem_expected;
static uint64_t sig_seq, sig_outstanding, sigs_read;
static uint64_t pipe_seq_w, pipe_seq_r;
static uint64_t ticks_total;
static uint64_t in_rounds;
static char dir_a[PATH_MAX];

static void ev_write(int fd, uint64_t v, const char *what)
{
	ssize_t n;
	do
		n = write(fd, &v, sizeof(v));
	while (n < 0 && errno == EINTR);
	if (n != sizeof(v))
		wl_fail("%s: write %llu: %s", what, (unsigned long long)v, strerror(errno));
}

/* Reads an 8-byte value; returns 0 on EAGAIN. */
static int ev_read(int fd, uint64_t *v, const char *what)
{
	ssize_t n;
	do
		n = read(fd, v, sizeof(*v));
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return 0;
	if (n != sizeof(*v))
		wl_fail("%s: read: %s", what, n < 0 ? strerror(errno) : "short read");
	return 1;
}

static void setup(void)
{
	ev = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	sem = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | EFD_SEMAPHORE);
	if (ev < 0 || sem < 0)
		wl_fail("eventfd: %s", strerror(errno));
	ev_expected = 1000;
	ev_write(ev, ev_expected, "eventfd");
	sem_expected = 4;
	ev_write(sem, sem_expected, "semaphore eventfd");

	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &m, NULL) < 0)
		wl_fail("sigprocmask: %s", strerror(errno));
	sfd = signalfd(-1, &m, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0)
		wl_fail("signalfd: %s", strerror(errno));

	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (tfd < 0)
		wl_fail("timerfd_create: %s", strerror(errno));
	struct itimerspec its = { { 0, 50000000 }, { 0, 50000000 } };
	if (timerfd_settime(tfd, 0, &its, NULL) < 0)
		wl_fail("timerfd_settime: %s", strerror(errno));

	if (pipe2(pip, O_NONBLOCK | O_CLOEXEC) < 0)
		wl_fail("pipe2: %s", strerror(errno));

	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		wl_fail("epoll_create1: %s", strerror(errno));
	struct {
		int fd;
		uint64_t data;
	} w[] = { { ev, D_EV }, { tfd, D_TFD }, { sfd, D_SFD }, { pip[0], D_PIPE } };
	for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
		struct epoll_event e = { .events = EPOLLIN, .data.u64 = w[i].data };
		if (epoll_ctl(ep, EPOLL_CTL_ADD, w[i].fd, &e) < 0)
			wl_fail("epoll_ctl add fd %d: %s", w[i].fd, strerror(errno));
	}

	char dir_b[PATH_MAX];
	snprintf(dir_a, sizeof(dir_a), "%s/a", wl_dir);
	snprintf(dir_b, sizeof(dir_b), "%s/b", wl_dir);
	if ((mkdir(dir_a, 0755) < 0 && errno != EEXIST) || (mkdir(dir_b, 0755) < 0 && errno != EEXIST))
		wl_fail("mkdir: %s", strerror(errno));
	in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (in < 0)
		wl_fail("inotify_init1: %s", strerror(errno));
	wd_a = inotify_add_watch(in, dir_a, IN_CREATE | IN_DELETE);
	int wd_b = inotify_add_watch(in, dir_b, IN_CREATE | IN_DELETE);
	wd_dir = inotify_add_watch(in, wl_dir, IN_CREATE | IN_DELETE);
	if (wd_a != 1 || wd_b != 2 || wd_dir != 3)
		wl_fail("inotify wds %d %d %d, expected 1 2 3", wd_a, wd_b, wd_dir);
	if (inotify_rm_watch(in, wd_b) < 0)
		wl_fail("inotify_rm_watch: %s", strerror(errno));
	/* Read away the IN_IGNORED of wd 2. */
	char buf[4096];
	while (read(in, buf, sizeof(buf)) > 0)
		;
}

/* One eventfd + semaphore round. */
static void check_eventfds(uint64_t n)
{
	uint64_t v;
	uint64_t add = 1 + n % 5;
	ev_write(ev, add, "eventfd");
	ev_expected += add;
	if (!ev_read(ev, &v, "eventfd"))
		wl_fail("eventfd: EAGAIN with count %llu expected", (unsigned long long)ev_expected);
	if (v != ev_expected)
		wl_fail("eventfd: count %llu, expected %llu", (unsigned long long)v,
			(unsigned long long)ev_expected);
	ev_expected = 1000 + n % 7;
	ev_write(ev, ev_expected, "eventfd");

	if (sem_expected < 2) {
		ev_write(sem, 3, "semaphore eventfd");
		sem_expected += 3;
	}
	int got = ev_read(sem, &v, "semaphore eventfd");
	if (sem_expected == 0) {
		if (got)
			wl_fail("semaphore eventfd: read %llu with count 0", (unsigned long long)v);
	} else {
		if (!got)
			wl_fail("semaphore eventfd: EAGAIN with count %llu", (unsigned long long)sem_expected);
		if (v != 1)
			wl_fail("semaphore eventfd: read %llu, not 1 (semaphore mode lost?)",
				(unsigned long long)v);
		sem_expected--;
	}
}

static void read_signal(void)
{
	struct signalfd_siginfo si;
	ssize_t n;
	do
		n = read(sfd, &si, sizeof(si));
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		wl_fail("signalfd reported readable but read gives EAGAIN");
	if (n != sizeof(si))
		wl_fail("signalfd read: %s", n < 0 ? strerror(errno) : "short read");
	if (!sig_outstanding)
		wl_fail("signalfd: signal %u while none was sent", si.ssi_signo);
	if (si.ssi_signo != SIGUSR1 || (uint64_t)si.ssi_int != sig_seq ||
	    si.ssi_pid != (uint32_t)getpid())
		wl_fail("signalfd: got signal %u value %d from %u, expected %d value %llu from %d",
			si.ssi_signo, si.ssi_int, si.ssi_pid, SIGUSR1, (unsigned long long)sig_seq,
			(int)getpid());
	sig_outstanding = 0;
	sigs_read++;
}

/* One epoll round: every event known, readiness as expected. */
static void check_epoll(void)
{
	if (!sig_outstanding) {
		sig_seq++;
		union sigval sv = { .sival_int = (int)sig_seq };
		if (sigqueue(getpid(), SIGUSR1, sv) < 0)
			wl_fail("sigqueue: %s", strerror(errno));
		sig_outstanding = 1;
	}
	pipe_seq_w++;
	if (wl_write_all(pip[1], &pipe_seq_w, sizeof(pipe_seq_w)) < 0)
		wl_fail("pipe write: %s", strerror(errno));

	struct epoll_event evs[8];
	int n;
	do
		n = epoll_wait(ep, evs, 8, 50);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		wl_fail("epoll_wait: %s", strerror(errno));
	int seen_ev = 0, seen_sfd = 0, seen_pipe = 0;
	for (int i = 0; i < n; i++) {
		uint64_t d = evs[i].data.u64;
		if (!(evs[i].events & EPOLLIN))
			wl_fail("epoll: event %#x for data %#llx without EPOLLIN", evs[i].events,
				(unsigned long long)d);
		if (d == D_EV) {
			seen_ev = 1;
		} else if (d == D_SFD) {
			seen_sfd = 1;
			read_signal();
		} else if (d == D_PIPE) {
			seen_pipe = 1;
			uint64_t v;
			while (ev_read(pip[0], &v, "pipe")) {
				if (v != pipe_seq_r + 1)
					wl_fail("pipe: got %llu after %llu", (unsigned long long)v,
						(unsigned long long)pipe_seq_r);
				pipe_seq_r = v;
			}
		} else if (d == D_TFD) {
			uint64_t t;
			if (ev_read(tfd, &t, "timerfd")) {
				if (t == 0)
					wl_fail("timerfd: read 0 expirations");
				ticks_total += t;
			}
		} else {
			wl_fail("epoll: unknown data %#llx (events %#x)", (unsigned long long)d,
				evs[i].events);
		}
	}
	if (!seen_ev)
		wl_fail("epoll: eventfd with count %llu not reported", (unsigned long long)ev_expected);
	if (!seen_sfd)
		wl_fail("epoll: pending SIGUSR1 %llu not reported by the signalfd",
			(unsigned long long)sig_seq);
	if (!seen_pipe || pipe_seq_r != pipe_seq_w)
		wl_fail("epoll: pipe with data not reported (wrote %llu, read %llu)",
			(unsigned long long)pipe_seq_w, (unsigned long long)pipe_seq_r);
}

/* One inotify round: create and delete a file, expect both events. */
static void check_inotify(uint64_t n)
{
	int in_a = n % 2;
	int wd = in_a ? wd_a : wd_dir;
	char name[64], path[PATH_MAX + 64];
	snprintf(name, sizeof(name), "f%llu", (unsigned long long)n);
	snprintf(path, sizeof(path), "%s/%s", in_a ? dir_a : wl_dir, name);
	double t0 = wl_now();
	int fd;
	do
		fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		wl_fail("create %s: %s", path, strerror(errno));
	close(fd);
	if (unlink(path) < 0)
		wl_fail("unlink %s: %s", path, strerror(errno));

	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t len;
	do
		len = read(in, buf, sizeof(buf));
	while (len < 0 && errno == EINTR);
	int frozen = wl_now() - t0 > 0.05;
	if (len < 0 && errno != EAGAIN)
		wl_fail("inotify read: %s", strerror(errno));
	int got_create = 0, got_delete = 0;
	for (ssize_t off = 0; len > 0 && off < len;) {
		struct inotify_event *e = (struct inotify_event *)(buf + off);
		off += (ssize_t)(sizeof(*e) + e->len);
		if (e->wd != wd || !e->len || strcmp(e->name, name) != 0 ||
		    !(e->mask & (IN_CREATE | IN_DELETE)))
			wl_fail("inotify: event wd %d mask %#x name '%s', expected wd %d name '%s'",
				e->wd, e->mask, e->len ? e->name : "", wd, name);
		if (e->mask & IN_CREATE) {
			if (got_create || got_delete)
				wl_fail("inotify: IN_CREATE of %s out of order", name);
			got_create = 1;
		} else {
			if (got_delete || (!got_create && !frozen))
				wl_fail("inotify: IN_DELETE of %s out of order", name);
			got_delete = 1;
		}
	}
	if (!got_delete || (!got_create && !frozen)) {
		if (!frozen)
			wl_fail("inotify: events of %s missing (create %d, delete %d)", name,
				got_create, got_delete);
		return; /* queued events are not checkpointed */
	}
	in_rounds++;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv, 1);
	setup();
	wl_log("ready");

	struct wl_clock clk;
	struct wl_stall st_ticks, st_sigs, st_in;
	wl_clock_init(&clk);
	wl_stall_init(&st_ticks, 0, 0);
	wl_stall_init(&st_sigs, 0, 0);
	wl_stall_init(&st_in, 0, 0);
	double last_progress = wl_now();
	for (uint64_t n = 1;; n++) {
		check_eventfds(n);
		check_epoll();
		check_inotify(n);
		double active = wl_clock_tick(&clk);
		if (wl_stalled(&st_ticks, ticks_total, active))
			wl_fail("timerfd: no expiration for %.0f s (total %llu)", WL_STALL_LIMIT,
				(unsigned long long)ticks_total);
		if (wl_stalled(&st_sigs, sigs_read, active))
			wl_fail("signalfd: no signal for %.0f s", WL_STALL_LIMIT);
		if (wl_stalled(&st_in, in_rounds, active))
			wl_fail("inotify: no complete round for %.0f s", WL_STALL_LIMIT);
		if (wl_progress_due(&last_progress))
			wl_progress();
		wl_sleep_ms(20);
	}
}
