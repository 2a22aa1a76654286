/*
 * wl_pty - pty pairs, a session with a pty as controlling terminal and a
 * foreground process group.
 *
 *   root R   pair A: master (O_NONBLOCK); writes "m <seq>\n" in two pieces
 *            (so a line is always half written), reads "r <seq>\r\n" back;
 *            pair B: master only, still locked, packet mode, exclusive.
 *   child C  setsid, opens A's slave, which becomes its controlling
 *            terminal (exclusive mode on); makes G's group the foreground.
 *   grandchild G  own process group, the foreground one: reads the lines
 *            from the slave (canonical mode) and answers each, in two
 *            pieces too; holds /dev/tty.
 * Termios (canonical, no echo, ICRNL, OPOST|ONLCR, split speeds, own
 * control characters), window size, pty numbers, slave names, lock,
 * packet and exclusive modes, sessions and the foreground group are
 * checked all the time; the message numbers must follow each other, so a
 * byte lost or doubled in either queue across a checkpoint is a FAIL.
 */
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>

#include "wl.h"

#define WINDOW 6 /* messages in flight */

struct expect {
	struct termios tio;
	struct winsize ws;
	int index_a, index_b;
	char slave_a[64];
	dev_t rdev_a;
};
static struct expect ex;

static int same_termios(const struct termios *a, const struct termios *b)
{
	return a->c_iflag == b->c_iflag && a->c_oflag == b->c_oflag && a->c_cflag == b->c_cflag &&
	       a->c_lflag == b->c_lflag && memcmp(a->c_cc, b->c_cc, sizeof(a->c_cc)) == 0 &&
	       cfgetispeed(a) == cfgetispeed(b) && cfgetospeed(a) == cfgetospeed(b);
}

static int get_int(int fd, unsigned long req, const char *what)
{
	int v = -1;
	if (ioctl(fd, req, &v) < 0)
		wl_fail("%s: %s", what, strerror(errno));
	return v;
}

/* Termios and window size of pair A, seen through fd (either side). */
static void check_tty(int fd, const char *who)
{
	struct termios t;
	struct winsize ws;
	if (tcgetattr(fd, &t) < 0)
		wl_fail("%s: tcgetattr: %s", who, strerror(errno));
	if (!same_termios(&t, &ex.tio))
		wl_fail("%s: termios changed: iflag %o/%o oflag %o/%o cflag %o/%o lflag %o/%o "
			"speeds %u %u", who, t.c_iflag, ex.tio.c_iflag, t.c_oflag, ex.tio.c_oflag,
			t.c_cflag, ex.tio.c_cflag, t.c_lflag, ex.tio.c_lflag,
			(unsigned)cfgetispeed(&t), (unsigned)cfgetospeed(&t));
	if (ioctl(fd, TIOCGWINSZ, &ws) < 0)
		wl_fail("%s: TIOCGWINSZ: %s", who, strerror(errno));
	if (ws.ws_row != ex.ws.ws_row || ws.ws_col != ex.ws.ws_col ||
	    ws.ws_xpixel != ex.ws.ws_xpixel || ws.ws_ypixel != ex.ws.ws_ypixel)
		wl_fail("%s: window size %ux%u (%ux%u px), expected %ux%u", who, ws.ws_row,
			ws.ws_col, ws.ws_xpixel, ws.ws_ypixel, ex.ws.ws_row, ex.ws.ws_col);
}

/* Our controlling terminal per /proc/self/stat (field 7) and its foreground group (8). */
static void stat_tty(int stat_fd, int *tty_nr, int *tpgid)
{
	char buf[1024];
	if (wl_pread_file(stat_fd, buf, sizeof(buf)) < 0)
		wl_fail("read /proc/self/stat: %s", strerror(errno));
	char *p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %d %d", tty_nr, tpgid) != 2)
		wl_fail("cannot parse /proc/self/stat");
}

