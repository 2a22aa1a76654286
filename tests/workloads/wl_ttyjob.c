/*
 * wl_ttyjob - a job started from a shell on a terminal (the e2e scenario
 * shell-job): stdin, stdout and stderr are the terminal, which is the
 * controlling terminal of the shell's session, and /dev/tty is open too.
 *
 * Unlike the other workloads it writes to stdout: "tick <N>" every 100 ms,
 * so the test sees which terminal it writes to. While its process group is
 * the terminal's foreground one it reads lines from stdin, logs
 * "input <line>" and writes "got <line>". It logs "foreground <0|1>" and
 * "tty <name of stdin>" when they change. It fails if a standard fd stops
 * being a terminal or the process loses its controlling terminal.
 */
#include <sys/ioctl.h>
#include <termios.h>

#include "wl.h"

int main(int argc, char **argv)
{
	wl_init(argc, argv, 0);
	int devtty = open("/dev/tty", O_RDWR | O_CLOEXEC);
	if (devtty < 0)
		wl_fail("open /dev/tty: %s", strerror(errno));
	wl_log("ready");

	int fg = -1;
	char tty[64] = "";
	char line[256];
	size_t have = 0;
	for (;;) {
		for (int fd = 0; fd < 3; fd++)
			if (!isatty(fd))
				wl_fail("fd %d is not a terminal any more", fd);
		pid_t pg = -1;
		if (ioctl(devtty, TIOCGPGRP, &pg) < 0)
			wl_fail("no controlling terminal: %s", strerror(errno));
		int now_fg = pg == getpgrp();
		if (now_fg != fg) {
			wl_log("foreground %d", now_fg);
			fg = now_fg;
		}
		const char *name = ttyname(0);
		if (name && strcmp(name, tty) != 0) {
			snprintf(tty, sizeof(tty), "%s", name);
			wl_log("tty %s", tty);
		}

		wl_progress();
		char out[64];
		int len = snprintf(out, sizeof(out), "tick %llu\n", (unsigned long long)wl_progress_n);
		if (wl_write_all(1, out, (size_t)len) < 0)
			wl_fail("write stdout: %s", strerror(errno));

		/* Reading in the background would stop us (SIGTTIN). */
		struct pollfd p = { 0, POLLIN, 0 };
		int r = poll(&p, 1, fg ? 100 : 0);
		if (r > 0 && fg) {
			ssize_t n = read(0, line + have, sizeof(line) - 1 - have);
			if (n > 0) {
				have += (size_t)n;
				line[have] = '\0';
				char *nl;
				while ((nl = strchr(line, '\n'))) {
					*nl = '\0';
					wl_log("input %s", line);
					dprintf(1, "got %s\n", line);
					have -= (size_t)(nl + 1 - line);
					memmove(line, nl + 1, have + 1);
				}
			}
		} else if (!fg) {
			wl_sleep_ms(100);
		}
	}
}
