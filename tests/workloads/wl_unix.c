/*
 * wl_unix - unix domain sockets with data queued in them.
 *
 * Processes: the root P, a child C and a client child K.
 *  - Stream socketpair P <-> C: C sends numbered requests and keeps several
 *    in flight; P answers each with a 64-byte response.  Each side reads
 *    only when 3 records are queued, so both directions always hold unread
 *    data.  P's end has SO_SNDBUF set (checked with getsockopt).
 *  - A named listening stream socket DIR/listen.sock and an abstract one
 *    (@ckpt-wl-unix-PID): K connected to each, same request/response
 *    protocol with P answering from the accepted sockets; names checked
 *    with getsockname/getpeername.  K also keeps one more connection to
 *    DIR/listen.sock waiting in the accept queue; every ~2 s P accepts it,
 *    sends its number, K answers, both close it and K queues a new one.
 *  - A dgram socketpair and a seqpacket socketpair inside P, each holding
 *    ~6 messages of varying sizes whose boundaries and contents are checked.
 *    The dgram receiver has SO_PASSCRED (checked with getsockopt).
 *  - A named dgram socket DIR/dgram.sock of P receiving numbered datagrams
 *    from an unbound dgram socket of K (its queue is kept full).
 *  - A stream socketpair inside P whose one end did shutdown(SHUT_WR) after
 *    writing "bye": the other end must keep seeing "bye" then EOF.
 * Watchdogs: every channel must keep moving (5 s of active time).
 */
#include "wl.h"

#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>

#define REQ_SIZE 16
#define RESP_SIZE 64
#define IN_FLIGHT 6
#define QUEUED 6

/* ---- request/response over a stream socket ------------------------------ */

struct chan {
	const char *name;
	int fd;
	uint64_t next_out; /* requester: next request to send */
	uint64_t next_in;  /* next record expected */
};

static int queued_bytes(int fd, const char *what)
{
	int n = 0;
	if (ioctl(fd, FIONREAD, &n) < 0)
		wl_fail("%s: FIONREAD: %s", what, strerror(errno));
	return n;
}

static void send_req(struct chan *c)
{
	uint64_t r[2] = { c->next_out, wl_mix(c->next_out) };
	if (wl_write_all(c->fd, r, sizeof(r)) < 0)
		wl_fail("%s: send request: %s", c->name, strerror(errno));
	c->next_out++;
}

static void resp_fill(uint64_t seq, unsigned char *b)
{
	memcpy(b, &seq, 8);
	for (int i = 8; i < RESP_SIZE; i++)
		b[i] = (unsigned char)(wl_mix(seq) + (uint64_t)i);
}

/* Requester: reads a response when 3 are queued, then sends a request. */
static void requester_step(struct chan *c)
{
	if (queued_bytes(c->fd, c->name) < 3 * RESP_SIZE)
		return;
	unsigned char b[RESP_SIZE], want[RESP_SIZE];
	int rc = wl_read_all(c->fd, b, sizeof(b));
	if (rc)
		wl_fail("%s: read response: %s", c->name, rc == 1 ? "EOF" : strerror(errno));
	resp_fill(c->next_in, want);
	if (memcmp(b, want, RESP_SIZE) != 0) {
		uint64_t got;
		memcpy(&got, b, 8);
		wl_fail("%s: response %llu is wrong (expected %llu)", c->name,
			(unsigned long long)got, (unsigned long long)c->next_in);
	}
	c->next_in++;
	send_req(c);
}

