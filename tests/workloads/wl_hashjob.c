/*
 * wl_hashjob - a batch job with a deterministic result, for `ckpt job run`
 * (tests/e2e/job_e2e.py, the Slurm test, scripts/bench --only job).
 *
 *   wl_hashjob --log FILE [--result FILE] [--mib N] [--steps N]
 *              [--step-ms MS] [--dirty-pct P] [--hot]
 *
 * Fills N MiB (default 256) of anonymous memory from a seed, then runs
 * `steps` steps (0: forever); each step rewrites P% (default 5) of the
 * pages as a hash of their old content and the step number, and folds them
 * into a running digest. The pages a step rewrites move with the step, or
 * stay the same set with --hot (so exactly P% of memory changes between two
 * checkpoints, however many steps fall in between). Log lines (one write(2)
 * each, O_APPEND):
 *   start <pid>              once per process start (a restart shows twice)
 *   ready                    memory filled
 *   step <k> <digest>        after step k
 *   done <digest>            after the last step; the result file then holds
 *                            "result <digest>\n", a hash of all memory
 * The digest depends only on --mib, --steps, --dirty-pct and --hot: a run
 * that was checkpointed, stopped and resumed must end with the same result
 * as one that ran straight through. --step-ms only paces the steps.
 */
#include "wl.h"

#include <sys/mman.h>

static uint64_t *mem;
static size_t npages;

#define WORDS (4096 / 8)

static int rewritten(size_t page, uint64_t step, unsigned pct, int hot)
{
	uint64_t h = wl_mix(page * 0x9e3779b97f4a7c15ULL + (hot ? 0 : step * 0x632be59bd9b4e019ULL));
	return h % 1000 < (uint64_t)pct * 10;
}

static uint64_t step_once(uint64_t step, uint64_t digest, unsigned pct, int hot)
{
	for (size_t p = 0; p < npages; p++) {
		if (!rewritten(p, step, pct, hot))
			continue;
		uint64_t *w = mem + p * WORDS;
		uint64_t acc = step ^ p;
		for (size_t i = 0; i < WORDS; i++) {
			acc = wl_mix(acc ^ w[i]);
			w[i] = acc;
		}
		digest = wl_mix(digest ^ acc);
	}
	return digest;
}

static uint64_t hash_all(uint64_t digest)
{
	for (size_t p = 0; p < npages; p++) {
		const uint64_t *w = mem + p * WORDS;
		uint64_t acc = p;
		for (size_t i = 0; i < WORDS; i += 8)
			acc = wl_mix(acc ^ w[i] ^ w[i + 3]);
		digest = wl_mix(digest ^ acc);
	}
	return digest;
}

int main(int argc, char **argv)
{
	const char *result = NULL;
	unsigned long mib = 256, steps = 100, step_ms = 0, pct = 5;
	int hot = 0;
	char *wl_argv[4] = { argv[0], NULL, NULL, NULL };
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--log") == 0 && i + 1 < argc) {
			wl_argv[1] = "--log";
			wl_argv[2] = argv[++i];
		} else if (strcmp(argv[i], "--result") == 0 && i + 1 < argc) {
			result = argv[++i];
		} else if (strcmp(argv[i], "--mib") == 0 && i + 1 < argc) {
			mib = strtoul(argv[++i], NULL, 0);
		} else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
			steps = strtoul(argv[++i], NULL, 0);
		} else if (strcmp(argv[i], "--step-ms") == 0 && i + 1 < argc) {
			step_ms = strtoul(argv[++i], NULL, 0);
		} else if (strcmp(argv[i], "--dirty-pct") == 0 && i + 1 < argc) {
			pct = strtoul(argv[++i], NULL, 0);
		} else if (strcmp(argv[i], "--hot") == 0) {
			hot = 1;
		} else {
			fprintf(stderr, "usage: %s --log FILE [--result FILE] [--mib N] [--steps N] "
					"[--step-ms MS] [--dirty-pct P] [--hot]\n", argv[0]);
			return 2;
		}
	}
	if (!wl_argv[1] || mib == 0 || pct > 100)
		wl_usage(argv[0]);
	wl_init(3, wl_argv, 0);

	npages = mib * 256;
	mem = mmap(NULL, npages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		wl_fail("mmap %lu MiB: %s", mib, strerror(errno));
	for (size_t p = 0; p < npages; p++)
		for (size_t i = 0; i < WORDS; i++)
			mem[p * WORDS + i] = wl_mix(p * WORDS + i + 1);
	wl_log("ready");

	uint64_t digest = 0x243f6a8885a308d3ULL;
	for (uint64_t k = 1; steps == 0 || k <= steps; k++) {
		digest = step_once(k, digest, (unsigned)pct, hot);
		wl_log("step %llu %016llx", (unsigned long long)k, (unsigned long long)digest);
		if (step_ms)
			wl_sleep_ms((long)step_ms);
	}
	digest = hash_all(digest);
	if (result) {
		char line[64];
		int n = snprintf(line, sizeof line, "result %016llx\n", (unsigned long long)digest);
		int fd = open(result, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || wl_write_all(fd, line, (size_t)n) < 0 || close(fd) < 0)
			wl_fail("write %s: %s", result, strerror(errno));
	}
	wl_log("done %016llx", (unsigned long long)digest);
	return 0;
}
