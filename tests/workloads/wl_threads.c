/*
 * wl_threads - per-thread state of a multi-threaded process.
 *
 * Four threads, each with its own name (pthread_setname_np), its own
 * blocked-signal mask, its own MXCSR rounding mode and a __thread counter.
 * Every iteration a thread checks its name (PR_GET_NAME), its mask, its TID,
 * its MXCSR, that its TLS counter continued from the value it left, and
 * that vector registers survive a spin loop: a per-thread, per-iteration
 * pattern is loaded into ymm8..ymm15 (xmm8..xmm15 without AVX), the thread
 * spins for about a millisecond (a dump is likely to land there), then the
 * registers are stored and compared.  The main thread checks every thread's
 * shared counter advances (5 s of active time) and logs progress.
 */
#include "wl.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define NTHREADS 4
#define SPINS 2000000L

static _Atomic uint64_t shared_count[NTHREADS];
static __thread uint64_t tls_count;
static __thread int tls_index = -1;
static int have_avx;
static pthread_barrier_t setup_barrier;

static pid_t gettid_(void)
{
	return (pid_t)syscall(SYS_gettid);
}

/* Loads 8 x 32 bytes into ymm8..ymm15, spins, stores them back. */
static void vec_spin_avx(const uint64_t *in, uint64_t *out, long spins)
{
	__asm__ volatile(
		"vmovdqu   0(%[in]), %%ymm8\n\t"
		"vmovdqu  32(%[in]), %%ymm9\n\t"
		"vmovdqu  64(%[in]), %%ymm10\n\t"
		"vmovdqu  96(%[in]), %%ymm11\n\t"
		"vmovdqu 128(%[in]), %%ymm12\n\t"
		"vmovdqu 160(%[in]), %%ymm13\n\t"
		"vmovdqu 192(%[in]), %%ymm14\n\t"
		"vmovdqu 224(%[in]), %%ymm15\n\t"
		"1: dec %[n]\n\t"
		"jnz 1b\n\t"
		"vmovdqu %%ymm8,    0(%[out])\n\t"
		"vmovdqu %%ymm9,   32(%[out])\n\t"
		"vmovdqu %%ymm10,  64(%[out])\n\t"
		"vmovdqu %%ymm11,  96(%[out])\n\t"
		"vmovdqu %%ymm12, 128(%[out])\n\t"
		"vmovdqu %%ymm13, 160(%[out])\n\t"
		"vmovdqu %%ymm14, 192(%[out])\n\t"
		"vmovdqu %%ymm15, 224(%[out])\n\t"
		"vzeroupper\n\t"
		: [n] "+r"(spins)
		: [in] "r"(in), [out] "r"(out)
		: "memory", "cc", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
		  "xmm15");
}

/* SSE-only variant: 8 x 16 bytes in xmm8..xmm15. */
static void vec_spin_sse(const uint64_t *in, uint64_t *out, long spins)
{
	__asm__ volatile(
		"movdqu   0(%[in]), %%xmm8\n\t"
		"movdqu  16(%[in]), %%xmm9\n\t"
		"movdqu  32(%[in]), %%xmm10\n\t"
		"movdqu  48(%[in]), %%xmm11\n\t"
		"movdqu  64(%[in]), %%xmm12\n\t"
		"movdqu  80(%[in]), %%xmm13\n\t"
		"movdqu  96(%[in]), %%xmm14\n\t"
		"movdqu 112(%[in]), %%xmm15\n\t"
		"1: dec %[n]\n\t"
		"jnz 1b\n\t"
		"movdqu %%xmm8,    0(%[out])\n\t"
		"movdqu %%xmm9,   16(%[out])\n\t"
		"movdqu %%xmm10,  32(%[out])\n\t"
		"movdqu %%xmm11,  48(%[out])\n\t"
		"movdqu %%xmm12,  64(%[out])\n\t"
		"movdqu %%xmm13,  80(%[out])\n\t"
		"movdqu %%xmm14,  96(%[out])\n\t"
		"movdqu %%xmm15, 112(%[out])\n\t"
		: [n] "+r"(spins)
		: [in] "r"(in), [out] "r"(out)
		: "memory", "cc", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
		  "xmm15");
}

static unsigned get_mxcsr(void)
{
	unsigned v;
	__asm__ volatile("stmxcsr %0" : "=m"(v));
	return v;
}

static void set_mxcsr(unsigned v)
{
	__asm__ volatile("ldmxcsr %0" : : "m"(v));
}

/* The distinct mask of thread i (SIGCANCEL/SIGSETXID are glibc's, avoided). */
static void thread_mask(int i, sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGRTMIN + 1 + i);
	if (i & 1)
		sigaddset(set, SIGUSR1);
	if (i & 2)
		sigaddset(set, SIGUSR2);
	if (i == 3)
		sigaddset(set, SIGWINCH);
}