/* Responder: reads a request when 3 are queued, then answers it. */
static void responder_step(struct chan *c)
{
	if (queued_bytes(c->fd, c->name) < 3 * REQ_SIZE)
		return;
	uint64_t r[2];
	int rc = wl_read_all(c->fd, r, sizeof(r));
	if (rc)
		wl_fail("%s: read request: %s", c->name, rc == 1 ? "EOF" : strerror(errno));
	if (r[0] != c->next_in || r[1] != wl_mix(r[0]))
		wl_fail("%s: request %llu, expected %llu", c->name, (unsigned long long)r[0],
			(unsigned long long)c->next_in);
	c->next_in++;
	unsigned char b[RESP_SIZE];
	resp_fill(r[0], b);
	if (wl_write_all(c->fd, b, sizeof(b)) < 0)
		wl_fail("%s: send response: %s", c->name, strerror(errno));
}

/* ---- messages (dgram / seqpacket) ---------------------------------------- */

static size_t msg_size(uint64_t seq)
{
	return 8 + (size_t)((seq * 37) % 500);
}

static size_t msg_fill(uint64_t seq, unsigned char *b)
{
	size_t n = msg_size(seq);
	memcpy(b, &seq, 8);
	for (size_t i = 8; i < n; i++)
		b[i] = (unsigned char)(seq * 7 + i);
	return n;
}

/* Returns 0 if sent, 1 if the queue is full. */
static int msg_send(int fd, uint64_t seq, const char *what, const struct sockaddr_un *to,
		    socklen_t tolen)
{
	unsigned char b[600];
	size_t n = msg_fill(seq, b);
	ssize_t k;
	do
		k = sendto(fd, b, n, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)to,
			   tolen);
	while (k < 0 && errno == EINTR);
	if (k < 0 && errno == EAGAIN)
		return 1;
	if (k < 0)
		wl_fail("%s: send message %llu: %s", what, (unsigned long long)seq, strerror(errno));
	if ((size_t)k != n)
		wl_fail("%s: short send %zd of %zu", what, k, n);
	return 0;
}

/* Receives message seq; returns 0, or 1 if nothing is queued. *namelen gets
 * the sender address length. */
static int msg_recv(int fd, uint64_t seq, const char *what, socklen_t *namelen)
{
	unsigned char b[1024], want[600];
	struct sockaddr_un from;
	socklen_t fl = sizeof(from);
	ssize_t k;
	do
		k = recvfrom(fd, b, sizeof(b), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
	while (k < 0 && errno == EINTR);
	if (k < 0 && errno == EAGAIN)
		return 1;
	if (k < 0)
		wl_fail("%s: receive: %s", what, strerror(errno));
	size_t n = msg_fill(seq, want);
	if ((size_t)k != n) {
		uint64_t got = 0;
		if (k >= 8)
			memcpy(&got, b, 8);
		wl_fail("%s: message of %zd bytes (seq %llu), expected %zu bytes (seq %llu)", what,
			k, (unsigned long long)got, n, (unsigned long long)seq);
	}
	if (memcmp(b, want, n) != 0)
		wl_fail("%s: message %llu has wrong contents", what, (unsigned long long)seq);
	if (namelen)
		*namelen = fl;
	return 0;
}

/* ---- names ----------------------------------------------------------------- */

static struct sockaddr_un path_addr, abs_addr, dgram_addr;
static socklen_t path_len, abs_len, dgram_len;

static socklen_t make_path(struct sockaddr_un *a, const char *dir, const char *file)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof(a->sun_path), "%s/%s", dir, file);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(a->sun_path) + 1);
}

static void check_name(int fd, int peer, const struct sockaddr_un *want, socklen_t wantlen,
		       const char *what)
{
	struct sockaddr_un a;
	socklen_t l = sizeof(a);
	memset(&a, 0, sizeof(a));
	int rc = peer ? getpeername(fd, (struct sockaddr *)&a, &l)
		      : getsockname(fd, (struct sockaddr *)&a, &l);
	if (rc < 0)
		wl_fail("%s: get%sname: %s", what, peer ? "peer" : "sock", strerror(errno));
	if (!want) {
		if (l != sizeof(sa_family_t))
			wl_fail("%s: %s name has length %u, expected unbound", what,
				peer ? "peer" : "own", (unsigned)l);
		return;
	}
	/* Path names may come back with or without the trailing NUL. */
	int ok = l == wantlen || (want->sun_path[0] && l + 1 == wantlen);
	if (!ok || memcmp(&a, want, l) != 0)
		wl_fail("%s: %s name is '%s%s' (len %u), expected '%s%s'", what,
			peer ? "peer" : "own", a.sun_path[0] ? "" : "@",
			a.sun_path[0] ? a.sun_path : a.sun_path + 1, (unsigned)l,
			want->sun_path[0] ? "" : "@",
			want->sun_path[0] ? want->sun_path : want->sun_path + 1);
}

