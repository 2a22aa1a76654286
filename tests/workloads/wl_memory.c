/*
 * wl_memory - address-space contents and layout.
 *
 * State set up, then checked forever:
 *  - private anonymous buffers, malloc blocks (small, medium, mmap-sized),
 *    and a sbrk() extension of the heap, each filled with a pattern of
 *    (address, generation) that is verified and rewritten with the next
 *    generation every pass; the break (sbrk(0)) must not move;
 *  - a 256 MiB anonymous mapping with only 8 pages touched: the touched
 *    pages keep their pattern and every other page stays a hole (mincore:
 *    a resident page must share its 2 MiB block with a touched page, to
 *    allow for transparent huge pages);
 *  - a MAP_PRIVATE mapping of a file in --dir with 3 pages modified
 *    (copy-on-write): modified pages keep the pattern, the others match the
 *    file, and the file on disk keeps its original content;
 *  - RW | PROT_NONE | RW pages: the RW pages keep their pattern, the middle
 *    page is ---p in /proc/self/maps and reading it faults with SEGV_ACCERR
 *    (probed with a SIGSEGV handler);
 *  - a MAP_SHARED|MAP_ANONYMOUS region shared with a forked child: the
 *    parent bumps a counter, the child acks it; both fail if the other side
 *    stops moving for 5 s of active time (so a restore that unshares the
 *    region is caught); constant pages of it are verified by both.
 */
#include "wl.h"

#include <setjmp.h>
#include <stdatomic.h>
#include <sys/mman.h>

#define PAGE 4096UL
#define SPARSE_SIZE (256UL << 20)
#define SPARSE_TOUCHED 8
#define FILE_PAGES 16
#define SHM_PAGES 16

/* A range of words holding pat(address, gen). */
struct region {
	uint64_t *p;
	size_t words;
	uint64_t gen;
	const char *what;
};

static struct region regions[32];
static int nregions;

static inline uint64_t pat(const uint64_t *addr, uint64_t gen)
{
	return wl_mix((uint64_t)(uintptr_t)addr * 0x9e3779b97f4a7c15ULL + gen);
}

static void region_fill(struct region *r, uint64_t gen)
{
	for (size_t i = 0; i < r->words; i++)
		r->p[i] = pat(&r->p[i], gen);
}

static void region_verify(const struct region *r)
{
	for (size_t i = 0; i < r->words; i++) {
		uint64_t want = pat(&r->p[i], r->gen);
		if (r->p[i] != want)
			wl_fail("%s: word %zu at %p is %016llx, expected %016llx (generation %llu)",
				r->what, i, (void *)&r->p[i], (unsigned long long)r->p[i],
				(unsigned long long)want, (unsigned long long)r->gen);
	}
}

static void region_add(void *p, size_t bytes, const char *what)
{
	struct region *r = &regions[nregions++];
	r->p = p;
	r->words = bytes / sizeof(uint64_t);
	r->gen = 1;
	r->what = what;
	region_fill(r, r->gen);
}

/* Verify, then rewrite with the next generation (a dump may land midway). */
static void region_step(struct region *r)
{
	region_verify(r);
	region_fill(r, r->gen + 1);
	r->gen++;
}