static void check_ctty(int stat_fd, pid_t fg, const char *who)
{
	int nr, tpgid;
	stat_tty(stat_fd, &nr, &tpgid);
	unsigned maj = ((unsigned)nr >> 8) & 0xfff, min = ((unsigned)nr & 0xff) | (((unsigned)nr >> 12) & 0xfff00);
	if (makedev(maj, min) != ex.rdev_a)
		wl_fail("%s: controlling terminal %u:%u, expected %s", who, maj, min, ex.slave_a);
	if (tpgid != fg)
		wl_fail("%s: foreground group %d, expected %d", who, tpgid, (int)fg);
}

/* ---- G: the foreground reader on the slave -------------------------------- */

static void grandchild(int slave, int stat_fd, struct wl_ready *rd)
{
	pid_t me = getpid();
	if (setpgid(0, 0) < 0)
		wl_fail("setpgid: %s", strerror(errno));
	int devtty = open("/dev/tty", O_RDWR | O_CLOEXEC);
	if (devtty < 0)
		wl_fail("open /dev/tty: %s", strerror(errno));
	/* C makes our group the foreground one: wait for it. */
	for (int i = 0; tcgetpgrp(slave) != me; i++) {
		if (i > 2000)
			wl_fail("never became the foreground group");
		wl_sleep_ms(5);
	}
	wl_ready_signal(rd);

	char line[128];
	size_t have = 0;
	uint64_t seq = 0;
	for (;;) {
		ssize_t n = read(slave, line + have, sizeof(line) - 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			wl_fail("read slave: %s", n < 0 ? strerror(errno) : "end of file");
		have += (size_t)n;
		line[have] = '\0';
		/* Canonical mode: one read is one line. */
		if (line[have - 1] != '\n')
			wl_fail("read a piece of a line: '%s'", line);
		unsigned long long got;
		if (sscanf(line, "m %llu\n", &got) != 1 || got != seq + 1)
			wl_fail("slave read '%.*s', expected message %llu", (int)have - 1, line,
				(unsigned long long)seq + 1);
		seq = got;
		have = 0;
		char out[64];
		int len = snprintf(out, sizeof(out), "r %llu", got);
		if (wl_write_all(slave, out, (size_t)len) < 0 || wl_write_all(slave, "\n", 1) < 0)
			wl_fail("write slave: %s", strerror(errno));

		check_tty(slave, "G");
		char *name = ttyname(slave);
		if (!name || strcmp(name, ex.slave_a) != 0)
			wl_fail("ttyname %s, expected %s", name ? name : "(none)", ex.slave_a);
		if (tcgetpgrp(slave) != me || get_int(devtty, TIOCGPGRP, "/dev/tty TIOCGPGRP") != me)
			wl_fail("not the foreground group any more (%d)", (int)tcgetpgrp(slave));
		if (getpgrp() != me || getsid(0) != getppid())
			wl_fail("group %d session %d, expected %d %d", (int)getpgrp(), (int)getsid(0),
				(int)me, (int)getppid());
		struct stat st;
		if (fstat(devtty, &st) < 0 || st.st_rdev != makedev(5, 0))
			wl_fail("fd of /dev/tty is not /dev/tty");
		check_ctty(stat_fd, me, "G");
	}
}

/* ---- C: the session leader --------------------------------------------- */

static void child(struct wl_ready *rd)
{
	if (setsid() < 0)
		wl_fail("setsid: %s", strerror(errno));
	/* Without O_NOCTTY: a session leader's first terminal becomes its own. */
	int slave = open(ex.slave_a, O_RDWR | O_CLOEXEC);
	if (slave < 0)
		wl_fail("open %s: %s", ex.slave_a, strerror(errno));
	if (tcgetsid(slave) != getpid())
		wl_fail("%s did not become the controlling terminal", ex.slave_a);
	if (ioctl(slave, TIOCEXCL) < 0)
		wl_fail("TIOCEXCL: %s", strerror(errno));
	int stat_fd = wl_open_ro("/proc/self/stat");
	pid_t g = wl_fork();
	if (g == 0) {
		int gs = wl_open_ro("/proc/self/stat");
		close(stat_fd);
		grandchild(slave, gs, rd);
	}
	setpgid(g, g); /* G does it too; whoever comes first */
	if (tcsetpgrp(slave, g) < 0)
		wl_fail("tcsetpgrp: %s", strerror(errno));
	close(rd->fd[0]);
	close(rd->fd[1]);
	for (;;) {
		wl_sleep_ms(100);
		wl_check_child(g);
		if (tcgetsid(slave) != getpid())
			wl_fail("no longer the session of %s", ex.slave_a);
		if (tcgetpgrp(slave) != g)
			wl_fail("foreground group %d, expected %d", (int)tcgetpgrp(slave), (int)g);
		if (get_int(slave, TIOCGEXCL, "TIOCGEXCL") != 1)
			wl_fail("the slave lost its exclusive mode");
		check_tty(slave, "C");
		check_ctty(stat_fd, g, "C");
	}
}

/* ---- R: the master side -------------------------------------------------- */

static int open_master(int flags)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | flags);
	if (m < 0)
		wl_fail("posix_openpt: %s", strerror(errno));
	return m;
}