static void check_mask(const sigset_t *want, const char *who)
{
	sigset_t cur;
	char a[24], b[24];
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	if (!wl_sigset_equal(&cur, want))
		wl_fail("%s: blocked mask %s, expected %s", who, wl_sigset_str(&cur, a, sizeof(a)),
			wl_sigset_str(want, b, sizeof(b)));
}

static void *thread_main(void *arg)
{
	const int idx = (int)(intptr_t)arg;
	char name[16], who[32];
	sigset_t mask;
	const pid_t tid = gettid_();
	/* Rounding control (MXCSR bits 13-14) differs per thread. */
	const unsigned mxcsr = (get_mxcsr() & ~0x6000u) | ((unsigned)idx << 13);

	snprintf(name, sizeof(name), "wl-thr-%d", idx);
	snprintf(who, sizeof(who), "thread %d (tid %d)", idx, (int)tid);
	int err = pthread_setname_np(pthread_self(), name);
	if (err)
		wl_fail("pthread_setname_np: %s", strerror(err));
	thread_mask(idx, &mask);
	err = pthread_sigmask(SIG_SETMASK, &mask, NULL);
	if (err)
		wl_fail("pthread_sigmask: %s", strerror(err));
	set_mxcsr(mxcsr);
	tls_index = idx;
	tls_count = 1000000ULL * (uint64_t)(idx + 1);
	uint64_t mine = tls_count;

	pthread_barrier_wait(&setup_barrier);

	static __thread uint64_t in[32] __attribute__((aligned(32)));
	static __thread uint64_t out[32] __attribute__((aligned(32)));
	for (uint64_t iter = 1;; iter++) {
		char cur[16] = "";
		if (prctl(PR_GET_NAME, cur, 0, 0, 0) < 0 || strcmp(cur, name) != 0)
			wl_fail("%s: name is '%s', expected '%s'", who, cur, name);
		check_mask(&mask, who);
		if (gettid_() != tid)
			wl_fail("%s: gettid() = %d", who, (int)gettid_());
		if (get_mxcsr() != mxcsr)
			wl_fail("%s: MXCSR %#x, expected %#x", who, get_mxcsr(), mxcsr);
		if (tls_index != idx || tls_count != mine)
			wl_fail("%s: TLS index %d count %llu, expected %d and %llu", who, tls_index,
				(unsigned long long)tls_count, idx, (unsigned long long)mine);
		tls_count++;
		mine++;
		atomic_store(&shared_count[idx], mine);

		size_t words = have_avx ? 32 : 16;
		for (size_t w = 0; w < words; w++)
			in[w] = wl_mix(((uint64_t)idx << 56) ^ (iter << 8) ^ w);
		memset(out, 0, sizeof(out));
		if (have_avx)
			vec_spin_avx(in, out, SPINS);
		else
			vec_spin_sse(in, out, SPINS);
		for (size_t w = 0; w < words; w++)
			if (out[w] != in[w])
				wl_fail("%s: %s%zu lane %zu is %016llx, expected %016llx", who,
					have_avx ? "ymm" : "xmm", 8 + w / (words / 8), w % (words / 8),
					(unsigned long long)out[w], (unsigned long long)in[w]);
		wl_sleep_ms(3);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv, 0);
	__builtin_cpu_init();
	have_avx = __builtin_cpu_supports("avx");

	/* The main thread has a mask of its own too. */
	sigset_t main_mask;
	sigemptyset(&main_mask);
	sigaddset(&main_mask, SIGPIPE);
	sigaddset(&main_mask, SIGRTMIN + 8);
	pthread_sigmask(SIG_SETMASK, &main_mask, NULL);

	pthread_barrier_init(&setup_barrier, NULL, NTHREADS + 1);
	pthread_t th[NTHREADS];
	for (int i = 0; i < NTHREADS; i++) {
		int err = pthread_create(&th[i], NULL, thread_main, (void *)(intptr_t)i);
		if (err)
			wl_fail("pthread_create: %s", strerror(err));
	}
	pthread_barrier_wait(&setup_barrier);
	wl_log("ready");

	struct wl_clock clk;
	struct wl_stall stall[NTHREADS];
	double last_progress = 0;
	wl_clock_init(&clk);
	for (int i = 0; i < NTHREADS; i++)
		wl_stall_init(&stall[i], atomic_load(&shared_count[i]), 0);
	for (;;) {
		double active = wl_clock_tick(&clk);
		for (int i = 0; i < NTHREADS; i++) {
			uint64_t c = atomic_load(&shared_count[i]);
			if (wl_stalled(&stall[i], c, active))
				wl_fail("thread %d stopped advancing (count %llu for %.0f s)", i,
					(unsigned long long)c, WL_STALL_LIMIT);
		}
		check_mask(&main_mask, "main thread");
		if (wl_progress_due(&last_progress))
			wl_progress();
		wl_sleep_ms(20);
	}
}