static void *map_anon(size_t len, int prot, int flags)
{
	void *p = mmap(NULL, len, prot, flags | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		wl_fail("mmap %zu bytes: %s", len, strerror(errno));
	return p;
}

/* ---- sparse mapping ------------------------------------------------------ */

static char *sparse;
static size_t sparse_touched[SPARSE_TOUCHED]; /* page indexes */
static unsigned char mincore_vec[SPARSE_SIZE / PAGE];

static void sparse_setup(void)
{
	sparse = map_anon(SPARSE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	for (int k = 0; k < SPARSE_TOUCHED; k++) {
		sparse_touched[k] = (size_t)k * ((32UL << 20) / PAGE) + (size_t)k * 7;
		region_add(sparse + sparse_touched[k] * PAGE, PAGE, "sparse touched page");
	}
}

static void sparse_check_holes(void)
{
	int rc;
	do
		rc = mincore(sparse, SPARSE_SIZE, mincore_vec);
	while (rc < 0 && (errno == EINTR || errno == EAGAIN));
	if (rc < 0)
		wl_fail("mincore: %s", strerror(errno));
	size_t resident = 0;
	for (size_t i = 0; i < SPARSE_SIZE / PAGE; i++) {
		if (!(mincore_vec[i] & 1))
			continue;
		resident++;
		int near = 0;
		for (int k = 0; k < SPARSE_TOUCHED; k++)
			if (sparse_touched[k] / 512 == i / 512)
				near = 1;
		if (!near)
			wl_fail("sparse mapping: page %zu (%p) is resident but was never touched "
				"(holes were filled)", i, (void *)(sparse + i * PAGE));
	}
	if (resident > SPARSE_TOUCHED * 512)
		wl_fail("sparse mapping: %zu pages resident", resident);
}

/* ---- file-backed private mapping ----------------------------------------- */

static uint64_t *fmap;
static int file_fd = -1; /* read-only fd kept open to check the file on disk */
static const int cow_pages[] = { 3, 7, 8 };

static inline uint64_t file_word(size_t i)
{
	return wl_mix(0xf11e000000000000ULL + i);
}

static int is_cow_page(size_t page)
{
	for (size_t k = 0; k < sizeof(cow_pages) / sizeof(cow_pages[0]); k++)
		if ((size_t)cow_pages[k] == page)
			return 1;
	return 0;
}

static void file_setup(void)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/private.dat", wl_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		wl_fail("create %s: %s", path, strerror(errno));
	static uint64_t buf[FILE_PAGES * PAGE / 8];
	for (size_t i = 0; i < sizeof(buf) / 8; i++)
		buf[i] = file_word(i);
	if (wl_write_all(fd, buf, sizeof(buf)) < 0)
		wl_fail("write %s: %s", path, strerror(errno));
	close(fd);

	file_fd = wl_open_ro(path);
	fmap = mmap(NULL, FILE_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, file_fd, 0);
	if (fmap == MAP_FAILED)
		wl_fail("mmap %s: %s", path, strerror(errno));
	for (size_t k = 0; k < sizeof(cow_pages) / sizeof(cow_pages[0]); k++)
		region_add((char *)fmap + cow_pages[k] * PAGE, PAGE, "file mapping COW page");
}

static void file_check_mapping(void)
{
	for (size_t i = 0; i < FILE_PAGES * PAGE / 8; i++) {
		if (is_cow_page(i * 8 / PAGE))
			continue;
		if (fmap[i] != file_word(i))
			wl_fail("file mapping: unmodified word %zu is %016llx, expected %016llx "
				"(file content)", i, (unsigned long long)fmap[i],
				(unsigned long long)file_word(i));
	}
}

static void file_check_disk(void)
{
	static uint64_t buf[FILE_PAGES * PAGE / 8];
	int rc = wl_pread_all(file_fd, buf, sizeof(buf), 0);
	if (rc != 0)
		wl_fail("pread private.dat: %s", rc == 1 ? "short file" : strerror(errno));
	for (size_t i = 0; i < sizeof(buf) / 8; i++)
		if (buf[i] != file_word(i))
			wl_fail("private.dat on disk changed at word %zu (page %zu): COW pages leaked "
				"to the file", i, i * 8 / PAGE);
}

/* ---- PROT_NONE guard page ----------------------------------------------- */

static char *guard; /* three pages: RW, ---, RW */
static sigjmp_buf probe_env;
static volatile sig_atomic_t probe_armed;
static void *volatile probe_addr;
static volatile int probe_code;
static int maps_fd = -1;

static void segv_handler(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	if (!probe_armed) {
		wl_log("FAIL %d: unexpected SIGSEGV at %p (code %d)", (int)getpid(), si->si_addr,
			si->si_code);
		_exit(1);
	}
	probe_addr = si->si_addr;
	probe_code = si->si_code;
	siglongjmp(probe_env, 1);
}

static void guard_setup(void)
{
	guard = map_anon(3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	if (mprotect(guard + PAGE, PAGE, PROT_NONE) < 0)
		wl_fail("mprotect: %s", strerror(errno));
	region_add(guard, PAGE, "page below the guard");
	region_add(guard + 2 * PAGE, PAGE, "page above the guard");

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = segv_handler;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, NULL) < 0)
		wl_fail("sigaction SIGSEGV: %s", strerror(errno));
	maps_fd = wl_open_ro("/proc/self/maps");
}