static void check_masters(int ma, int mb)
{
	if (get_int(ma, TIOCGPTN, "TIOCGPTN") != ex.index_a ||
	    get_int(mb, TIOCGPTN, "TIOCGPTN") != ex.index_b)
		wl_fail("pty numbers changed: %d %d, expected %d %d", get_int(ma, TIOCGPTN, "A"),
			get_int(mb, TIOCGPTN, "B"), ex.index_a, ex.index_b);
	char *name = ptsname(ma);
	if (!name || strcmp(name, ex.slave_a) != 0)
		wl_fail("ptsname %s, expected %s", name ? name : "(none)", ex.slave_a);
	if (get_int(ma, TIOCGPTLCK, "TIOCGPTLCK") != 0 || get_int(mb, TIOCGPTLCK, "TIOCGPTLCK") != 1)
		wl_fail("lock states changed (A %d, B %d)", get_int(ma, TIOCGPTLCK, "A"),
			get_int(mb, TIOCGPTLCK, "B"));
	if (get_int(ma, TIOCGPKT, "TIOCGPKT") != 0 || get_int(mb, TIOCGPKT, "TIOCGPKT") != 1)
		wl_fail("packet modes changed");
	if (get_int(mb, TIOCGEXCL, "TIOCGEXCL") != 1)
		wl_fail("master B lost its exclusive mode");
	int fl = fcntl(ma, F_GETFL);
	if (fl < 0 || !(fl & O_NONBLOCK))
		wl_fail("master A lost O_NONBLOCK");
	check_tty(ma, "R");
}