static int get_opt(int fd, int opt, const char *what)
{
	int v = 0;
	socklen_t l = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, opt, &v, &l) < 0)
		wl_fail("%s: getsockopt: %s", what, strerror(errno));
	return v;
}

static int stream_connect(const struct sockaddr_un *a, socklen_t l, const char *what)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		wl_fail("socket: %s", strerror(errno));
	int rc;
	do
		rc = connect(fd, (const struct sockaddr *)a, l);
	while (rc < 0 && errno == EINTR);
	if (rc < 0)
		wl_fail("%s: connect: %s", what, strerror(errno));
	return fd;
}

/* ---- child C: requester on the socketpair ------------------------------- */

static void __attribute__((noreturn)) child_c(int fd, pid_t parent, struct wl_ready *ready)
{
	struct chan c = { "socketpair (child)", fd, 0, 0 };
	for (int i = 0; i < IN_FLIGHT; i++)
		send_req(&c);
	wl_ready_signal(ready);
	struct wl_clock clk;
	struct wl_stall st;
	wl_clock_init(&clk);
	wl_stall_init(&st, 0, 0);
	for (;;) {
		double active = wl_clock_tick(&clk);
		requester_step(&c);
		if (wl_stalled(&st, c.next_in, active))
			wl_fail("socketpair (child): no response for %.0f s", WL_STALL_LIMIT);
		wl_check_ppid(parent);
		wl_sleep_ms(5);
	}
}

/* ---- child K: client of the named sockets -------------------------------- */

static void __attribute__((noreturn)) client_k(pid_t parent, struct wl_ready *ready)
{
	struct chan a = { "path connection (client)", -1, 0, 0 };
	struct chan b = { "abstract connection (client)", -1, 0, 0 };
	a.fd = stream_connect(&path_addr, path_len, "path listener");
	b.fd = stream_connect(&abs_addr, abs_len, "abstract listener");
	uint64_t qn = 0;
	int q = stream_connect(&path_addr, path_len, "queued connection");
	int u = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (u < 0)
		wl_fail("socket: %s", strerror(errno));
	for (int i = 0; i < IN_FLIGHT; i++) {
		send_req(&a);
		send_req(&b);
	}
	wl_ready_signal(ready);

	uint64_t dg_next = 0, loops = 0;
	struct wl_clock clk;
	struct wl_stall sa, sb;
	wl_clock_init(&clk);
	wl_stall_init(&sa, 0, 0);
	wl_stall_init(&sb, 0, 0);
	for (;; loops++) {
		double active = wl_clock_tick(&clk);
		requester_step(&a);
		requester_step(&b);
		if (wl_stalled(&sa, a.next_in, active) || wl_stalled(&sb, b.next_in, active))
			wl_fail("client: no response for %.0f s", WL_STALL_LIMIT);
		/* Datagrams to the named dgram socket while it has room. */
		for (int i = 0; i < 2; i++)
			if (msg_send(u, dg_next, "unbound dgram", &dgram_addr, dgram_len) == 0)
				dg_next++;
		/* The queued connection: answer once P accepted it, queue a new one. */
		uint64_t got;
		ssize_t k;
		do
			k = recv(q, &got, sizeof(got), MSG_DONTWAIT);
		while (k < 0 && errno == EINTR);
		if (k < 0 && errno != EAGAIN)
			wl_fail("queued connection %llu: recv: %s", (unsigned long long)qn,
				strerror(errno));
		if (k == 0)
			wl_fail("queued connection %llu: EOF", (unsigned long long)qn);
		if (k > 0) {
			if (k != sizeof(got) || got != qn)
				wl_fail("queued connection %llu: got %llu (%zd bytes)",
					(unsigned long long)qn, (unsigned long long)got, k);
			got ^= 0xabcdefULL;
			if (wl_write_all(q, &got, sizeof(got)) < 0)
				wl_fail("queued connection: send: %s", strerror(errno));
			/* The new connection takes q's fd number (the fd table stays
			 * the same shape whenever the tree is sampled). */
			int nq = stream_connect(&path_addr, path_len, "queued connection");
			if (dup3(nq, q, O_CLOEXEC) < 0)
				wl_fail("dup3: %s", strerror(errno));
			close(nq);
			qn++;
		}
		if (loops % 50 == 0) {
			check_name(a.fd, 1, &path_addr, path_len, "path connection (client)");
			check_name(a.fd, 0, NULL, 0, "path connection (client)");
			check_name(b.fd, 1, &abs_addr, abs_len, "abstract connection (client)");
			check_name(q, 1, &path_addr, path_len, "queued connection (client)");
		}
		wl_check_ppid(parent);
		wl_sleep_ms(5);
	}
}

