/*
 * tcp_client - the peer outside the checkpointed tree, for the tcp* and udp
 * e2e scenarios (runs in another network namespace).
 *
 *   tcp_client --log FILE --connect ADDR:PORT [--burst-file PATH] [--burst-bytes N]
 *   tcp_client --log FILE --udp ADDR:PORT
 *   tcp_client --log FILE --hold ADDR:PORT
 *   tcp_client --log FILE --half ADDR:PORT | --shut ADDR:PORT
 *
 * --connect  sends numbered messages (tcpmsg.h) to wl_tcpserv one after the
 *            other and checks every echo: the next number, the right bytes.
 *            Once PATH exists it sends N bytes of messages at once (a
 *            burst), reading echoes as they come, then carries on.
 * --udp      sends a numbered datagram every 20 ms and checks the echoes
 *            (datagrams may be lost; echoes must be intact and in order).
 * --hold     connects and holds the connection without sending.
 * --half     after 30 echoes, shuts down its side (the server is left in
 *            CLOSE_WAIT) and checks the numbered messages the server keeps
 *            sending ("progress N": messages checked).
 * --shut     after 30 echoes, asks the server to shut down its side (it is
 *            left in FIN_WAIT2), checks the EOF, then keeps sending
 *            numbered messages every 20 ms ("progress N": messages sent;
 *            the server logs "oneway N" as it checks them).
 * Log lines: "start PID", "connected", "progress N" (N echoes checked, at
 * least every 100 ms while they come), "burst queued", "burst done",
 * "udp N", "pause MS before echo N" (no echo for 100 ms or more: what a
 * checkpoint or migration looked like from here), and "FAIL PID: what" for a reset, an EOF, a wrong or missing
 * echo, or no echo for 30 s; the process then exits 1. SIGTERM: exit 0.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "tcpmsg.h"
#include "wl.h"

#define SMALL 200
#define BIG 60000
#define STALL 30.0

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static char *buf_grow(char *b, size_t *cap, size_t need)
{
	if (need <= *cap)
		return b;
	size_t c = *cap ? *cap : 65536;
	while (c < need)
		c *= 2;
	b = realloc(b, c);
	if (!b)
		wl_fail("out of memory");
	*cap = c;
	return b;
}

static int connect_to(const char *spec)
{
	struct sockaddr_storage a;
	socklen_t alen;
	if (tcpmsg_parse_addr(spec, &a, &alen) < 0)
		wl_fail("bad address %s", spec);
	int fd = socket(a.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		wl_fail("socket: %s", strerror(errno));
	int r;
	do
		r = connect(fd, (struct sockaddr *)&a, alen);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		wl_fail("connect %s: %s", spec, strerror(errno));
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	wl_log("connected");
	return fd;
}

static int run_tcp(const char *spec, const char *burst_file, size_t burst_bytes)
{
	int fd = connect_to(spec);
	if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
		wl_fail("O_NONBLOCK: %s", strerror(errno));
	char *out = NULL, *in = NULL;
	size_t out_cap = 0, in_cap = 0, out_len = 0, out_off = 0, in_len = 0;
	uint64_t next_send = 0, next_recv = 0, logged = 0;
	int burst = burst_file ? 0 : 2; /* 0 waiting, 1 running, 2 done */
	double last_echo = wl_now(), last_log = wl_now();
	/* The burst starts with 1.5 s of writing without reading, so that the
	 * server's output backs up while its input keeps coming. */
	double read_from = 0;

	while (!stop) {
		if (burst == 0 && access(burst_file, F_OK) == 0) {
			size_t n = burst_bytes / BIG + 1;
			for (size_t i = 0; i < n; i++) {
				struct tcpmsg_hdr h = { TCPMSG_MAGIC, BIG, next_send++ };
				out = buf_grow(out, &out_cap, out_len + sizeof(h) + BIG);
				memcpy(out + out_len, &h, sizeof(h));
				tcpmsg_fill(out + out_len + sizeof(h), BIG, h.seq);
				out_len += sizeof(h) + BIG;
			}
			burst = 1;
			read_from = wl_now() + 1.5;
			last_echo = read_from;
			wl_log("burst queued");
		}
		if (next_recv == next_send && out_off == out_len) {
			if (burst == 1) {
				burst = 2;
				wl_log("burst done");
			}
			struct tcpmsg_hdr h = { TCPMSG_MAGIC, SMALL, next_send++ };
			out_off = out_len = 0;
			out = buf_grow(out, &out_cap, sizeof(h) + SMALL);
			memcpy(out, &h, sizeof(h));
			tcpmsg_fill(out + sizeof(h), SMALL, h.seq);
			out_len = sizeof(h) + SMALL;
		}
		short want_in = wl_now() >= read_from ? POLLIN : 0;
		struct pollfd p = { fd, want_in | (out_off < out_len ? POLLOUT : 0), 0 };
		int rc = poll(&p, 1, 20);
		if (rc < 0 && errno != EINTR)
			wl_fail("poll: %s", strerror(errno));
		if (p.revents & POLLOUT) {
			ssize_t n = write(fd, out + out_off, out_len - out_off);
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				wl_fail("write after %llu echoes: %s", (unsigned long long)next_recv,
					strerror(errno));
			if (n > 0)
				out_off += (size_t)n;
			if (out_off == out_len && burst != 1)
				out_off = out_len = 0;
		}
		if (want_in && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
			in = buf_grow(in, &in_cap, in_len + 65536);
			ssize_t n = read(fd, in + in_len, 65536);
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				wl_fail("read after %llu echoes: %s", (unsigned long long)next_recv,
					strerror(errno));
			if (n == 0)
				wl_fail("EOF after %llu echoes: the server closed", (unsigned long long)next_recv);
			if (n > 0)
				in_len += (size_t)n;
			size_t pos = 0;
			for (;;) {
				struct tcpmsg_hdr h;
				if (in_len - pos < sizeof(h))
					break;
				memcpy(&h, in + pos, sizeof(h));
				if (h.magic != TCPMSG_MAGIC || h.len > TCPMSG_MAX)
					wl_fail("bad echo header after %llu echoes", (unsigned long long)next_recv);
				if (in_len - pos < sizeof(h) + h.len)
					break;
				if (h.seq != next_recv)
					wl_fail("echo %llu arrived, expected %llu", (unsigned long long)h.seq,
						(unsigned long long)next_recv);
				if (!tcpmsg_check(in + pos + sizeof(h), h.len, h.seq))
					wl_fail("echo %llu is corrupt", (unsigned long long)h.seq);
				next_recv++;
				/* A pause the user would notice (a migration's downtime, as
				 * the peer sees it). */
				if (next_recv > 1 && wl_now() - last_echo >= 0.1)
					wl_log("pause %.0f ms before echo %llu", (wl_now() - last_echo) * 1000,
					       (unsigned long long)h.seq);
				last_echo = wl_now();
				pos += sizeof(h) + h.len;
			}
			memmove(in, in + pos, in_len - pos);
			in_len -= pos;
		}
		if (burst == 1 && out_off == out_len)
			out_off = out_len = 0;
		if (next_recv != logged && wl_now() - last_log >= 0.1) {
			wl_log("progress %llu", (unsigned long long)next_recv);
			logged = next_recv;
			last_log = wl_now();
		}
		if (next_recv != next_send && wl_now() - last_echo > STALL)
			wl_fail("no echo for %.0f s (waiting for %llu)", STALL, (unsigned long long)next_recv);
	}
	/* Goodbye: our side first, then the echoes still due and the server's EOF. */
	if (shutdown(fd, SHUT_WR) < 0)
		wl_fail("shutdown: %s", strerror(errno));
	double until = wl_now() + 5;
	for (;;) {
		char tmp[65536];
		struct pollfd p = { fd, POLLIN, 0 };
		if (wl_now() > until)
			wl_fail("no EOF from the server within 5 s of our shutdown");
		if (poll(&p, 1, 100) <= 0)
			continue;
		ssize_t n = read(fd, tmp, sizeof(tmp));
		if (n == 0)
			break;
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			wl_fail("read after shutdown: %s", strerror(errno));
	}
	wl_log("done %llu", (unsigned long long)next_recv);
	return 0;
}