static void guard_probe(void)
{
	volatile char *mid = guard + PAGE;
	if (sigsetjmp(probe_env, 1) == 0) {
		probe_armed = 1;
		(void)*mid;
		probe_armed = 0;
		wl_fail("guard page %p is readable (PROT_NONE lost)", (void *)mid);
	}
	probe_armed = 0;
	if (probe_addr != (void *)mid || probe_code != SEGV_ACCERR)
		wl_fail("guard probe: fault at %p code %d, expected %p code %d (SEGV_ACCERR)",
			probe_addr, probe_code, (void *)mid, SEGV_ACCERR);
}

/* Returns the perms of the /proc/self/maps line containing addr, or "". */
static const char *maps_perms(const char *maps, uintptr_t addr, char out[8])
{
	out[0] = '\0';
	for (const char *line = maps; line && *line;) {
		unsigned long lo, hi;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && addr >= lo && addr < hi) {
			memcpy(out, perms, 8);
			return out;
		}
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	return out;
}

static void guard_check_maps(void)
{
	static char maps[1 << 17];
	if (wl_pread_file(maps_fd, maps, sizeof(maps)) < 0)
		wl_fail("read /proc/self/maps: %s", strerror(errno));
	char p0[8], p1[8], p2[8];
	maps_perms(maps, (uintptr_t)guard, p0);
	maps_perms(maps, (uintptr_t)guard + PAGE, p1);
	maps_perms(maps, (uintptr_t)guard + 2 * PAGE, p2);
	if (strcmp(p0, "rw-p") || strcmp(p1, "---p") || strcmp(p2, "rw-p"))
		wl_fail("guard region %p: maps perms are '%s' '%s' '%s', expected rw-p ---p rw-p",
			(void *)guard, p0, p1, p2);
}

/* ---- region shared with the child ---------------------------------------- */

struct shm_hdr {
	_Atomic uint64_t counter; /* written by the parent */
	_Atomic uint64_t ack;     /* written by the child: last counter it saw */
};

static struct shm_hdr *shm;

static inline uint64_t shm_word(size_t i)
{
	return wl_mix(0x5ead000000000000ULL + i);
}

static void shm_setup(void)
{
	shm = map_anon(SHM_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED);
	uint64_t *w = (uint64_t *)((char *)shm + PAGE);
	for (size_t i = 0; i < (SHM_PAGES - 1) * PAGE / 8; i++)
		w[i] = shm_word(i);
}

static void shm_check_constant(void)
{
	const uint64_t *w = (const uint64_t *)((const char *)shm + PAGE);
	for (size_t i = 0; i < (SHM_PAGES - 1) * PAGE / 8; i++)
		if (w[i] != shm_word(i))
			wl_fail("shared region: word %zu is %016llx, expected %016llx", i,
				(unsigned long long)w[i], (unsigned long long)shm_word(i));
}