/* ---- root ------------------------------------------------------------------- */

int main(int argc, char **argv)
{
	wl_init(argc, argv, 1);
	pid_t self = getpid();

	path_len = make_path(&path_addr, wl_dir, "listen.sock");
	dgram_len = make_path(&dgram_addr, wl_dir, "dgram.sock");
	memset(&abs_addr, 0, sizeof(abs_addr));
	abs_addr.sun_family = AF_UNIX;
	int an = snprintf(abs_addr.sun_path + 1, sizeof(abs_addr.sun_path) - 1,
			  "ckpt-wl-unix-%d", (int)self);
	abs_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)an);

	int sp[2], dp[2], qp[2], sh[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0 ||
	    socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, dp) < 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, qp) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sh) < 0)
		wl_fail("socketpair: %s", strerror(errno));
	int one = 1, sndbuf = 65536;
	if (setsockopt(dp[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0 ||
	    setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) < 0)
		wl_fail("setsockopt: %s", strerror(errno));
	int sndbuf_want = get_opt(sp[0], SO_SNDBUF, "socketpair");
	if (wl_write_all(sh[0], "bye", 3) < 0 || shutdown(sh[0], SHUT_WR) < 0)
		wl_fail("shutdown pair: %s", strerror(errno));

	int lp = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int la = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int nd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (lp < 0 || la < 0 || nd < 0)
		wl_fail("socket: %s", strerror(errno));
	if (bind(lp, (struct sockaddr *)&path_addr, path_len) < 0 ||
	    bind(la, (struct sockaddr *)&abs_addr, abs_len) < 0 ||
	    bind(nd, (struct sockaddr *)&dgram_addr, dgram_len) < 0)
		wl_fail("bind: %s", strerror(errno));
	if (listen(lp, 4) < 0 || listen(la, 3) < 0)
		wl_fail("listen: %s", strerror(errno));

	struct wl_ready ready;
	wl_ready_init(&ready);
	pid_t c = wl_fork();
	if (c == 0) {
		close(sp[0]);
		close(dp[0]);
		close(dp[1]);
		close(qp[0]);
		close(qp[1]);
		close(sh[0]);
		close(sh[1]);
		close(lp);
		close(la);
		close(nd);
		child_c(sp[1], self, &ready);
	}
	close(sp[1]);
	pid_t k = wl_fork();
	if (k == 0) {
		close(sp[0]);
		close(dp[0]);
		close(dp[1]);
		close(qp[0]);
		close(qp[1]);
		close(sh[0]);
		close(sh[1]);
		close(lp);
		close(la);
		close(nd);
		client_k(self, &ready);
	}

	struct chan s = { "socketpair (parent)", sp[0], 0, 0 };
	struct chan a = { "path connection (server)", -1, 0, 0 };
	struct chan b = { "abstract connection (server)", -1, 0, 0 };
	do
		a.fd = accept4(lp, NULL, NULL, SOCK_CLOEXEC);
	while (a.fd < 0 && errno == EINTR);
	do
		b.fd = accept4(la, NULL, NULL, SOCK_CLOEXEC);
	while (b.fd < 0 && errno == EINTR);
	if (a.fd < 0 || b.fd < 0)
		wl_fail("accept: %s", strerror(errno));
	wl_ready_wait(&ready, 2);
	if (fcntl(lp, F_SETFL, O_NONBLOCK) < 0)
		wl_fail("fcntl: %s", strerror(errno));

	uint64_t dg_out = 0, dg_in = 0, sq_out = 0, sq_in = 0, nd_in = 0, qn = 0, loops = 0;
	/* qslot: an accepted queued connection waiting for K's answer, or an
	 * idle placeholder socket, so the fd is always there. */
	int qslot = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), qbusy = 0;
	if (qslot < 0)
		wl_fail("socket: %s", strerror(errno));
	double last_accept = 0;
	struct wl_clock clk;
	struct wl_stall st_s, st_a, st_b, st_nd, st_q;
	double last_progress = 0;
	int is_ready = 0;
	wl_clock_init(&clk);
	wl_stall_init(&st_s, 0, 0);
	wl_stall_init(&st_a, 0, 0);
	wl_stall_init(&st_b, 0, 0);
	wl_stall_init(&st_nd, 0, 0);
	wl_stall_init(&st_q, 0, 0);
	for (;; loops++) {
		double active = wl_clock_tick(&clk);
		responder_step(&s);
		responder_step(&a);
		responder_step(&b);
		if (wl_stalled(&st_s, s.next_in, active) || wl_stalled(&st_a, a.next_in, active) ||
		    wl_stalled(&st_b, b.next_in, active))
			wl_fail("a stream connection stalled for %.0f s", WL_STALL_LIMIT);

		/* dgram and seqpacket pairs: keep QUEUED messages in each. */
		if (msg_send(dp[0], dg_out, "dgram pair", NULL, 0) == 0)
			dg_out++;
		if (msg_send(qp[0], sq_out, "seqpacket pair", NULL, 0) == 0)
			sq_out++;
		while (dg_out - dg_in > QUEUED) {
			if (msg_recv(dp[1], dg_in, "dgram pair", NULL))
				wl_fail("dgram pair: %llu messages missing",
					(unsigned long long)(dg_out - dg_in));
			dg_in++;
		}
		while (sq_out - sq_in > QUEUED) {
			if (msg_recv(qp[1], sq_in, "seqpacket pair", NULL))
				wl_fail("seqpacket pair: %llu messages missing",
					(unsigned long long)(sq_out - sq_in));
			sq_in++;
		}

		/* Named dgram socket: one datagram per loop (K keeps it full). */
		socklen_t nl = 0;
		if (msg_recv(nd, nd_in, "named dgram", &nl) == 0) {
			if (nl != 0)
				wl_fail("named dgram: sender address of length %u, expected none",
					(unsigned)nl);
			nd_in++;
		}
		if (wl_stalled(&st_nd, nd_in, active))
			wl_fail("named dgram: nothing received for %.0f s", WL_STALL_LIMIT);

		/* The queued connection. */
		if (!qbusy && active - last_accept > 2.0) {
			int nf = accept4(lp, NULL, NULL, SOCK_CLOEXEC);
			if (nf < 0 && errno != EAGAIN && errno != EINTR)
				wl_fail("accept queued connection: %s", strerror(errno));
			if (nf >= 0) {
				if (dup3(nf, qslot, O_CLOEXEC) < 0)
					wl_fail("dup3: %s", strerror(errno));
				close(nf);
				qbusy = 1;
				int qfd = qslot;
				check_name(qfd, 0, &path_addr, path_len, "queued connection (server)");
				check_name(qfd, 1, NULL, 0, "queued connection (server)");
				if (wl_write_all(qfd, &qn, sizeof(qn)) < 0)
					wl_fail("queued connection: send: %s", strerror(errno));
			}
		}
		if (qbusy) {
			int qfd = qslot;
			uint64_t got;
			ssize_t n;
			do
				n = recv(qfd, &got, sizeof(got), MSG_DONTWAIT);
			while (n < 0 && errno == EINTR);
			if (n < 0 && errno != EAGAIN)
				wl_fail("queued connection %llu: recv: %s", (unsigned long long)qn,
					strerror(errno));
			if (n == 0)
				wl_fail("queued connection %llu: EOF", (unsigned long long)qn);
			if (n > 0) {
				if (n != sizeof(got) || got != (qn ^ 0xabcdefULL))
					wl_fail("queued connection %llu: answer %llx",
						(unsigned long long)qn, (unsigned long long)got);
				int ph = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
				if (ph < 0 || dup3(ph, qslot, O_CLOEXEC) < 0)
					wl_fail("placeholder socket: %s", strerror(errno));
				close(ph);
				qbusy = 0;
				qn++;
				last_accept = active;
			}
		}
		if (wl_stalled(&st_q, qn, active) && active - last_accept > 2.0 + WL_STALL_LIMIT)
			wl_fail("queued connection %llu: not answered", (unsigned long long)qn);

		/* Options, names and the shut-down pair. */
		if (loops % 20 == 0) {
			if (get_opt(dp[1], SO_PASSCRED, "dgram pair") != 1)
				wl_fail("SO_PASSCRED lost on the dgram pair");
			if (get_opt(dp[0], SO_PASSCRED, "dgram pair") != 0)
				wl_fail("SO_PASSCRED set on the wrong end");
			if (get_opt(sp[0], SO_SNDBUF, "socketpair") != sndbuf_want)
				wl_fail("SO_SNDBUF is %d, expected %d", get_opt(sp[0], SO_SNDBUF, "sp"),
					sndbuf_want);
			if (get_opt(lp, SO_ACCEPTCONN, "listener") != 1)
				wl_fail("path listener is not listening");
			check_name(lp, 0, &path_addr, path_len, "path listener");
			check_name(la, 0, &abs_addr, abs_len, "abstract listener");
			check_name(nd, 0, &dgram_addr, dgram_len, "named dgram");
			check_name(a.fd, 0, &path_addr, path_len, "path connection (server)");
			check_name(a.fd, 1, NULL, 0, "path connection (server)");
			check_name(b.fd, 0, &abs_addr, abs_len, "abstract connection (server)");
			char buf[8];
			ssize_t n = recv(sh[1], buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
			if (n != 3 || memcmp(buf, "bye", 3) != 0)
				wl_fail("shut-down pair: peek gave %zd bytes", n);
			if (send(sh[0], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) != -1 || errno != EPIPE)
				wl_fail("shut-down pair: send after SHUT_WR did not fail with EPIPE");
			if (queued_bytes(sh[1], "shut-down pair") != 3)
				wl_fail("shut-down pair: FIONREAD is not 3");
		}

		wl_check_child(c);
		wl_check_child(k);
		if (!is_ready) {
			if (s.next_in > 0 && a.next_in > 0 && b.next_in > 0 && nd_in > 0) {
				wl_log("ready");
				is_ready = 1;
			}
		} else if (wl_progress_due(&last_progress)) {
			wl_progress();
		}
		wl_sleep_ms(10);
	}
}
