/*
 * wl_pipes - pipes and FIFOs with data in flight.
 *
 *  - A ring of 4 processes (the root P0 and its children P1..P3) joined by
 *    pipes P0->P1->P2->P3->P0 passes a token: each process checks the token
 *    it receives is one more than what its predecessor got, i.e. the value
 *    it saw last time plus 4, and forwards token + 1.  The children sit in
 *    a blocking read() most of the time.
 *  - A pipe of the root's own holds buffered unread bytes: 10000 bytes of a
 *    known sequence are written at once and read back 8 bytes per loop;
 *    FIONREAD must always equal what was written minus what was read.  When
 *    it runs low another 10000 bytes follow.
 *  - A named FIFO (mkfifo in --dir): a child W writes 8-byte sequence
 *    numbers as fast as it can (so it sits blocked in write() on a full
 *    FIFO); the root reads 4 records per loop (O_NONBLOCK) and checks the
 *    sequence.
 * Watchdogs: the ring token and the FIFO data must keep arriving (5 s of
 * active time).
 */
#include "wl.h"

#include <sys/ioctl.h>
#include <sys/stat.h>

#define RING 4
#define SLOW_CHUNK 10000

static int ring[RING][2]; /* ring[i]: from P(i) to P((i + 1) % RING) */

static inline unsigned char slow_byte(uint64_t k)
{
	return (unsigned char)(k % 251);
}

/* Ring member i (1..3): read, check, forward, forever. */
static void __attribute__((noreturn)) ring_member(int i, pid_t parent, struct wl_ready *ready)
{
	int in = ring[(i + RING - 1) % RING][0], out = ring[i][1];
	for (int k = 0; k < RING; k++) {
		if (ring[k][0] != in)
			close(ring[k][0]);
		if (ring[k][1] != out)
			close(ring[k][1]);
	}
	wl_ready_signal(ready);

	uint64_t last = 0;
	int have_last = 0;
	for (;;) {
		uint64_t t;
		int rc = wl_read_all(in, &t, sizeof(t));
		if (rc == 1)
			wl_fail("ring member %d: EOF from predecessor", i);
		if (rc < 0)
			wl_fail("ring member %d: read: %s", i, strerror(errno));
		if (t % RING != (uint64_t)(i + RING - 1) % RING || (have_last && t != last + RING))
			wl_fail("ring member %d: token %llu after %llu (expected +%d)", i,
				(unsigned long long)t, (unsigned long long)last, RING);
		last = t;
		have_last = 1;
		wl_check_ppid(parent);
		t++;
		if (wl_write_all(out, &t, sizeof(t)) < 0)
			wl_fail("ring member %d: write: %s", i, strerror(errno));
	}
}

