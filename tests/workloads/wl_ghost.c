/*
 * wl_ghost - files that have no name any more.
 *
 * Holds, all set up before `ready`:
 *   - a file in --dir, written with a known pattern, opened, then unlinked:
 *     read through its fd (with its offset advancing) and mapped MAP_PRIVATE
 *     with copy-on-write changes, and mapped MAP_SHARED where it keeps
 *     writing a counter that pread must see;
 *   - a memfd with a pattern, sealed against shrinking and growing, mapped
 *     MAP_SHARED by this process and a forked child: the parent writes a
 *     counter, the child echoes it back (shared after restore);
 * and checks continuously that contents, seals, sharing and the absence of
 * the deleted path all hold.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include "wl.h"

#define GHOST_SIZE (3 * 4096 + 100)
#define MEMFD_SIZE (4 * 4096)

static unsigned char pattern(size_t i) { return (unsigned char)(i * 7 + 3); }

int main(int argc, char **argv)
{
	wl_init(argc, argv, 1);
	char path[4096];
	snprintf(path, sizeof path, "%s/ghost.dat", wl_dir);
	int gfd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (gfd < 0)
		wl_fail("open %s: %s", path, strerror(errno));
	unsigned char buf[GHOST_SIZE];
	for (size_t i = 0; i < GHOST_SIZE; i++)
		buf[i] = pattern(i);
	if (wl_write_all(gfd, buf, GHOST_SIZE) < 0)
		wl_fail("write ghost: %s", strerror(errno));
	unsigned char *priv = mmap(NULL, GHOST_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, gfd, 0);
	volatile uint64_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, gfd, 0);
	if (priv == MAP_FAILED || shared == MAP_FAILED)
		wl_fail("mmap ghost: %s", strerror(errno));
	priv[4096 + 5] = 0xAB; /* copy-on-write: the file keeps pattern(4101) */
	if (unlink(path) < 0)
		wl_fail("unlink: %s", strerror(errno));
	lseek(gfd, 8192, SEEK_SET);

	int mfd = memfd_create("wl-ghost", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		wl_fail("memfd_create: %s", strerror(errno));
	if (ftruncate(mfd, MEMFD_SIZE) < 0)
		wl_fail("ftruncate memfd: %s", strerror(errno));
	volatile uint64_t *m = mmap(NULL, MEMFD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (m == MAP_FAILED)
		wl_fail("mmap memfd: %s", strerror(errno));
	for (size_t i = 2; i < MEMFD_SIZE / 8; i++)
		m[i] = i * 0x9E3779B97F4A7C15ULL;
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
		wl_fail("seal: %s", strerror(errno));

	pid_t child = wl_fork();
	if (child == 0) {
		/* m[0]: the parent's counter; m[1]: our echo of it. */
		for (;;) {
			m[1] = m[0];
			wl_sleep_ms(10);
		}
	}

	wl_log("ready");
	uint64_t n = 0;
	double last = 0;
	struct wl_clock clk;
	wl_clock_init(&clk);
	struct wl_stall stall;
	wl_stall_init(&stall, 0, 0);
	for (;;) {
		double active = wl_clock_tick(&clk);
		n++;
		/* Shared file mapping and pread see the same bytes. */
		shared[1] = n;
		uint64_t seen;
		if (wl_pread_all(gfd, &seen, 8, 8) != 0 || seen != n)
			wl_fail("shared mapping of the deleted file: pread sees %llu, wrote %llu",
				(unsigned long long)seen, (unsigned long long)n);
		for (size_t i = 16; i < GHOST_SIZE; i += 97) {
			unsigned char want = i == 4096 + 5 ? 0xAB : pattern(i);
			if (i >= 8 && i < 16)
				continue;
			if (priv[i] != want)
				wl_fail("private mapping byte %zu is %u, expected %u", i, priv[i], want);
		}
		unsigned char b;
		off_t pos = lseek(gfd, 0, SEEK_CUR);
		if (pos < 8192 || pos >= GHOST_SIZE)
			wl_fail("offset of the deleted file is %lld", (long long)pos);
		if (wl_read_all(gfd, &b, 1) != 0 || b != pattern((size_t)pos))
			wl_fail("read at %lld: %u, expected %u", (long long)pos, b, pattern((size_t)pos));
		if (pos + 1 >= GHOST_SIZE)
			lseek(gfd, 8192, SEEK_SET);
		struct stat st;
		if (fstat(gfd, &st) < 0 || st.st_nlink != 0 || st.st_size != GHOST_SIZE ||
		    (st.st_mode & 0777) != 0640)
			wl_fail("deleted file: nlink %lu size %lld mode %o", (unsigned long)st.st_nlink,
				(long long)st.st_size, st.st_mode & 0777);
		if (access(path, F_OK) == 0)
			wl_fail("%s exists again", path);

		m[0] = n;
		for (size_t i = 2; i < MEMFD_SIZE / 8; i += 13)
			if (m[i] != i * 0x9E3779B97F4A7C15ULL)
				wl_fail("memfd word %zu changed", i);
		int seals = fcntl(mfd, F_GET_SEALS);
		if (seals != (F_SEAL_SHRINK | F_SEAL_GROW))
			wl_fail("memfd seals are %#x", seals);
		if (ftruncate(mfd, MEMFD_SIZE / 2) == 0)
			wl_fail("shrinking a sealed memfd worked");
		if (wl_stalled(&stall, m[1], active))
			wl_fail("the child stopped echoing through the shared memfd (echo %llu, now %llu)",
				(unsigned long long)m[1], (unsigned long long)n);
		wl_check_child(child);
		if (wl_progress_due(&last))
			wl_progress();
		wl_sleep_ms(20);
	}
}
