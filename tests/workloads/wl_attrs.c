/*
 * wl_attrs - process and thread attributes: scheduling, nice, CPU affinity,
 * timer slack, OOM score, child subreaper, POSIX timers, seccomp.
 *
 * Root process, checked every loop (about every 10 ms):
 *  - main thread: nice 5, timer slack 77777 ns; the process is a child
 *    subreaper with oom_score_adj 500 (read through a long-lived fd);
 *  - thread "batch": SCHED_BATCH, nice 3, timer slack 123456 ns, bound to
 *    CPU 0; checks itself every 10 ms and counts;
 *  - thread "rr": SCHED_RR priority 3 | SCHED_RESET_ON_FORK with nice -2
 *    (falls back to SCHED_OTHER | SCHED_RESET_ON_FORK and timer slack
 *    222222 ns where real-time is refused), bound to the last CPU; counts;
 *  - POSIX timer 1: CLOCK_MONOTONIC, SIGEV_SIGNAL SIGRTMIN+2, sival
 *    0x5eed1234abcd, every 50 ms: the handler checks si_code SI_TIMER, the
 *    value and si_timerid; ticks must keep coming and timer_gettime on the
 *    saved id must still show the 50 ms interval (same ids after restore);
 *  - POSIX timer 2: CLOCK_REALTIME, SIGEV_NONE, one shot of an hour: its
 *    time left must never grow and must keep shrinking;
 *  - POSIX timer 3: CLOCK_MONOTONIC, SIGEV_THREAD_ID to "batch",
 *    SIGRTMIN+3, every 100 ms: only that thread may take it.
 * Child "filter": no_new_privs and a seccomp filter that makes uname(2)
 * fail with EPERM; it checks that uname keeps failing with EPERM while
 * getppid/getpid work, and writes a tick to its parent every 50 ms.
 * Child "strict": seccomp strict mode; echoes every byte the parent sends
 * plus one (read/write on inherited pipes, nothing else).
 * The parent checks /proc/CHILD/status (Seccomp: 2 and 1) through
 * long-lived fds, the ticks and the echoes.
 */
#include "wl.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

#ifndef SCHED_RESET_ON_FORK
#define SCHED_RESET_ON_FORK 0x40000000
#endif

#define SIVAL1 ((void *)0x5eed1234abcdUL)
#define MAIN_NICE 5
#define MAIN_SLACK 77777UL
#define BATCH_NICE 3
#define BATCH_SLACK 123456UL
#define RR_NICE (-2)
#define RR_SLACK 222222UL

static timer_t timer1, timer2, timer3;
static atomic_ulong t1_ticks, t3_ticks, batch_count, rr_count;
static atomic_int t1_bad, t3_bad;
static volatile pid_t batch_tid;
static int cpu_a, cpu_b;
static int rr_realtime;

static void on_timer1(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	if (si->si_code != SI_TIMER || si->si_value.sival_ptr != SIVAL1 ||
	    si->si_timerid != (int)(intptr_t)timer1)
		atomic_store(&t1_bad, 1);
	atomic_fetch_add(&t1_ticks, 1);
}

static void on_timer3(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	if (si->si_code != SI_TIMER || (pid_t)syscall(SYS_gettid) != batch_tid ||
	    si->si_value.sival_int != 33)
		atomic_store(&t3_bad, 1);
	atomic_fetch_add(&t3_ticks, 1);
}

static void check_thread(const char *name, int policy, int nice, unsigned long slack, int cpu)
{
	int p = sched_getscheduler(0);
	if (p != policy)
		wl_fail("%s: sched_getscheduler = %#x, expected %#x", name, p, policy);
	errno = 0;
	int n = getpriority(PRIO_PROCESS, 0);
	if (n != nice || errno)
		wl_fail("%s: nice %d, expected %d (%s)", name, n, nice, strerror(errno));
	long s = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
	if (slack && (unsigned long)s != slack)
		wl_fail("%s: timer slack %ld, expected %lu", name, s, slack);
	if (cpu >= 0) {
		cpu_set_t set, want;
		CPU_ZERO(&want);
		CPU_SET(cpu, &want);
		if (sched_getaffinity(0, sizeof(set), &set) != 0)
			wl_fail("%s: sched_getaffinity: %s", name, strerror(errno));
		if (!CPU_EQUAL(&set, &want))
			wl_fail("%s: affinity changed (CPU count %d, want only CPU %d)", name,
				CPU_COUNT(&set), cpu);
	}
}

