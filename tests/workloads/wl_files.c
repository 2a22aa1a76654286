/*
 * wl_files - file descriptors, offsets and the working directory.
 *
 * In --dir (which becomes the cwd, checked with getcwd) it creates data.bin
 * (256 KiB of a known byte sequence) and opens:
 *   fd_rw    data.bin O_RDWR|O_CLOEXEC, read sequentially 64 bytes a loop;
 *            content and lseek(SEEK_CUR) must match the expected position;
 *   fd_app   append.log O_WRONLY|O_APPEND, one 32-byte record a loop; its
 *            size must be records * 32 and the last record must read back;
 *   fd_a/b   data.bin and a dup() of it: reads alternate between them and
 *            the offset is shared;
 *   fd_sh    data.bin opened before fork(), shared with a child: parent and
 *            child take turns reading 8 bytes (over a request/ack pipe pair),
 *            each checking the offset the other left;
 *   1000     data.bin dup2()'d to fd 1000, parked at offset 4242 (checked
 *            with lseek(SEEK_CUR); pread does not move it), no FD_CLOEXEC;
 *   /dev/null (writes) and /dev/zero (reads zeros).
 * FD_CLOEXEC, the access mode and O_APPEND and each fd's st_dev/st_ino are
 * checked every loop.
 */
#include "wl.h"

#include <limits.h>
#include <sys/resource.h>
#include <sys/stat.h>

#define DATA_SIZE (256 * 1024)
#define REC_SIZE 32
#define FIXED_FD 1000
#define FIXED_POS 4242

static inline unsigned char data_byte(uint64_t off)
{
	return (unsigned char)(off * 131 + (off >> 12) * 7 + 0x33);
}

static void check_data(const unsigned char *buf, size_t len, uint64_t off, const char *what)
{
	for (size_t k = 0; k < len; k++)
		if (buf[k] != data_byte(off + k))
			wl_fail("%s: byte at offset %llu is %u, expected %u", what,
				(unsigned long long)(off + k), buf[k], data_byte(off + k));
}

static off_t cur_pos(int fd, const char *what)
{
	off_t pos = lseek(fd, 0, SEEK_CUR);
	if (pos < 0)
		wl_fail("%s: lseek: %s", what, strerror(errno));
	return pos;
}

static void read_at_cur(int fd, unsigned char *buf, size_t len, const char *what)
{
	int rc = wl_read_all(fd, buf, len);
	if (rc != 0)
		wl_fail("%s: read: %s", what, rc == 1 ? "unexpected EOF" : strerror(errno));
}

static void seek_to(int fd, off_t pos, const char *what)
{
	if (lseek(fd, pos, SEEK_SET) != pos)
		wl_fail("%s: lseek to %lld: %s", what, (long long)pos, strerror(errno));
}

/* What every fd must keep looking like. */
struct fd_expect {
	int fd;
	const char *what;
	int cloexec;   /* FD_CLOEXEC expected */
	int accmode;   /* O_RDONLY / O_WRONLY / O_RDWR */
	int flags;     /* other status flags that must be set (O_APPEND) */
	dev_t dev;
	ino_t ino;
};

static struct fd_expect fds[16];
static int nfds;

static void expect_fd(int fd, const char *what, int cloexec, int accmode, int flags)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		wl_fail("%s: fstat: %s", what, strerror(errno));
	fds[nfds++] = (struct fd_expect){ fd, what, cloexec, accmode, flags, st.st_dev, st.st_ino };
}

