/*
 * wl_zombie - children that exited and were not reaped yet.
 *
 * Forks one child that exits with status 42 and one that dies of SIGTERM,
 * and leaves both unreaped: each must stay a zombie (state Z, our child)
 * until progress 60, when they are reaped and their statuses must be
 * exactly those. A third child stays alive as a control.
 */
#include "wl.h"

static char proc_state(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return '?';
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : '?';
}

int main(int argc, char **argv)
{
	wl_init(argc, argv, 0);
	pid_t exited = wl_fork();
	if (exited == 0)
		_exit(42);
	pid_t killed = wl_fork();
	if (killed == 0) {
		signal(SIGTERM, SIG_DFL);
		raise(SIGTERM);
		_exit(1);
	}
	pid_t alive = wl_fork();
	if (alive == 0)
		for (;;)
			pause();
	/* Both are zombies before `ready`, so the dump sees them as such. */
	while (proc_state(exited) != 'Z' || proc_state(killed) != 'Z')
		wl_sleep_ms(5);
	wl_log("ready");
	int reaped = 0;
	double last = 0;
	for (;;) {
		if (!reaped) {
			if (proc_state(exited) != 'Z' || proc_state(killed) != 'Z')
				wl_fail("children are not zombies any more: %c %c", proc_state(exited),
					proc_state(killed));
			if (wl_progress_n >= 60) {
				int st1, st2;
				if (waitpid(exited, &st1, 0) != exited || waitpid(killed, &st2, 0) != killed)
					wl_fail("waitpid: %s", strerror(errno));
				if (!WIFEXITED(st1) || WEXITSTATUS(st1) != 42)
					wl_fail("exited child: wait status %#x, expected exit 42", st1);
				if (!WIFSIGNALED(st2) || WTERMSIG(st2) != SIGTERM)
					wl_fail("killed child: wait status %#x, expected SIGTERM", st2);
				reaped = 1;
				wl_log("reaped both zombies");
			}
		}
		wl_check_child(alive);
		if (wl_progress_due(&last))
			wl_progress();
		wl_sleep_ms(20);
	}
}