/* FIFO writer W: sequence numbers, blocking writes. */
static void __attribute__((noreturn)) fifo_writer(const char *path, pid_t parent,
						  struct wl_ready *ready)
{
	for (int k = 0; k < RING; k++) {
		close(ring[k][0]);
		close(ring[k][1]);
	}
	int fd;
	do
		fd = open(path, O_WRONLY | O_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		wl_fail("open %s for writing: %s", path, strerror(errno));
	wl_ready_signal(ready);
	for (uint64_t seq = 0;; seq++) {
		if (wl_write_all(fd, &seq, sizeof(seq)) < 0)
			wl_fail("FIFO write: %s", strerror(errno));
		if (seq % 64 == 0)
			wl_check_ppid(parent);
	}
}

int main(int argc, char **argv)
{
	wl_init(argc, argv, 1);

	for (int k = 0; k < RING; k++)
		if (pipe2(ring[k], O_CLOEXEC) < 0)
			wl_fail("pipe2: %s", strerror(errno));

	char fifo_path[4096];
	snprintf(fifo_path, sizeof(fifo_path), "%s/fifo", wl_dir);
	if (mkfifo(fifo_path, 0600) < 0)
		wl_fail("mkfifo %s: %s", fifo_path, strerror(errno));
	/* Open the read side first (non-blocking) so the writer's open succeeds. */
	int fifo_fd = open(fifo_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fifo_fd < 0)
		wl_fail("open %s: %s", fifo_path, strerror(errno));

	struct wl_ready ready;
	wl_ready_init(&ready);
	pid_t self = getpid(), children[RING];
	for (int i = 1; i < RING; i++) {
		children[i] = wl_fork();
		if (children[i] == 0) {
			close(fifo_fd);
			ring_member(i, self, &ready);
		}
	}
	pid_t writer = wl_fork();
	if (writer == 0) {
		close(fifo_fd);
		fifo_writer(fifo_path, self, &ready);
	}
	children[0] = writer;

	int ring_in = ring[RING - 1][0], ring_out = ring[0][1];
	for (int k = 0; k < RING; k++) {
		if (ring[k][0] != ring_in)
			close(ring[k][0]);
		if (ring[k][1] != ring_out)
			close(ring[k][1]);
	}
	wl_ready_wait(&ready, RING);

	/* The slow pipe: 10000 bytes buffered before ready. */
	int slow[2];
	if (pipe2(slow, O_CLOEXEC) < 0)
		wl_fail("pipe2: %s", strerror(errno));
	uint64_t slow_written = 0, slow_read = 0;
	unsigned char chunk[SLOW_CHUNK];

	uint64_t token = 0;
	if (wl_write_all(ring_out, &token, sizeof(token)) < 0)
		wl_fail("ring write: %s", strerror(errno));
	uint64_t ring_last = 0, ring_hops = 0, fifo_next = 0;
	int ring_have_last = 0;

	struct wl_clock clk;
	struct wl_stall ring_stall, fifo_stall;
	double last_progress = 0;
	int is_ready = 0;
	wl_clock_init(&clk);
	wl_stall_init(&ring_stall, 0, 0);
	wl_stall_init(&fifo_stall, 0, 0);
	for (;;) {
		double active = wl_clock_tick(&clk);

		/* Slow pipe: top up, check FIONREAD, read 8 bytes. */
		if (slow_written - slow_read < 8) {
			for (size_t k = 0; k < SLOW_CHUNK; k++)
				chunk[k] = slow_byte(slow_written + k);
			if (wl_write_all(slow[1], chunk, SLOW_CHUNK) < 0)
				wl_fail("slow pipe write: %s", strerror(errno));
			slow_written += SLOW_CHUNK;
		}
		int avail = -1;
		if (ioctl(slow[0], FIONREAD, &avail) < 0)
			wl_fail("FIONREAD: %s", strerror(errno));
		if ((uint64_t)avail != slow_written - slow_read)
			wl_fail("slow pipe holds %d bytes, expected %llu", avail,
				(unsigned long long)(slow_written - slow_read));
		unsigned char b[8];
		if (wl_read_all(slow[0], b, sizeof(b)) != 0)
			wl_fail("slow pipe read: %s", strerror(errno));
		for (int k = 0; k < 8; k++)
			if (b[k] != slow_byte(slow_read + k))
				wl_fail("slow pipe byte %llu is %u, expected %u",
					(unsigned long long)(slow_read + k), b[k],
					slow_byte(slow_read + k));
		slow_read += 8;

		/* Ring: take the token if it is back, check and forward it. */
		struct pollfd p = { ring_in, POLLIN, 0 };
		if (poll(&p, 1, 0) > 0) {
			uint64_t t;
			int rc = wl_read_all(ring_in, &t, sizeof(t));
			if (rc != 0)
				wl_fail("ring: %s from P3", rc == 1 ? "EOF" : strerror(errno));
			if (t % RING != RING - 1 || (ring_have_last && t != ring_last + RING))
				wl_fail("ring: token %llu after %llu (expected +%d)",
					(unsigned long long)t, (unsigned long long)ring_last, RING);
			ring_last = t;
			ring_have_last = 1;
			ring_hops++;
			t++;
			if (wl_write_all(ring_out, &t, sizeof(t)) < 0)
				wl_fail("ring write: %s", strerror(errno));
		}
		if (wl_stalled(&ring_stall, ring_hops, active))
			wl_fail("ring token lost: no token for %.0f s", WL_STALL_LIMIT);

		/* FIFO: up to 4 records. */
		for (int k = 0; k < 4; k++) {
			uint64_t seq;
			ssize_t n = read(fifo_fd, &seq, sizeof(seq));
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				break;
			if (n < 0)
				wl_fail("FIFO read: %s", strerror(errno));
			if (n == 0)
				wl_fail("FIFO: EOF (writer gone)");
			if (n != sizeof(seq))
				wl_fail("FIFO: short read of %zd bytes", n);
			if (seq != fifo_next)
				wl_fail("FIFO: record %llu, expected %llu", (unsigned long long)seq,
					(unsigned long long)fifo_next);
			fifo_next++;
		}
		if (wl_stalled(&fifo_stall, fifo_next, active))
			wl_fail("FIFO: no data for %.0f s", WL_STALL_LIMIT);

		for (int i = 0; i < RING; i++)
			wl_check_child(children[i]);
		if (!is_ready) {
			/* Ready once the token went round and FIFO data flows. */
			if (ring_hops > 0 && fifo_next > 0) {
				wl_log("ready");
				is_ready = 1;
			}
		} else if (wl_progress_due(&last_progress)) {
			wl_progress();
		}
		wl_sleep_ms(10);
	}
}