int main(int argc, char **argv)
{
	wl_init(argc, argv, 0);

	int ma = open_master(O_NONBLOCK);
	if (grantpt(ma) < 0 || unlockpt(ma) < 0)
		wl_fail("grantpt/unlockpt: %s", strerror(errno));
	ex.index_a = get_int(ma, TIOCGPTN, "TIOCGPTN");
	snprintf(ex.slave_a, sizeof(ex.slave_a), "%s", ptsname(ma));
	int mb = open_master(0); /* never unlocked: its slave cannot be opened */
	ex.index_b = get_int(mb, TIOCGPTN, "TIOCGPTN");
	int one = 1;
	if (ioctl(mb, TIOCPKT, &one) < 0 || ioctl(mb, TIOCEXCL) < 0)
		wl_fail("TIOCPKT/TIOCEXCL: %s", strerror(errno));

	struct termios t;
	if (tcgetattr(ma, &t) < 0)
		wl_fail("tcgetattr: %s", strerror(errno));
	t.c_iflag = ICRNL | IUTF8;
	t.c_oflag = OPOST | ONLCR;
	t.c_lflag = ICANON | ISIG | IEXTEN | ECHOE | ECHOK; /* no ECHO */
	t.c_cflag = (t.c_cflag & ~(CSIZE | PARENB)) | CS8 | CREAD;
	t.c_cc[VERASE] = 0x08;
	t.c_cc[VKILL] = 0x0b;
	t.c_cc[VINTR] = 0x1a;
	t.c_cc[VEOF] = 0x05;
	cfsetispeed(&t, B9600);
	cfsetospeed(&t, B19200);
	if (tcsetattr(ma, TCSANOW, &t) < 0)
		wl_fail("tcsetattr: %s", strerror(errno));
	if (tcgetattr(ma, &ex.tio) < 0)
		wl_fail("tcgetattr: %s", strerror(errno));
	struct winsize ws = { .ws_row = 37, .ws_col = 101, .ws_xpixel = 808, .ws_ypixel = 592 };
	if (ioctl(ma, TIOCSWINSZ, &ws) < 0)
		wl_fail("TIOCSWINSZ: %s", strerror(errno));
	ex.ws = ws;
	struct stat st;
	if (stat(ex.slave_a, &st) < 0)
		wl_fail("stat %s: %s", ex.slave_a, strerror(errno));
	ex.rdev_a = st.st_rdev;

	struct wl_ready rd;
	wl_ready_init(&rd);
	pid_t c = wl_fork();
	if (c == 0) {
		close(ma);
		close(mb);
		child(&rd);
	}
	wl_ready_wait(&rd, 1);
	check_masters(ma, mb);

	char in[256];
	size_t have = 0;
	uint64_t sent = 0, answered = 0;
	char pending[64] = ""; /* the second half of the last message */
	struct wl_clock clk;
	wl_clock_init(&clk);
	struct wl_stall stall;
	wl_stall_init(&stall, 0, 0);
	double last_progress = wl_now();
	int ready = 0;
	for (;;) {
		double active = wl_clock_tick(&clk);
		/* The rest of the last message, then the first half of the next. */
		if (pending[0]) {
			ssize_t n = write(ma, pending, strlen(pending));
			if (n == (ssize_t)strlen(pending))
				pending[0] = '\0';
			else if (n >= 0)
				memmove(pending, pending + n, strlen(pending + n) + 1);
			else if (errno != EAGAIN && errno != EINTR)
				wl_fail("write master: %s", strerror(errno));
		}
		if (!pending[0] && sent - answered < WINDOW) {
			char msg[64];
			sent++;
			int len = snprintf(msg, sizeof(msg), "m %llu\n", (unsigned long long)sent);
			int half = len / 2;
			if (wl_write_all(ma, msg, (size_t)half) < 0)
				wl_fail("write master: %s", strerror(errno));
			memcpy(pending, msg + half, (size_t)(len - half) + 1);
		}
		struct pollfd p = { ma, POLLIN, 0 };
		int r = poll(&p, 1, 20);
		if (r < 0 && errno != EINTR)
			wl_fail("poll: %s", strerror(errno));
		if (r > 0 && (p.revents & POLLIN)) {
			ssize_t n = read(ma, in + have, sizeof(in) - 1 - have);
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				wl_fail("read master: %s", strerror(errno));
			if (n > 0)
				have += (size_t)n;
			in[have] = '\0';
			char *nl;
			while ((nl = strchr(in, '\n'))) {
				unsigned long long got;
				if (nl == in || nl[-1] != '\r' || sscanf(in, "r %llu\r", &got) != 1 ||
				    got != answered + 1)
					wl_fail("master read '%.*s', expected 'r %llu\\r\\n'", (int)(nl - in),
						in, (unsigned long long)answered + 1);
				answered = got;
				have -= (size_t)(nl + 1 - in);
				memmove(in, nl + 1, have + 1);
			}
			if (have > 64)
				wl_fail("master read garbage: '%s'", in);
		}
		if (wl_stalled(&stall, answered, active))
			wl_fail("no answer for %.0f s (message %llu)", WL_STALL_LIMIT,
				(unsigned long long)answered + 1);
		if (wl_progress_due(&last_progress)) {
			wl_check_child(c);
			check_masters(ma, mb);
			if (!ready && answered > 0) {
				wl_log("ready");
				ready = 1;
			}
			if (ready)
				wl_progress();
		}
	}
}
