/*
 * wl_signals - signal dispositions, masks, pending signals and itimers.
 *
 *  - Handlers with distinct sa_flags and sa_mask:
 *      SIGUSR1  handler,   SA_RESTART,                 mask {SIGUSR2, SIGHUP}
 *      SIGUSR2  sigaction, SA_SIGINFO | SA_NODEFER,     mask {SIGINT}
 *      SIGALRM  sigaction, SA_SIGINFO | SA_RESTART,     mask {SIGUSR1, SIGTERM}
 *      SIGHUP   handler,   SA_RESETHAND,               mask {}
 *    each checked every loop with sigaction(sig, NULL, &old).
 *  - Blocked mask {SIGUSR2, SIGHUP, SIGWINCH, SIGRTMIN+5}, checked every loop.
 *  - Pending before `ready`: SIGUSR2 raised at the thread (tgkill), SIGHUP
 *    sent to the process (kill: shared pending, never unblocked), and two
 *    queued SIGRTMIN+5 with values 4242 and 4343 (sigqueue).  Until
 *    `progress 50` sigpending() must show SIGUSR2, SIGHUP and SIGRTMIN+5
 *    and no handler may have run; right after logging `progress 50` the
 *    workload unblocks SIGUSR2 (its handler must run exactly once, with
 *    si_code SI_TKILL and si_pid = own pid) and takes both RT signals with
 *    sigtimedwait (values in queue order, then nothing).
 *  - SIGUSR1 is raised every loop: its handler count must follow exactly.
 *  - setitimer(ITIMER_REAL, 100 ms): SIGALRM ticks must keep coming (5 s
 *    of active time) and the interval must stay 100 ms.
 */
#include "wl.h"

#include <sys/time.h>

#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000
#endif

static volatile sig_atomic_t usr1_count, usr2_count, alrm_count, hup_count;
static volatile int usr2_signo, usr2_code, usr2_pid;

static void on_usr1(int sig)
{
	(void)sig;
	usr1_count++;
}

static void on_usr2(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	usr2_count++;
	usr2_signo = si->si_signo;
	usr2_code = si->si_code;
	usr2_pid = si->si_pid;
}

static void on_alrm(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	alrm_count++;
}

static void on_hup(int sig)
{
	(void)sig;
	hup_count++;
}

struct disposition {
	int sig;
	const char *name;
	void *handler;
	int flags;
	int mask[3]; /* 0-terminated */
	struct sigaction want;
};

static struct disposition disp[] = {
	{ SIGUSR1, "SIGUSR1", (void *)on_usr1, SA_RESTART, { SIGUSR2, SIGHUP, 0 } },
	{ SIGUSR2, "SIGUSR2", (void *)on_usr2, SA_SIGINFO | SA_NODEFER, { SIGINT, 0 } },
	{ SIGALRM, "SIGALRM", (void *)on_alrm, SA_SIGINFO | SA_RESTART, { SIGUSR1, SIGTERM, 0 } },
	{ SIGHUP, "SIGHUP", (void *)on_hup, SA_RESETHAND, { 0 } },
};
#define NDISP (int)(sizeof(disp) / sizeof(disp[0]))

static void install(struct disposition *d)
{
	struct sigaction *sa = &d->want;
	memset(sa, 0, sizeof(*sa));
	if (d->flags & SA_SIGINFO)
		sa->sa_sigaction = (void (*)(int, siginfo_t *, void *))d->handler;
	else
		sa->sa_handler = (void (*)(int))d->handler;
	sa->sa_flags = d->flags;
	sigemptyset(&sa->sa_mask);
	for (int k = 0; d->mask[k]; k++)
		sigaddset(&sa->sa_mask, d->mask[k]);
	if (sigaction(d->sig, sa, NULL) < 0)
		wl_fail("sigaction %s: %s", d->name, strerror(errno));
}