static void check_fds(void)
{
	for (int i = 0; i < nfds; i++) {
		const struct fd_expect *e = &fds[i];
		int fdfl = fcntl(e->fd, F_GETFD), fl = fcntl(e->fd, F_GETFL);
		struct stat st;
		if (fdfl < 0 || fl < 0 || fstat(e->fd, &st) < 0)
			wl_fail("fd %d (%s): %s", e->fd, e->what, strerror(errno));
		if (!!(fdfl & FD_CLOEXEC) != e->cloexec)
			wl_fail("fd %d (%s): FD_CLOEXEC is %s", e->fd, e->what,
				(fdfl & FD_CLOEXEC) ? "set" : "clear");
		if ((fl & O_ACCMODE) != e->accmode || (fl & e->flags) != e->flags)
			wl_fail("fd %d (%s): status flags %#o", e->fd, e->what, fl);
		if (st.st_dev != e->dev || st.st_ino != e->ino)
			wl_fail("fd %d (%s): now refers to dev %llu ino %llu, expected %llu %llu",
				e->fd, e->what, (unsigned long long)st.st_dev,
				(unsigned long long)st.st_ino, (unsigned long long)e->dev,
				(unsigned long long)e->ino);
	}
}

/* Child: reads 8 bytes from the shared fd on request, reports the offset. */
static void __attribute__((noreturn)) child_main(int fd_sh, int req, int ack, pid_t parent,
						 struct wl_ready *ready)
{
	wl_ready_signal(ready);
	for (;;) {
		int64_t off;
		int rc = wl_read_all(req, &off, sizeof(off));
		if (rc != 0)
			wl_fail("child: request pipe: %s", rc == 1 ? "EOF" : strerror(errno));
		wl_check_ppid(parent);
		off_t pos = cur_pos(fd_sh, "child shared fd");
		if (pos != off)
			wl_fail("child: shared fd at %lld, parent left it at %lld", (long long)pos,
				(long long)off);
		unsigned char buf[8];
		read_at_cur(fd_sh, buf, sizeof(buf), "child shared fd");
		check_data(buf, sizeof(buf), (uint64_t)pos, "child shared fd");
		int64_t now = cur_pos(fd_sh, "child shared fd");
		if (wl_write_all(ack, &now, sizeof(now)) < 0)
			wl_fail("child: ack pipe: %s", strerror(errno));
	}
}

