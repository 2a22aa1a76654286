/*
 * wl_identity - credentials and per-process attributes (needs root to start).
 *
 * Sets umask 027, comm "wl-ident" (PR_SET_NAME), RLIMIT_NOFILE soft limit
 * 777, RLIMIT_CORE 0/0, supplementary groups {1000, 1001}, then drops to
 * uid/gid 1000 entirely (setresgid, setresuid: no capabilities left).
 * Checked every loop: getresuid, getresgid, getgroups, the Umask, Groups
 * and Cap* lines of /proc/self/status (CapEff/CapPrm/CapInh/CapAmb 0,
 * CapBnd unchanged), getrlimit, PR_GET_NAME and PR_GET_DUMPABLE.
 */
#include "wl.h"

#include <grp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#define ID 1000

static int status_fd = -1;

/* Returns the value of "Key:" in /proc/self/status (trimmed) into out. */
static const char *status_field(const char *status, const char *key, char *out, size_t size)
{
	size_t klen = strlen(key);
	out[0] = '\0';
	for (const char *line = status; line && *line;) {
		if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
			const char *v = line + klen + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			size_t n = strcspn(v, "\n");
			while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
				n--;
			if (n >= size)
				n = size - 1;
			memcpy(out, v, n);
			out[n] = '\0';
			return out;
		}
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	return out;
}

static char want_capbnd[64];
static int want_dumpable;

static void check_all(void)
{
	uid_t r, e, s;
	gid_t rg, eg, sg;
	if (getresuid(&r, &e, &s) < 0 || r != ID || e != ID || s != ID)
		wl_fail("uids %d/%d/%d, expected %d", (int)r, (int)e, (int)s, ID);
	if (getresgid(&rg, &eg, &sg) < 0 || rg != ID || eg != ID || sg != ID)
		wl_fail("gids %d/%d/%d, expected %d", (int)rg, (int)eg, (int)sg, ID);
	gid_t groups[16];
	int n = getgroups(16, groups);
	if (n != 2 || groups[0] != 1000 || groups[1] != 1001)
		wl_fail("getgroups: %d groups (%d, %d...), expected {1000, 1001}", n,
			n > 0 ? (int)groups[0] : -1, n > 1 ? (int)groups[1] : -1);

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur != 777)
		wl_fail("RLIMIT_NOFILE soft %llu, expected 777", (unsigned long long)rl.rlim_cur);
	if (getrlimit(RLIMIT_CORE, &rl) < 0 || rl.rlim_cur != 0 || rl.rlim_max != 0)
		wl_fail("RLIMIT_CORE %llu/%llu, expected 0/0", (unsigned long long)rl.rlim_cur,
			(unsigned long long)rl.rlim_max);

	char name[16] = "";
	if (prctl(PR_GET_NAME, name, 0, 0, 0) < 0 || strcmp(name, "wl-ident") != 0)
		wl_fail("comm is '%s', expected 'wl-ident'", name);
	int d = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	if (d != want_dumpable)
		wl_fail("dumpable is %d, expected %d", d, want_dumpable);

	static char status[8192];
	char v[64];
	if (wl_pread_file(status_fd, status, sizeof(status)) < 0)
		wl_fail("read /proc/self/status: %s", strerror(errno));
	if (strcmp(status_field(status, "Umask", v, sizeof(v)), "0027") != 0)
		wl_fail("Umask is '%s', expected 0027", v);
	if (strcmp(status_field(status, "Groups", v, sizeof(v)), "1000 1001") != 0)
		wl_fail("Groups is '%s', expected '1000 1001'", v);
	static const char *const zero_caps[] = { "CapInh", "CapPrm", "CapEff", "CapAmb" };
	for (size_t k = 0; k < sizeof(zero_caps) / sizeof(zero_caps[0]); k++)
		if (strcmp(status_field(status, zero_caps[k], v, sizeof(v)), "0000000000000000") != 0)
			wl_fail("%s is '%s', expected 0", zero_caps[k], v);
	if (strcmp(status_field(status, "CapBnd", v, sizeof(v)), want_capbnd) != 0)
		wl_fail("CapBnd is '%s', expected '%s'", v, want_capbnd);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv, 0);
	status_fd = wl_open_ro("/proc/self/status");

	umask(027);
	if (prctl(PR_SET_NAME, "wl-ident", 0, 0, 0) < 0)
		wl_fail("PR_SET_NAME: %s", strerror(errno));
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		wl_fail("getrlimit: %s", strerror(errno));
	rl.rlim_cur = 777;
	if (rl.rlim_max < 777)
		rl.rlim_max = 777;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		wl_fail("RLIMIT_NOFILE: %s", strerror(errno));
	rl.rlim_cur = rl.rlim_max = 0;
	if (setrlimit(RLIMIT_CORE, &rl) < 0)
		wl_fail("RLIMIT_CORE: %s", strerror(errno));

	const gid_t groups[] = { 1000, 1001 };
	if (setgroups(2, groups) < 0)
		wl_fail("setgroups (needs root): %s", strerror(errno));
	if (setresgid(ID, ID, ID) < 0)
		wl_fail("setresgid: %s", strerror(errno));
	if (setresuid(ID, ID, ID) < 0)
		wl_fail("setresuid: %s", strerror(errno));

	static char status[8192];
	if (wl_pread_file(status_fd, status, sizeof(status)) < 0)
		wl_fail("read /proc/self/status: %s", strerror(errno));
	status_field(status, "CapBnd", want_capbnd, sizeof(want_capbnd));
	want_dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	check_all();
	wl_log("ready");

	double last_progress = 0;
	for (;;) {
		check_all();
		if (wl_progress_due(&last_progress))
			wl_progress();
		wl_sleep_ms(20);
	}
}