static void check_dispositions(void)
{
	for (int i = 0; i < NDISP; i++) {
		const struct disposition *d = &disp[i];
		struct sigaction cur;
		char a[24], b[24];
		if (sigaction(d->sig, NULL, &cur) < 0)
			wl_fail("sigaction %s query: %s", d->name, strerror(errno));
		void *h = (d->flags & SA_SIGINFO) ? (void *)cur.sa_sigaction : (void *)cur.sa_handler;
		if (h != d->handler)
			wl_fail("%s: handler %p, expected %p", d->name, h, d->handler);
		if ((cur.sa_flags & ~SA_RESTORER) != d->flags)
			wl_fail("%s: sa_flags %#x, expected %#x", d->name,
				(unsigned)(cur.sa_flags & ~SA_RESTORER), (unsigned)d->flags);
		if (!wl_sigset_equal(&cur.sa_mask, &d->want.sa_mask))
			wl_fail("%s: sa_mask %s, expected %s", d->name,
				wl_sigset_str(&cur.sa_mask, a, sizeof(a)),
				wl_sigset_str(&d->want.sa_mask, b, sizeof(b)));
	}
}

static void check_mask(const sigset_t *want)
{
	sigset_t cur;
	char a[24], b[24];
	if (sigprocmask(SIG_BLOCK, NULL, &cur) < 0)
		wl_fail("sigprocmask: %s", strerror(errno));
	if (!wl_sigset_equal(&cur, want))
		wl_fail("blocked mask %s, expected %s", wl_sigset_str(&cur, a, sizeof(a)),
			wl_sigset_str(want, b, sizeof(b)));
}

static void check_pending(int released)
{
	sigset_t p;
	char a[24];
	if (sigpending(&p) < 0)
		wl_fail("sigpending: %s", strerror(errno));
	if (sigismember(&p, SIGHUP) != 1)
		wl_fail("SIGHUP is no longer pending (pending %s)", wl_sigset_str(&p, a, sizeof(a)));
	if (sigismember(&p, SIGUSR2) != !released)
		wl_fail("SIGUSR2 %s pending (pending %s)", released ? "still" : "no longer",
			wl_sigset_str(&p, a, sizeof(a)));
	if (sigismember(&p, SIGRTMIN + 5) != !released)
		wl_fail("SIGRTMIN+5 %s pending (pending %s)", released ? "still" : "no longer",
			wl_sigset_str(&p, a, sizeof(a)));
	if (hup_count != 0)
		wl_fail("SIGHUP handler ran %d times (it is blocked)", (int)hup_count);
	if (usr2_count != released)
		wl_fail("SIGUSR2 handler ran %d times, expected %d", (int)usr2_count, released);
}

/* After `progress 50`: deliver the pending SIGUSR2, take the RT signals. */
static void release_pending(sigset_t *mask)
{
	sigset_t usr2;
	sigemptyset(&usr2);
	sigaddset(&usr2, SIGUSR2);
	sigdelset(mask, SIGUSR2);
	if (sigprocmask(SIG_UNBLOCK, &usr2, NULL) < 0)
		wl_fail("unblock SIGUSR2: %s", strerror(errno));
	if (usr2_count != 1)
		wl_fail("SIGUSR2 handler ran %d times after unblocking, expected once",
			(int)usr2_count);
	if (usr2_signo != SIGUSR2 || usr2_code != SI_TKILL || usr2_pid != getpid())
		wl_fail("SIGUSR2 siginfo: signo %d code %d pid %d, expected %d %d %d", usr2_signo,
			usr2_code, usr2_pid, SIGUSR2, SI_TKILL, (int)getpid());

	sigset_t rt;
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN + 5);
	static const int values[] = { 4242, 4343 };
	for (int k = 0; k < 3; k++) {
		struct timespec zero = { 0, 0 };
		siginfo_t si;
		int s;
		do
			s = sigtimedwait(&rt, &si, &zero);
		while (s < 0 && errno == EINTR);
		if (k == 2) {
			if (s >= 0 || errno != EAGAIN)
				wl_fail("a third SIGRTMIN+5 was pending");
			break;
		}
		if (s != SIGRTMIN + 5)
			wl_fail("queued SIGRTMIN+5 #%d missing: %s", k + 1,
				s < 0 ? strerror(errno) : "other signal");
		if (si.si_code != SI_QUEUE || si.si_value.sival_int != values[k] ||
		    si.si_pid != getpid())
			wl_fail("SIGRTMIN+5 #%d: code %d value %d pid %d, expected %d %d %d", k + 1,
				si.si_code, si.si_value.sival_int, si.si_pid, SI_QUEUE, values[k],
				(int)getpid());
	}
}