int main(int argc, char **argv)
{
	wl_init(argc, argv, 1);

	/* fd 1000 needs RLIMIT_NOFILE above it. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur <= FIXED_FD) {
		rl.rlim_cur = rl.rlim_max > 1024 ? 1024 : rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	if (chdir(wl_dir) < 0)
		wl_fail("chdir %s: %s", wl_dir, strerror(errno));
	char want_cwd[PATH_MAX];
	if (!realpath(wl_dir, want_cwd))
		wl_fail("realpath %s: %s", wl_dir, strerror(errno));

	static unsigned char data[DATA_SIZE];
	for (size_t k = 0; k < DATA_SIZE; k++)
		data[k] = data_byte(k);
	int fd = open("data.bin", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || wl_write_all(fd, data, DATA_SIZE) < 0)
		wl_fail("write data.bin: %s", strerror(errno));
	close(fd);

	int fd_rw = open("data.bin", O_RDWR | O_CLOEXEC);
	int fd_app = open("append.log", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0640);
	int fd_app_rd = open("append.log", O_RDONLY | O_CLOEXEC);
	int fd_a = open("data.bin", O_RDONLY);
	int fd_b = fd_a >= 0 ? dup(fd_a) : -1;
	int fd_sh = open("data.bin", O_RDONLY | O_CLOEXEC);
	int fd_tmp = open("data.bin", O_RDONLY | O_CLOEXEC);
	int fd_null = open("/dev/null", O_WRONLY);
	int fd_zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	if (fd_rw < 0 || fd_app < 0 || fd_app_rd < 0 || fd_a < 0 || fd_b < 0 || fd_sh < 0 ||
	    fd_tmp < 0 || fd_null < 0 || fd_zero < 0)
		wl_fail("open: %s", strerror(errno));
	seek_to(fd_tmp, FIXED_POS, "fd 1000");
	if (dup2(fd_tmp, FIXED_FD) != FIXED_FD)
		wl_fail("dup2 to %d: %s", FIXED_FD, strerror(errno));
	close(fd_tmp);
	seek_to(fd_rw, 1234 * 64, "fd_rw");

	expect_fd(fd_rw, "data.bin O_RDWR", 1, O_RDWR, 0);
	expect_fd(fd_app, "append.log O_APPEND", 0, O_WRONLY, O_APPEND);
	expect_fd(fd_app_rd, "append.log reader", 1, O_RDONLY, 0);
	expect_fd(fd_a, "data.bin dup source", 0, O_RDONLY, 0);
	expect_fd(fd_b, "data.bin dup", 0, O_RDONLY, 0);
	expect_fd(fd_sh, "data.bin shared with child", 1, O_RDONLY, 0);
	expect_fd(FIXED_FD, "data.bin at fd 1000", 0, O_RDONLY, 0);
	expect_fd(fd_null, "/dev/null", 0, O_WRONLY, 0);
	expect_fd(fd_zero, "/dev/zero", 1, O_RDONLY, 0);

	int req[2], ack[2];
	if (pipe2(req, O_CLOEXEC) < 0 || pipe2(ack, O_CLOEXEC) < 0)
		wl_fail("pipe2: %s", strerror(errno));
	struct wl_ready ready;
	wl_ready_init(&ready);
	pid_t self = getpid();
	pid_t child = wl_fork();
	if (child == 0) {
		close(req[1]);
		close(ack[0]);
		child_main(fd_sh, req[0], ack[1], self, &ready);
	}
	close(req[0]);
	close(ack[1]);
	wl_ready_wait(&ready, 1);
	check_fds();
	wl_log("ready");

	off_t rw_pos = 1234 * 64, ab_pos = 0, sh_pos = 0;
	uint64_t records = 0;
	int outstanding = 0;
	int64_t sh_expect = 0;
	struct wl_clock clk;
	struct wl_stall sh_stall;
	double last_progress = 0;
	wl_clock_init(&clk);
	wl_stall_init(&sh_stall, 0, 0);
	for (unsigned loop = 0;; loop++) {
		double active = wl_clock_tick(&clk);
		unsigned char buf[64];

		/* cwd */
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, want_cwd) != 0)
			wl_fail("cwd is '%s', expected '%s'", cwd, want_cwd);

		/* fd_rw: sequential reads at a known position. */
		if (cur_pos(fd_rw, "fd_rw") != rw_pos)
			wl_fail("data.bin O_RDWR at %lld, expected %lld",
				(long long)cur_pos(fd_rw, "fd_rw"), (long long)rw_pos);
		if (rw_pos + 64 > DATA_SIZE) {
			rw_pos = 0;
			seek_to(fd_rw, 0, "fd_rw");
		}
		read_at_cur(fd_rw, buf, 64, "data.bin O_RDWR");
		check_data(buf, 64, (uint64_t)rw_pos, "data.bin O_RDWR");
		rw_pos += 64;

		/* fd_app: one record, size must follow. */
		char rec[REC_SIZE + 1];
		snprintf(rec, sizeof(rec), "record %024llu\n", (unsigned long long)records);
		if (wl_write_all(fd_app, rec, REC_SIZE) < 0)
			wl_fail("append.log write: %s", strerror(errno));
		records++;
		struct stat st;
		if (fstat(fd_app, &st) < 0)
			wl_fail("fstat append.log: %s", strerror(errno));
		if ((uint64_t)st.st_size != records * REC_SIZE)
			wl_fail("append.log is %lld bytes, expected %llu", (long long)st.st_size,
				(unsigned long long)(records * REC_SIZE));
		char back[REC_SIZE];
		if (wl_pread_all(fd_app_rd, back, REC_SIZE, st.st_size - REC_SIZE) != 0 ||
		    memcmp(back, rec, REC_SIZE) != 0)
			wl_fail("append.log: last record does not read back");

		/* fd_a / fd_b: one offset shared by the dup. */
		if (ab_pos + 32 > DATA_SIZE) {
			ab_pos = 0;
			seek_to(fd_a, 0, "dup pair");
		}
		read_at_cur(fd_a, buf, 16, "dup source");
		check_data(buf, 16, (uint64_t)ab_pos, "dup source");
		if (cur_pos(fd_b, "dup") != ab_pos + 16)
			wl_fail("dup'd fd at %lld, expected %lld (offset not shared)",
				(long long)cur_pos(fd_b, "dup"), (long long)(ab_pos + 16));
		read_at_cur(fd_b, buf, 16, "dup");
		check_data(buf, 16, (uint64_t)ab_pos + 16, "dup");
		ab_pos += 32;
		if (cur_pos(fd_a, "dup source") != ab_pos)
			wl_fail("dup source at %lld, expected %lld", (long long)cur_pos(fd_a, "a"),
				(long long)ab_pos);

		/* fd_sh: ping-pong with the child over one offset. */
		if (!outstanding) {
			if (cur_pos(fd_sh, "shared fd") != sh_pos)
				wl_fail("shared fd at %lld, expected %lld",
					(long long)cur_pos(fd_sh, "shared fd"), (long long)sh_pos);
			if (sh_pos + 16 > DATA_SIZE) {
				sh_pos = 0;
				seek_to(fd_sh, 0, "shared fd");
			}
			read_at_cur(fd_sh, buf, 8, "shared fd");
			check_data(buf, 8, (uint64_t)sh_pos, "shared fd");
			sh_pos += 8;
			int64_t off = sh_pos;
			if (wl_write_all(req[1], &off, sizeof(off)) < 0)
				wl_fail("request pipe: %s", strerror(errno));
			sh_expect = sh_pos + 8;
			outstanding = 1;
		} else {
			struct pollfd p = { ack[0], POLLIN, 0 };
			if (poll(&p, 1, 0) > 0) {
				int64_t off;
				int rc = wl_read_all(ack[0], &off, sizeof(off));
				if (rc != 0)
					wl_fail("ack pipe: %s", rc == 1 ? "EOF" : strerror(errno));
				if (off != sh_expect || cur_pos(fd_sh, "shared fd") != sh_expect)
					wl_fail("shared fd: child reports %lld, parent sees %lld, "
						"expected %lld", (long long)off,
						(long long)cur_pos(fd_sh, "shared fd"),
						(long long)sh_expect);
				sh_pos = sh_expect;
				outstanding = 0;
			}
		}
		if (wl_stalled(&sh_stall, (uint64_t)sh_pos + outstanding, active))
			wl_fail("child stopped answering on the shared fd for %.0f s", WL_STALL_LIMIT);

		/* fd 1000 stays parked; pread does not move it. */
		if (cur_pos(FIXED_FD, "fd 1000") != FIXED_POS)
			wl_fail("fd 1000 at %lld, expected %d", (long long)cur_pos(FIXED_FD, "fd 1000"),
				FIXED_POS);
		if (wl_pread_all(FIXED_FD, buf, 16, 8000) != 0)
			wl_fail("pread fd 1000: %s", strerror(errno));
		check_data(buf, 16, 8000, "fd 1000");

		/* /dev/null and /dev/zero */
		if (wl_write_all(fd_null, "discarded\n", 10) != 0)
			wl_fail("write /dev/null: %s", strerror(errno));
		memset(buf, 0xff, sizeof(buf));
		read_at_cur(fd_zero, buf, sizeof(buf), "/dev/zero");
		for (size_t k = 0; k < sizeof(buf); k++)
			if (buf[k] != 0)
				wl_fail("/dev/zero returned a non-zero byte");

		check_fds();
		wl_check_child(child);
		if (wl_progress_due(&last_progress))
			wl_progress();
		wl_sleep_ms(20);
	}
}