static void bind_cpu(int cpu, const char *name)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		wl_fail("%s: sched_setaffinity: %s", name, strerror(errno));
}

static void *batch_main(void *arg)
{
	(void)arg;
	prctl(PR_SET_NAME, "batch", 0, 0, 0);
	bind_cpu(cpu_a, "batch");
	if (setpriority(PRIO_PROCESS, 0, BATCH_NICE) != 0)
		wl_fail("batch: setpriority: %s", strerror(errno));
	struct sched_param sp = { 0 };
	if (sched_setscheduler(0, SCHED_BATCH, &sp) != 0)
		wl_fail("batch: SCHED_BATCH: %s", strerror(errno));
	if (prctl(PR_SET_TIMERSLACK, BATCH_SLACK, 0, 0, 0) != 0)
		wl_fail("batch: PR_SET_TIMERSLACK: %s", strerror(errno));
	batch_tid = (pid_t)syscall(SYS_gettid);
	for (;;) {
		check_thread("batch", SCHED_BATCH, BATCH_NICE, BATCH_SLACK, cpu_a);
		atomic_fetch_add(&batch_count, 1);
		wl_sleep_ms(10);
	}
	return NULL;
}

static void *rr_main(void *arg)
{
	(void)arg;
	prctl(PR_SET_NAME, "rr", 0, 0, 0);
	bind_cpu(cpu_b, "rr");
	if (setpriority(PRIO_PROCESS, 0, RR_NICE) != 0)
		wl_fail("rr: setpriority: %s", strerror(errno));
	struct sched_param sp = { 3 };
	int policy = SCHED_RR | SCHED_RESET_ON_FORK;
	unsigned long slack = 0;
	if (sched_setscheduler(0, policy, &sp) != 0) {
		/* No real-time here (RT group scheduling, ...): a fair policy
		 * with the flag, and a slack of its own. */
		sp.sched_priority = 0;
		policy = SCHED_OTHER | SCHED_RESET_ON_FORK;
		if (sched_setscheduler(0, policy, &sp) != 0)
			wl_fail("rr: sched_setscheduler: %s", strerror(errno));
		if (prctl(PR_SET_TIMERSLACK, RR_SLACK, 0, 0, 0) != 0)
			wl_fail("rr: PR_SET_TIMERSLACK: %s", strerror(errno));
		slack = RR_SLACK;
	} else {
		rr_realtime = 1;
	}
	for (;;) {
		check_thread("rr", policy, RR_NICE, slack, cpu_b);
		if (rr_realtime) {
			struct sched_param cur;
			if (sched_getparam(0, &cur) != 0 || cur.sched_priority != 3)
				wl_fail("rr: priority %d, expected 3", cur.sched_priority);
		}
		atomic_fetch_add(&rr_count, 1);
		wl_sleep_ms(10);
	}
	return NULL;
}

/* ---- children ----------------------------------------------------------- */

