/*
 * wl_memhog - a process holding N MiB of touched anonymous memory, for
 * scripts/bench (and the migration and incremental-checkpoint benchmarks).
 *
 *   wl_memhog --log FILE --mib N [--rewrite-pct P] [--zero-pct Z]
 *
 * Every page gets content derived from its index and a generation number
 * (incompressible, so compression cannot flatter the figures; --zero-pct
 * leaves that share of pages holding mostly zeros for compressible runs).
 * Logs "ready" once all pages are written. With --rewrite-pct P it rewrites
 * P% of the pages every second (a new generation for those pages).
 * On SIGUSR1 it verifies every page and logs "verified ok" or
 * "FAIL <pid>: page N ..." (then exits 1).
 */

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int log_fd = -1;
static volatile sig_atomic_t verify_requested;
static uint8_t *mem;
static uint32_t *gen;  /* generation of each page */
static size_t npages;
static int zero_pct;

static void logline(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (write(log_fd, buf, (size_t)n) < 0) _exit(2);
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	return x ^ (x >> 33);
}

static int compressible(size_t page) { return (int)(mix(page) % 100) < zero_pct; }

static void fill(size_t page)
{
	uint64_t *p = (uint64_t *)(mem + page * 4096);
	uint64_t seed = mix(page * 1000003 + gen[page]);
	if (compressible(page)) {
		memset(p, 0, 4096);
		p[0] = seed;
		return;
	}
	for (int i = 0; i < 512; i++) p[i] = seed = mix(seed + (uint64_t)i);
}

static long check(size_t page)
{
	uint64_t *p = (uint64_t *)(mem + page * 4096);
	uint64_t seed = mix(page * 1000003 + gen[page]);
	if (compressible(page)) return p[0] == seed ? -1 : 0;
	for (int i = 0; i < 512; i++) {
		seed = mix(seed + (uint64_t)i);
		if (p[i] != seed) return i;
	}
	return -1;
}

static void on_usr1(int sig) { (void)sig; verify_requested = 1; }

int main(int argc, char **argv)
{
	const char *log_path = NULL;
	long mib = 64;
	int rewrite_pct = 0;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--log")) log_path = argv[i + 1];
		else if (!strcmp(argv[i], "--mib")) mib = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--rewrite-pct")) rewrite_pct = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--zero-pct")) zero_pct = atoi(argv[i + 1]);
	}
	if (!log_path || mib <= 0) {
		fprintf(stderr, "usage: %s --log FILE --mib N [--rewrite-pct P] [--zero-pct Z]\n", argv[0]);
		return 2;
	}
	log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (log_fd < 0) return 2;
	logline("start %d\n", getpid());
	npages = (size_t)mib * 256;
	mem = mmap(NULL, npages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	gen = calloc(npages, sizeof *gen);
	if (mem == MAP_FAILED || !gen) return 2;
	for (size_t i = 0; i < npages; i++) fill(i);
	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	logline("ready\n");
	uint64_t x = 12345;
	for (;;) {
		struct timespec ts = {1, 0};
		while (nanosleep(&ts, &ts) != 0 && !verify_requested) {
		}
		if (verify_requested) {
			verify_requested = 0;
			for (size_t i = 0; i < npages; i++) {
				long bad = check(i);
				if (bad >= 0) {
					logline("FAIL %d: page %zu word %ld differs\n", getpid(), i, bad);
					return 1;
				}
			}
			logline("verified ok\n");
		}
		size_t n = npages * (size_t)rewrite_pct / 100;
		for (size_t k = 0; k < n; k++) {
			x = mix(x);
			size_t page = x % npages;
			gen[page]++;
			fill(page);
		}
	}
}