int main(int argc, char **argv)
{
	wl_init(argc, argv, 0);

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR2);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGWINCH);
	sigaddset(&mask, SIGRTMIN + 5);
	if (sigprocmask(SIG_SETMASK, &mask, NULL) < 0)
		wl_fail("sigprocmask: %s", strerror(errno));
	for (int i = 0; i < NDISP; i++)
		install(&disp[i]);

	/* Pending signals: thread-directed, process-wide, and queued RT. */
	if (raise(SIGUSR2) != 0)
		wl_fail("raise SIGUSR2: %s", strerror(errno));
	if (kill(getpid(), SIGHUP) < 0)
		wl_fail("kill SIGHUP: %s", strerror(errno));
	if (sigqueue(getpid(), SIGRTMIN + 5, (union sigval){ .sival_int = 4242 }) < 0 ||
	    sigqueue(getpid(), SIGRTMIN + 5, (union sigval){ .sival_int = 4343 }) < 0)
		wl_fail("sigqueue: %s", strerror(errno));

	struct itimerval it = { { 0, 100000 }, { 0, 100000 } };
	if (setitimer(ITIMER_REAL, &it, NULL) < 0)
		wl_fail("setitimer: %s", strerror(errno));

	check_dispositions();
	check_mask(&mask);
	check_pending(0);
	wl_log("ready");

	int released = 0;
	struct wl_clock clk;
	struct wl_stall alrm_stall;
	double last_progress = 0;
	wl_clock_init(&clk);
	wl_stall_init(&alrm_stall, (uint64_t)alrm_count, 0);
	for (;;) {
		double active = wl_clock_tick(&clk);
		check_dispositions();
		check_mask(&mask);
		check_pending(released);

		/* An unblocked signal to self is handled before kill() returns. */
		int before = usr1_count;
		if (kill(getpid(), SIGUSR1) < 0)
			wl_fail("kill SIGUSR1: %s", strerror(errno));
		if (usr1_count != before + 1)
			wl_fail("SIGUSR1 handler count %d, expected %d", (int)usr1_count, before + 1);

		struct itimerval cur;
		if (getitimer(ITIMER_REAL, &cur) < 0)
			wl_fail("getitimer: %s", strerror(errno));
		if (cur.it_interval.tv_sec != 0 || cur.it_interval.tv_usec != 100000)
			wl_fail("ITIMER_REAL interval %ld.%06ld s, expected 0.100000",
				(long)cur.it_interval.tv_sec, (long)cur.it_interval.tv_usec);
		if (cur.it_value.tv_sec != 0 || cur.it_value.tv_usec > 100000 ||
		    (cur.it_value.tv_sec == 0 && cur.it_value.tv_usec == 0))
			wl_fail("ITIMER_REAL value %ld.%06ld s, expected (0, 0.1]",
				(long)cur.it_value.tv_sec, (long)cur.it_value.tv_usec);
		if (wl_stalled(&alrm_stall, (uint64_t)alrm_count, active))
			wl_fail("SIGALRM ticks stopped at %d", (int)alrm_count);

		if (wl_progress_due(&last_progress)) {
			wl_progress();
			if (wl_progress_n == 50) {
				release_pending(&mask);
				released = 1;
				check_mask(&mask);
				check_pending(released);
			}
		}
		wl_sleep_ms(20);
	}
}