static void __attribute__((noreturn)) child_main(pid_t parent, struct wl_ready *ready)
{
	struct wl_clock clk;
	struct wl_stall stall;
	uint64_t last = atomic_load(&shm->counter);

	wl_ready_signal(ready);
	wl_clock_init(&clk);
	wl_stall_init(&stall, last, 0);
	for (unsigned loop = 0;; loop++) {
		double active = wl_clock_tick(&clk);
		uint64_t c = atomic_load(&shm->counter);
		if (c < last)
			wl_fail("shared counter went back from %llu to %llu", (unsigned long long)last,
				(unsigned long long)c);
		last = c;
		atomic_store(&shm->ack, c);
		if (wl_stalled(&stall, c, active))
			wl_fail("shared counter stuck at %llu for %.0f s: the region is no longer "
				"shared with the parent", (unsigned long long)c, WL_STALL_LIMIT);
		wl_check_ppid(parent);
		if (loop % 25 == 0)
			shm_check_constant();
		wl_sleep_ms(20);
	}
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	wl_init(argc, argv, 1);

	/* Private anonymous buffers of assorted sizes. */
	region_add(map_anon(1UL << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE), 1UL << 20,
		   "anon 1 MiB");
	region_add(map_anon(5 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE), 5 * PAGE,
		   "anon 5 pages");
	region_add(map_anon(2UL << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE), 2UL << 20,
		   "anon 2 MiB");

	/* Heap: malloc first (small, medium, mmap-threshold sized), then sbrk. */
	static const size_t msizes[] = { 104, 4000, 70000, 300000 };
	for (size_t k = 0; k < sizeof(msizes) / sizeof(msizes[0]); k++) {
		void *p = malloc(msizes[k]);
		if (!p)
			wl_fail("malloc %zu failed", msizes[k]);
		region_add(p, msizes[k], "malloc block");
	}
	const size_t brk_grow = (1UL << 20) + 3 * PAGE;
	char *brk_old = sbrk((intptr_t)brk_grow);
	if (brk_old == (char *)-1)
		wl_fail("sbrk: %s", strerror(errno));
	char *brk_end = brk_old + brk_grow;
	region_add(brk_old, brk_grow, "sbrk area");

	sparse_setup();
	file_setup();
	guard_setup();
	shm_setup();

	struct wl_ready ready;
	wl_ready_init(&ready);
	pid_t child = wl_fork();
	if (child == 0)
		child_main(getppid(), &ready);
	wl_ready_wait(&ready, 1);

	/* First full checks before declaring ready. */
	file_check_mapping();
	file_check_disk();
	sparse_check_holes();
	guard_check_maps();
	guard_probe();
	wl_log("ready");

	struct wl_clock clk;
	struct wl_stall ack_stall;
	double last_progress = 0;
	wl_clock_init(&clk);
	wl_stall_init(&ack_stall, atomic_load(&shm->ack), 0);
	for (unsigned loop = 1;; loop++) {
		double active = wl_clock_tick(&clk);
		for (int i = 0; i < nregions; i++)
			region_step(&regions[i]);
		file_check_mapping();
		guard_probe();
		if ((char *)sbrk(0) != brk_end)
			wl_fail("program break moved: %p, expected %p", sbrk(0), (void *)brk_end);
		if (loop % 25 == 0) {
			file_check_disk();
			sparse_check_holes();
			guard_check_maps();
			shm_check_constant();
		}

		uint64_t c = atomic_fetch_add(&shm->counter, 1) + 1;
		uint64_t ack = atomic_load(&shm->ack);
		if (ack > c)
			wl_fail("child ack %llu is ahead of counter %llu", (unsigned long long)ack,
				(unsigned long long)c);
		if (wl_stalled(&ack_stall, ack, active))
			wl_fail("child ack stuck at %llu (counter %llu) for %.0f s: the region is no "
				"longer shared with the child", (unsigned long long)ack,
				(unsigned long long)c, WL_STALL_LIMIT);
		wl_check_child(child);

		if (wl_progress_due(&last_progress))
			wl_progress();
		wl_sleep_ms(20);
	}
}
