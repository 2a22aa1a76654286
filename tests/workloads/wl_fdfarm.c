/*
 * wl_fdfarm - a wide tree for scripts/bench: --procs N processes (the root
 * and N-1 children), each holding --fds M open files of several kinds
 * (a file in --dir at its own offset, /dev/null, pipes to itself, eventfds
 * where the kernel has them, dup()s), all idle. Logs "ready" once every
 * process is set up. Not a self-checking e2e workload: the benchmark only
 * times dump and restore of it and checks every process came back.
 */
#include <sys/eventfd.h>

#include "wl.h"

static void hold_fds(int nfds, int idx)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/f%d", wl_dir, idx);
	int f = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (f < 0)
		wl_fail("open %s: %s", path, strerror(errno));
	wl_write_all(f, path, strlen(path));
	int opened = 1;
	while (opened < nfds) {
		switch (opened % 5) {
		case 0:
			if (open("/dev/null", O_RDWR | O_CLOEXEC) < 0)
				wl_fail("open /dev/null: %s", strerror(errno));
			opened++;
			break;
		case 1: {
			int p[2];
			if (pipe2(p, O_CLOEXEC) < 0)
				wl_fail("pipe: %s", strerror(errno));
			opened += 2;
			break;
		}
		case 2:
			if (eventfd(opened, EFD_CLOEXEC) < 0)
				wl_fail("eventfd: %s", strerror(errno));
			opened++;
			break;
		default:
			if (dup(f) < 0)
				wl_fail("dup: %s", strerror(errno));
			opened++;
			break;
		}
	}
}

int main(int argc, char **argv)
{
	int procs = 100, fds = 50;
	/* Our own options first; wl_init parses --log/--dir. */
	for (int i = 1; i + 1 < argc; i++) {
		if (!strcmp(argv[i], "--procs")) {
			procs = atoi(argv[i + 1]);
			argv[i] = argv[i + 1] = (char *)"--ignore";
		} else if (!strcmp(argv[i], "--fds")) {
			fds = atoi(argv[i + 1]);
			argv[i] = argv[i + 1] = (char *)"--ignore";
		}
	}
	int n = 1;
	char **args = calloc((size_t)argc + 1, sizeof *args);
	args[0] = argv[0];
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--ignore"))
			args[n++] = argv[i];
	wl_init(n, args, 1);
	struct wl_ready ready;
	wl_ready_init(&ready);
	for (int i = 1; i < procs; i++) {
		if (wl_fork() == 0) {
			hold_fds(fds, i);
			wl_ready_signal(&ready);
			for (;;)
				pause();
		}
	}
	hold_fds(fds, 0);
	wl_ready_wait(&ready, procs - 1);
	wl_log("ready");
	for (;;)
		pause();
}