static int run_udp(const char *spec)
{
	struct sockaddr_storage a;
	socklen_t alen;
	if (tcpmsg_parse_addr(spec, &a, &alen) < 0)
		wl_fail("bad address %s", spec);
	int fd = socket(a.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		wl_fail("socket: %s", strerror(errno));
	uint64_t seq = 0, got = 0, last_seen = 0;
	int any = 0;
	double last_send = 0;
	while (!stop) {
		if (wl_now() - last_send >= 0.02) {
			char d[64];
			int n = snprintf(d, sizeof(d), "udp %llu", (unsigned long long)seq++);
			sendto(fd, d, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&a, alen);
			last_send = wl_now();
		}
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 10) > 0) {
			char d[128];
			ssize_t n = recv(fd, d, sizeof(d) - 1, MSG_DONTWAIT);
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				wl_fail("udp recv: %s", strerror(errno));
			if (n > 0) {
				d[n] = '\0';
				unsigned long long v;
				if (sscanf(d, "udp %llu", &v) != 1 || v >= seq)
					wl_fail("udp: bad echo '%s'", d);
				if (any && v <= last_seen)
					wl_fail("udp: echo %llu after %llu", v, (unsigned long long)last_seen);
				any = 1;
				last_seen = v;
				wl_log("udp %llu", (unsigned long long)++got);
			}
		}
	}
	wl_log("done %llu", (unsigned long long)got);
	return 0;
}

static void send_all(int fd, const void *p, size_t len, uint64_t n)
{
	if (wl_write_all(fd, p, len) < 0)
		wl_fail("write after %llu messages: %s", (unsigned long long)n, strerror(errno));
}