static void filter_child(int tick_fd, pid_t parent, struct wl_ready *ready)
{
	struct sock_filter prog[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_uname, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog fp = { sizeof(prog) / sizeof(prog[0]), prog };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		wl_fail("filter: PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fp) != 0)
		wl_fail("filter: seccomp: %s", strerror(errno));
	wl_ready_signal(ready);
	pid_t me = getpid();
	for (uint64_t n = 0;; n++) {
		struct utsname u;
		if (uname(&u) == 0 || errno != EPERM)
			wl_fail("filter: uname is allowed again (errno %d)", errno);
		if (getpid() != me)
			wl_fail("filter: getpid changed");
		if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
			wl_fail("filter: no_new_privs lost");
		wl_check_ppid(parent);
		char c = (char)n;
		if (wl_write_all(tick_fd, &c, 1) < 0)
			wl_fail("filter: write tick: %s", strerror(errno));
		wl_sleep_ms(50);
	}
}

/* Strict mode: only read, write, exit and sigreturn from here on. */
static void __attribute__((noreturn)) strict_child(int in_fd, int out_fd)
{
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0) != 0)
		wl_fail("strict: PR_SET_SECCOMP: %s", strerror(errno));
	for (;;) {
		unsigned char c;
		ssize_t n = read(in_fd, &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			syscall(SYS_exit, 0);
		c++;
		while (write(out_fd, &c, 1) < 0 && errno == EINTR) {
		}
	}
}

/* "Seccomp:" of /proc/PID/status through a long-lived fd. */
static int seccomp_mode_of(int status_fd)
{
	char buf[4096];
	if (wl_pread_file(status_fd, buf, sizeof(buf)) < 0)
		wl_fail("read child status: %s", strerror(errno));
	const char *p = strstr(buf, "\nSeccomp:");
	if (!p)
		wl_fail("no Seccomp: line in a child's status");
	return atoi(p + 9);
}

static void set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv, 0);
	pid_t me = getpid();
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	cpu_set_t all;
	if (sched_getaffinity(0, sizeof(all), &all) != 0)
		wl_fail("sched_getaffinity: %s", strerror(errno));
	cpu_a = -1;
	for (int c = 0; c < CPU_SETSIZE && c < ncpu * 4; c++)
		if (CPU_ISSET(c, &all)) {
			if (cpu_a < 0)
				cpu_a = c;
			cpu_b = c;
		}
	if (cpu_a < 0)
		wl_fail("no CPU in the affinity mask");

	/* Children first, before the timers and threads (not inherited anyway). */
	struct wl_ready ready;
	wl_ready_init(&ready);
	int tick[2], to_strict[2], from_strict[2];
	if (pipe2(tick, O_CLOEXEC) < 0 || pipe2(to_strict, O_CLOEXEC) < 0 ||
	    pipe2(from_strict, O_CLOEXEC) < 0)
		wl_fail("pipe2: %s", strerror(errno));
	pid_t fchild = wl_fork();
	if (fchild == 0) {
		close(tick[0]);
		close(to_strict[0]);
		close(to_strict[1]);
		close(from_strict[0]);
		close(from_strict[1]);
		filter_child(tick[1], me, &ready);
	}
	pid_t schild = wl_fork();
	if (schild == 0) {
		close(tick[0]);
		close(tick[1]);
		close(to_strict[1]);
		close(from_strict[0]);
		wl_ready_signal(&ready);
		strict_child(to_strict[0], from_strict[1]);
	}
	close(tick[1]);
	close(to_strict[0]);
	close(from_strict[1]);
	set_nonblock(tick[0]);
	set_nonblock(from_strict[0]);
	wl_ready_wait(&ready, 2);

	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)fchild);
	int fstatus = wl_open_ro(path);
	snprintf(path, sizeof(path), "/proc/%d/status", (int)schild);
	int sstatus = wl_open_ro(path);

	/* Process-wide attributes. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
		wl_fail("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
	int oom_fd = open("/proc/self/oom_score_adj", O_RDWR | O_CLOEXEC);
	if (oom_fd < 0 || write(oom_fd, "500\n", 4) != 4)
		wl_fail("oom_score_adj: %s", strerror(errno));
	if (setpriority(PRIO_PROCESS, 0, MAIN_NICE) != 0)
		wl_fail("setpriority: %s", strerror(errno));
	if (prctl(PR_SET_TIMERSLACK, MAIN_SLACK, 0, 0, 0) != 0)
		wl_fail("PR_SET_TIMERSLACK: %s", strerror(errno));

	/* Threads. */
	pthread_t th;
	if (pthread_create(&th, NULL, batch_main, NULL) != 0 ||
	    pthread_create(&th, NULL, rr_main, NULL) != 0)
		wl_fail("pthread_create");
	while (!batch_tid)
		wl_sleep_ms(1);

	/* Timers. */
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sa.sa_sigaction = on_timer1;
	if (sigaction(SIGRTMIN + 2, &sa, NULL) != 0)
		wl_fail("sigaction: %s", strerror(errno));
	sa.sa_sigaction = on_timer3;
	if (sigaction(SIGRTMIN + 3, &sa, NULL) != 0)
		wl_fail("sigaction: %s", strerror(errno));
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGRTMIN + 2;
	ev.sigev_value.sival_ptr = SIVAL1;
	if (timer_create(CLOCK_MONOTONIC, &ev, &timer1) != 0)
		wl_fail("timer_create 1: %s", strerror(errno));
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_NONE;
	if (timer_create(CLOCK_REALTIME, &ev, &timer2) != 0)
		wl_fail("timer_create 2: %s", strerror(errno));
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_THREAD_ID;
	ev.sigev_signo = SIGRTMIN + 3;
	ev.sigev_value.sival_int = 33;
	ev._sigev_un._tid = batch_tid;
	if (timer_create(CLOCK_MONOTONIC, &ev, &timer3) != 0)
		wl_fail("timer_create 3: %s", strerror(errno));
	struct itimerspec its1 = { { 0, 50000000 }, { 0, 50000000 } };
	struct itimerspec its2 = { { 0, 0 }, { 3600, 0 } };
	struct itimerspec its3 = { { 0, 100000000 }, { 0, 100000000 } };
	if (timer_settime(timer1, 0, &its1, NULL) != 0 || timer_settime(timer2, 0, &its2, NULL) != 0 ||
	    timer_settime(timer3, 0, &its3, NULL) != 0)
		wl_fail("timer_settime: %s", strerror(errno));
	/* The main thread never takes the batch thread's signal. */
	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGRTMIN + 3);
	pthread_sigmask(SIG_BLOCK, &m, NULL);

	wl_log("ready");

	struct wl_clock clk;
	wl_clock_init(&clk);
	struct wl_stall st_t1, st_t2, st_t3, st_batch, st_rr, st_tick, st_echo;
	wl_stall_init(&st_t1, 0, 0);
	wl_stall_init(&st_t2, 0, 0);
	wl_stall_init(&st_t3, 0, 0);
	wl_stall_init(&st_batch, 0, 0);
	wl_stall_init(&st_rr, 0, 0);
	wl_stall_init(&st_tick, 0, 0);
	wl_stall_init(&st_echo, 0, 0);
	uint64_t prev_left = UINT64_MAX, ticks = 0, echoes = 0;
	unsigned char token = 0;
	int token_out = 0;
	double last_progress = 0;
	for (;;) {
		double active = wl_clock_tick(&clk);

		check_thread("main", SCHED_OTHER, MAIN_NICE, MAIN_SLACK, -1);
		int sub = 0;
		if (prctl(PR_GET_CHILD_SUBREAPER, &sub, 0, 0, 0) != 0 || sub != 1)
			wl_fail("child subreaper lost (%d)", sub);
		char buf[64];
		if (wl_pread_file(oom_fd, buf, sizeof(buf)) < 0)
			wl_fail("read oom_score_adj: %s", strerror(errno));
		if (atoi(buf) != 500)
			wl_fail("oom_score_adj is %d, expected 500", atoi(buf));

		struct itimerspec cur;
		if (timer_gettime(timer1, &cur) != 0)
			wl_fail("timer_gettime(timer 1 id %d): %s", (int)(intptr_t)timer1, strerror(errno));
		if (cur.it_interval.tv_sec != 0 || cur.it_interval.tv_nsec != 50000000)
			wl_fail("timer 1 interval %ld.%09ld", (long)cur.it_interval.tv_sec,
				cur.it_interval.tv_nsec);
		if (timer_gettime(timer3, &cur) != 0)
			wl_fail("timer_gettime(timer 3 id %d): %s", (int)(intptr_t)timer3, strerror(errno));
		if (cur.it_interval.tv_sec != 0 || cur.it_interval.tv_nsec != 100000000)
			wl_fail("timer 3 interval %ld.%09ld", (long)cur.it_interval.tv_sec,
				cur.it_interval.tv_nsec);
		if (timer_gettime(timer2, &cur) != 0)
			wl_fail("timer_gettime(timer 2 id %d): %s", (int)(intptr_t)timer2, strerror(errno));
		uint64_t left = (uint64_t)cur.it_value.tv_sec * 1000000000ULL + (uint64_t)cur.it_value.tv_nsec;
		if (left == 0 || cur.it_interval.tv_sec || cur.it_interval.tv_nsec)
			wl_fail("timer 2 disarmed or periodic (left %llu ns)", (unsigned long long)left);
		if (prev_left != UINT64_MAX && left > prev_left + 1000000)
			wl_fail("timer 2 time left grew: %llu -> %llu ns", (unsigned long long)prev_left,
				(unsigned long long)left);
		prev_left = left;
		if (atomic_load(&t1_bad))
			wl_fail("timer 1 signal with a wrong si_code, value or timer id");
		if (atomic_load(&t3_bad))
			wl_fail("timer 3 signal on the wrong thread or with a wrong value");

		/* Children. */
		wl_check_child(fchild);
		wl_check_child(schild);
		if (seccomp_mode_of(fstatus) != 2)
			wl_fail("filter child: Seccomp is %d, expected 2", seccomp_mode_of(fstatus));
		if (seccomp_mode_of(sstatus) != 1)
			wl_fail("strict child: Seccomp is %d, expected 1", seccomp_mode_of(sstatus));
		char tb[64];
		ssize_t k = read(tick[0], tb, sizeof(tb));
		if (k > 0)
			ticks += (uint64_t)k;
		else if (k == 0)
			wl_fail("filter child closed its pipe");
		else if (errno != EAGAIN && errno != EINTR)
			wl_fail("read ticks: %s", strerror(errno));
		if (!token_out) {
			if (write(to_strict[1], &token, 1) == 1)
				token_out = 1;
			else if (errno != EAGAIN && errno != EINTR)
				wl_fail("write to strict child: %s", strerror(errno));
		} else {
			unsigned char r;
			k = read(from_strict[0], &r, 1);
			if (k == 1) {
				if (r != (unsigned char)(token + 1))
					wl_fail("strict child echoed %u for %u", r, token);
				token++;
				echoes++;
				token_out = 0;
			} else if (k == 0) {
				wl_fail("strict child closed its pipe");
			} else if (errno != EAGAIN && errno != EINTR) {
				wl_fail("read from strict child: %s", strerror(errno));
			}
		}

		if (wl_stalled(&st_t1, atomic_load(&t1_ticks), active))
			wl_fail("timer 1 stopped ticking");
		if (wl_stalled(&st_t3, atomic_load(&t3_ticks), active))
			wl_fail("timer 3 stopped ticking");
		if (wl_stalled(&st_t2, left / 1000000, active))
			wl_fail("timer 2 time left stopped shrinking");
		if (wl_stalled(&st_batch, atomic_load(&batch_count), active))
			wl_fail("thread batch stuck");
		if (wl_stalled(&st_rr, atomic_load(&rr_count), active))
			wl_fail("thread rr stuck");
		if (wl_stalled(&st_tick, ticks, active))
			wl_fail("filter child stopped ticking");
		if (wl_stalled(&st_echo, echoes, active))
			wl_fail("strict child stopped echoing");

		if (wl_progress_due(&last_progress))
			wl_progress();
		wl_sleep_ms(10);
	}
}