/* Reads exactly one message, checks it is seq (or the header `magic`). */
static void read_msg(int fd, uint64_t seq, uint32_t magic)
{
	struct tcpmsg_hdr h;
	char body[SMALL];
	int r = wl_read_all(fd, &h, sizeof(h));
	if (r != 0)
		wl_fail("waiting for message %llu: %s", (unsigned long long)seq,
			r > 0 ? "EOF" : strerror(errno));
	if (h.magic != magic)
		wl_fail("message %llu: bad header", (unsigned long long)seq);
	if (magic != TCPMSG_MAGIC)
		return;
	if (h.seq != seq || h.len > SMALL)
		wl_fail("message %llu arrived, expected %llu", (unsigned long long)h.seq,
			(unsigned long long)seq);
	r = wl_read_all(fd, body, h.len);
	if (r != 0 || !tcpmsg_check(body, h.len, seq))
		wl_fail("message %llu is corrupt or cut", (unsigned long long)seq);
}

/* Blocking: the --half and --shut peers do one thing at a time. */
static int run_half(const char *spec, int shut)
{
	int fd = connect_to(spec);
	struct timeval tv = { 30, 0 }; /* a stall is a FAIL, not a hang */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char msg[sizeof(struct tcpmsg_hdr) + SMALL];
	uint64_t seq = 0;
	for (; seq < 30; seq++) {
		struct tcpmsg_hdr h = { TCPMSG_MAGIC, SMALL, seq };
		memcpy(msg, &h, sizeof(h));
		tcpmsg_fill(msg + sizeof(h), SMALL, seq);
		send_all(fd, msg, sizeof(msg), seq);
		read_msg(fd, seq, TCPMSG_MAGIC);
	}
	struct tcpmsg_hdr req = { shut ? TCPMSG_SHUT : TCPMSG_HALF, 0, 0 };
	send_all(fd, &req, sizeof(req), seq);
	if (!shut) {
		if (shutdown(fd, SHUT_WR) < 0)
			wl_fail("shutdown: %s", strerror(errno));
		wl_log("our side shut down");
		double last = 0;
		while (!stop) {
			read_msg(fd, seq++, TCPMSG_MAGIC);
			if (wl_now() - last >= 0.1) {
				wl_log("progress %llu", (unsigned long long)seq);
				last = wl_now();
			}
		}
		return 0;
	}
	read_msg(fd, seq, TCPMSG_SHUT);
	char c;
	ssize_t n = read(fd, &c, 1);
	if (n != 0)
		wl_fail("expected EOF after the server's shutdown, read says %zd", n);
	wl_log("server shut");
	while (!stop) {
		struct tcpmsg_hdr h = { TCPMSG_MAGIC, SMALL, seq };
		memcpy(msg, &h, sizeof(h));
		tcpmsg_fill(msg + sizeof(h), SMALL, seq);
		send_all(fd, msg, sizeof(msg), seq);
		wl_log("progress %llu", (unsigned long long)++seq);
		wl_sleep_ms(20);
	}
	return 0;
}

static int run_hold(const char *spec)
{
	int fd = connect_to(spec);
	while (!stop) {
		struct pollfd p = { fd, POLLIN, 0 };
		int rc = poll(&p, 1, 100);
		if (rc > 0) {
			char c;
			ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
			if (n == 0)
				wl_fail("held connection: EOF");
			if (n < 0 && errno != EAGAIN)
				wl_fail("held connection: %s", strerror(errno));
		}
	}
	wl_log("done");
	return 0;
}

int main(int argc, char **argv)
{
	const char *connect_spec = NULL, *udp_spec = NULL, *hold_spec = NULL, *burst_file = NULL;
	const char *half_spec = NULL, *shut_spec = NULL;
	size_t burst_bytes = 4u << 20;
	char *wl_argv[4] = { argv[0], NULL, NULL, NULL };
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--connect") == 0 && i + 1 < argc)
			connect_spec = argv[++i];
		else if (strcmp(argv[i], "--udp") == 0 && i + 1 < argc)
			udp_spec = argv[++i];
		else if (strcmp(argv[i], "--hold") == 0 && i + 1 < argc)
			hold_spec = argv[++i];
		else if (strcmp(argv[i], "--half") == 0 && i + 1 < argc)
			half_spec = argv[++i];
		else if (strcmp(argv[i], "--shut") == 0 && i + 1 < argc)
			shut_spec = argv[++i];
		else if (strcmp(argv[i], "--burst-file") == 0 && i + 1 < argc)
			burst_file = argv[++i];
		else if (strcmp(argv[i], "--burst-bytes") == 0 && i + 1 < argc)
			burst_bytes = strtoull(argv[++i], NULL, 0);
		else if (strcmp(argv[i], "--log") == 0 && i + 1 < argc) {
			wl_argv[1] = argv[i];
			wl_argv[2] = argv[++i];
		} else {
			fprintf(stderr, "tcp_client: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	wl_init(wl_argv[1] ? 3 : 1, wl_argv, 0);
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = { 0 };
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (connect_spec)
		return run_tcp(connect_spec, burst_file, burst_bytes);
	if (udp_spec)
		return run_udp(udp_spec);
	if (hold_spec)
		return run_hold(hold_spec);
	if (half_spec)
		return run_half(half_spec, 0);
	if (shut_spec)
		return run_half(shut_spec, 1);
	fprintf(stderr, "tcp_client: one of --connect, --udp, --hold\n");
	return 2;
}
