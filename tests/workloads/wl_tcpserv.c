/*
 * wl_tcpserv - a TCP echo server with UDP, for the tcp* and udp e2e scenarios.
 *
 *   wl_tcpserv --log FILE [--dir DIR] [--listen ADDR:PORT]... [--lazy ADDR:PORT]...
 *              [--later ADDR:PORT]...
 *              [--udp ADDR:PORT]...
 *
 * ADDR is an IPv4 address or an IPv6 one in brackets ([fd00::1]:7000).
 * --listen  listening socket with SO_REUSEADDR, SO_REUSEPORT, TCP_NODELAY,
 *           SO_KEEPALIVE and keepalive timings set; every connection it
 *           accepts is served: each message (tcpmsg.h) must carry the next
 *           sequence number and its pattern, and is echoed back whole.
 * --lazy    a listener that never accepts (connections stay queued).
 * --later   a listener that accepts only once the file DIR/accept exists
 *           (connections wait in its queue until then), then serves them
 *           as --listen does.
 * --udp     a UDP socket that echoes every datagram to its sender.
 * --mem-mib N  also holds N MiB of private memory, rewrites 1% of its pages
 *           every second (a pattern of page index and generation) and
 *           verifies all of it every second; every 2 s a forked child
 *           verifies it too and exits (memory restored lazily must be right
 *           in a child forked before it is complete).
 * Also, inside the tree: a loopback TCP connection (IPv4) with 3000 unread
 * bytes in each direction, and a loopback UDP socket (IPv4 and IPv6) with
 * 5 datagrams queued from a known sender; checked every 200 ms with
 * MSG_PEEK, as are the options of every socket.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "tcpmsg.h"
#include "wl.h"

#define MAX_SOCKS 64
#define KEEPIDLE 77
#define KEEPINTVL 11
#define KEEPCNT 5
#define BACKLOG 17
#define LOOP_BYTES 3000
#define LOOP_DGRAMS 5

enum kind { LISTENER, LAZY, LATER, CONN, UDP, CLOSED };

struct sock {
	enum kind kind;
	int fd;
	char name[80];
	/* CONN */
	char *in;
	size_t in_len, in_cap;
	char *out;
	size_t out_len, out_off, out_cap;
	uint64_t next_seq;
	uint64_t served;
	int half, peer_eof;       /* HALF asked; EOF seen since (CLOSE_WAIT) */
	int shut_pending, shut_wr; /* SHUT asked; our side shut down (FIN_WAIT) */
	double last_tick;
	uint64_t oneway;          /* messages checked after our shutdown */
};

static struct sock socks[MAX_SOCKS];
static int nsocks;

static void set_opt(int fd, int level, int opt, int v, const char *what)
{
	if (setsockopt(fd, level, opt, &v, sizeof(v)) < 0)
		wl_fail("setsockopt %s: %s", what, strerror(errno));
}

static int get_opt(int fd, int level, int opt, const char *what)
{
	int v = 0;
	socklen_t len = sizeof(v);
	if (getsockopt(fd, level, opt, &v, &len) < 0)
		wl_fail("getsockopt %s: %s", what, strerror(errno));
	return v;
}

static void expect_opt(struct sock *s, int level, int opt, int want, const char *what)
{
	int v = get_opt(s->fd, level, opt, what);
	if (v != want)
		wl_fail("%s: %s is %d, expected %d", s->name, what, v, want);
}

static struct sock *add_sock(enum kind kind, int fd, const char *name)
{
	if (nsocks == MAX_SOCKS)
		wl_fail("too many sockets");
	struct sock *s = &socks[nsocks++];
	memset(s, 0, sizeof(*s));
	s->kind = kind;
	s->fd = fd;
	snprintf(s->name, sizeof(s->name), "%s", name);
	return s;
}

static int open_bound(const char *spec, int type, struct sockaddr_storage *a, socklen_t *alen)
{
	if (tcpmsg_parse_addr(spec, a, alen) < 0)
		wl_fail("bad address %s", spec);
	int fd = socket(a->ss_family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		wl_fail("socket: %s", strerror(errno));
	return fd;
}

static void add_listener(const char *spec, enum kind kind)
{
	struct sockaddr_storage a;
	socklen_t alen;
	int fd = open_bound(spec, SOCK_STREAM, &a, &alen);
	set_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
	set_opt(fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
	set_opt(fd, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
	set_opt(fd, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
	set_opt(fd, IPPROTO_TCP, TCP_KEEPIDLE, KEEPIDLE, "TCP_KEEPIDLE");
	set_opt(fd, IPPROTO_TCP, TCP_KEEPINTVL, KEEPINTVL, "TCP_KEEPINTVL");
	set_opt(fd, IPPROTO_TCP, TCP_KEEPCNT, KEEPCNT, "TCP_KEEPCNT");
	if (a.ss_family == AF_INET6)
		set_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
	if (bind(fd, (struct sockaddr *)&a, alen) < 0)
		wl_fail("bind %s: %s", spec, strerror(errno));
	if (listen(fd, BACKLOG) < 0)
		wl_fail("listen %s: %s", spec, strerror(errno));
	char name[80];
	snprintf(name, sizeof(name), "%s %s",
		 kind == LAZY ? "lazy" : kind == LATER ? "later" : "listener", spec);
	add_sock(kind, fd, name);
}

static void add_udp(const char *spec)
{
	struct sockaddr_storage a;
	socklen_t alen;
	int fd = open_bound(spec, SOCK_DGRAM, &a, &alen);
	set_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
	set_opt(fd, SOL_SOCKET, SO_BROADCAST, 1, "SO_BROADCAST");
	if (bind(fd, (struct sockaddr *)&a, alen) < 0)
		wl_fail("bind udp %s: %s", spec, strerror(errno));
	char name[80];
	snprintf(name, sizeof(name), "udp %s", spec);
	add_sock(UDP, fd, name);
}

/* ---- state inside the tree, checked by peeking ---- */

static int loop_a, loop_b;           /* TCP loopback pair, both ends ours */
static int dg_rx[2], dg_tx[2];       /* UDP receiver with queued datagrams, its sender */
static struct sockaddr_storage dg_from[2];

static void loop_pattern(char *buf, size_t n, int salt)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)((i * 7 + (size_t)salt) & 0xff);
}

static void setup_loopback(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, alen) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &alen) < 0)
		wl_fail("loopback listener: %s", strerror(errno));
	loop_a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (loop_a < 0 || connect(loop_a, (struct sockaddr *)&a, alen) < 0)
		wl_fail("loopback connect: %s", strerror(errno));
	loop_b = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (loop_b < 0)
		wl_fail("loopback accept: %s", strerror(errno));
	close(l);
	char buf[LOOP_BYTES];
	loop_pattern(buf, sizeof(buf), 1);
	if (wl_write_all(loop_a, buf, sizeof(buf)) < 0)
		wl_fail("loopback write: %s", strerror(errno));
	loop_pattern(buf, sizeof(buf), 2);
	if (wl_write_all(loop_b, buf, sizeof(buf)) < 0)
		wl_fail("loopback write: %s", strerror(errno));

	for (int v6 = 0; v6 < 2; v6++) {
		struct sockaddr_storage s = { 0 };
		socklen_t slen;
		if (v6) {
			struct sockaddr_in6 *p = (struct sockaddr_in6 *)&s;
			p->sin6_family = AF_INET6;
			p->sin6_addr = in6addr_loopback;
			slen = sizeof(*p);
		} else {
			struct sockaddr_in *p = (struct sockaddr_in *)&s;
			p->sin_family = AF_INET;
			p->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			slen = sizeof(*p);
		}
		struct sockaddr_storage r = s;
		socklen_t rlen = slen;
		dg_rx[v6] = socket(s.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		dg_tx[v6] = socket(s.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (dg_rx[v6] < 0 || dg_tx[v6] < 0 || bind(dg_rx[v6], (struct sockaddr *)&r, rlen) < 0 ||
		    getsockname(dg_rx[v6], (struct sockaddr *)&r, &rlen) < 0 ||
		    bind(dg_tx[v6], (struct sockaddr *)&s, slen) < 0)
			wl_fail("udp loopback: %s", strerror(errno));
		socklen_t flen = sizeof(dg_from[v6]);
		if (getsockname(dg_tx[v6], (struct sockaddr *)&dg_from[v6], &flen) < 0)
			wl_fail("getsockname: %s", strerror(errno));
		for (int i = 0; i < LOOP_DGRAMS; i++) {
			char d[100];
			int n = snprintf(d, sizeof(d), "datagram %d of family %d", i, v6 ? 6 : 4);
			if (sendto(dg_tx[v6], d, (size_t)n + (size_t)i * 10, 0, (struct sockaddr *)&r,
				   rlen) < 0)
				wl_fail("udp loopback send: %s", strerror(errno));
		}
	}
}

static void check_loopback(void)
{
	static char buf[LOOP_BYTES + 100], want[LOOP_BYTES];
	for (int i = 0; i < 2; i++) {
		int fd = i ? loop_a : loop_b;
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
		if (n != LOOP_BYTES)
			wl_fail("loopback TCP end %d: %zd bytes queued, expected %d (%s)", i, n, LOOP_BYTES,
				n < 0 ? strerror(errno) : "");
		loop_pattern(want, sizeof(want), i ? 2 : 1);
		if (memcmp(buf, want, LOOP_BYTES) != 0)
			wl_fail("loopback TCP end %d: queued bytes changed", i);
	}
	for (int v6 = 0; v6 < 2; v6++) {
		set_opt(dg_rx[v6], SOL_SOCKET, SO_PEEK_OFF, 0, "SO_PEEK_OFF");
		for (int i = 0; i <= LOOP_DGRAMS; i++) {
			char d[200], w[100];
			struct sockaddr_storage from;
			socklen_t flen = sizeof(from);
			ssize_t n = recvfrom(dg_rx[v6], d, sizeof(d), MSG_PEEK | MSG_DONTWAIT,
					     (struct sockaddr *)&from, &flen);
			if (i == LOOP_DGRAMS) {
				if (n >= 0)
					wl_fail("udp loopback v%d: more than %d datagrams queued", v6 ? 6 : 4,
						LOOP_DGRAMS);
				break;
			}
			int wn = snprintf(w, sizeof(w), "datagram %d of family %d", i, v6 ? 6 : 4);
			if (n != wn + i * 10 || memcmp(d, w, (size_t)wn) != 0)
				wl_fail("udp loopback v%d: datagram %d is wrong (%zd bytes)", v6 ? 6 : 4, i, n);
			if (flen != (v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)) ||
			    (v6 ? memcmp(&((struct sockaddr_in6 *)&from)->sin6_port,
					 &((struct sockaddr_in6 *)&dg_from[v6])->sin6_port, 2)
				: memcmp(&((struct sockaddr_in *)&from)->sin_port,
					 &((struct sockaddr_in *)&dg_from[v6])->sin_port, 2)))
				wl_fail("udp loopback v%d: datagram %d has another sender", v6 ? 6 : 4, i);
		}
	}
}

/* ---- serving ---- */

/* Buffers are allocated once per connection, so the memory map stays the
 * same while data flows (the harness compares it before and after). */
#define IN_CAP (1u << 20)
#define OUT_CAP (24u << 20)
#define OUT_HIGH (2u << 20)

static void conn_buffers(struct sock *s)
{
	s->in = malloc(IN_CAP);
	s->out = malloc(OUT_CAP);
	if (!s->in || !s->out)
		wl_fail("out of memory");
	s->in_cap = IN_CAP;
	s->out_cap = OUT_CAP;
}

static void conn_close(struct sock *s, const char *why)
{
	wl_fail("%s: %s after %llu messages", s->name, why, (unsigned long long)s->served);
}

static void conn_read(struct sock *s)
{
	if (s->out_off > 0) {
		memmove(s->out, s->out + s->out_off, s->out_len - s->out_off);
		s->out_len -= s->out_off;
		s->out_off = 0;
	}
	if (s->out_len > OUT_HIGH)
		return; /* the peer is not reading: wait */
	if (s->in_len + 65536 > s->in_cap)
		wl_fail("%s: input buffer full", s->name);
	ssize_t n = read(s->fd, s->in + s->in_len, 65536);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		conn_close(s, strerror(errno));
	}
	if (n == 0 && s->half) {
		if (!s->peer_eof)
			wl_log("%s: half-closed by the peer after %llu messages", s->name,
			       (unsigned long long)s->served);
		s->peer_eof = 1;
		return;
	}
	if (n == 0) {
		/* The client's orderly goodbye (a reset is a FAIL above). */
		if (s->in_len)
			conn_close(s, "peer closed in the middle of a message");
		wl_log("%s: closed by the peer after %llu messages", s->name,
		       (unsigned long long)s->served);
		close(s->fd);
		s->fd = -1;
		s->kind = CLOSED;
		return;
	}
	s->in_len += (size_t)n;
	size_t pos = 0;
	for (;;) {
		struct tcpmsg_hdr h;
		if (s->in_len - pos < sizeof(h))
			break;
		memcpy(&h, s->in + pos, sizeof(h));
		if ((h.magic == TCPMSG_HALF || h.magic == TCPMSG_SHUT) && h.len == 0) {
			if (h.magic == TCPMSG_HALF) {
				s->half = 1;
			} else {
				memcpy(s->out + s->out_len, &h, sizeof(h));
				s->out_len += sizeof(h);
				s->shut_pending = 1;
			}
			pos += sizeof(h);
			continue;
		}
		if (h.magic != TCPMSG_MAGIC || h.len > TCPMSG_MAX)
			wl_fail("%s: bad message header at message %llu", s->name,
				(unsigned long long)s->next_seq);
		size_t total = sizeof(h) + h.len;
		if (s->in_len - pos < total)
			break;
		if (h.seq != s->next_seq)
			wl_fail("%s: message %llu arrived, expected %llu", s->name,
				(unsigned long long)h.seq, (unsigned long long)s->next_seq);
		if (!tcpmsg_check(s->in + pos + sizeof(h), h.len, h.seq))
			wl_fail("%s: message %llu is corrupt", s->name, (unsigned long long)h.seq);
		s->next_seq++;
		s->served++;
		if (s->shut_wr) {
			if (++s->oneway % 25 == 0)
				wl_log("oneway %llu", (unsigned long long)s->oneway);
			pos += total;
			continue;
		}
		if (s->out_len + total > s->out_cap)
			wl_fail("%s: output buffer full", s->name);
		memcpy(s->out + s->out_len, s->in + pos, total);
		s->out_len += total;
		pos += total;
	}
	memmove(s->in, s->in + pos, s->in_len - pos);
	s->in_len -= pos;
}

static void conn_write(struct sock *s)
{
	while (s->out_off < s->out_len) {
		ssize_t n = write(s->fd, s->out + s->out_off, s->out_len - s->out_off);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			conn_close(s, strerror(errno));
		}
		s->out_off += (size_t)n;
	}
	s->out_off = s->out_len = 0;
	if (s->shut_pending) {
		if (shutdown(s->fd, SHUT_WR) < 0)
			wl_fail("%s: shutdown: %s", s->name, strerror(errno));
		s->shut_pending = 0;
		s->shut_wr = 1;
		wl_log("%s: our side shut down after %llu messages", s->name,
		       (unsigned long long)s->served);
	}
}

/* A half-closed connection gets a numbered message every 50 ms. */
static void conn_tick(struct sock *s)
{
	if (!s->peer_eof || wl_now() - s->last_tick < 0.05 || s->out_len > 65536)
		return;
	s->last_tick = wl_now();
	struct tcpmsg_hdr h = { TCPMSG_MAGIC, 16, s->next_seq++ };
	memcpy(s->out + s->out_len, &h, sizeof(h));
	tcpmsg_fill(s->out + s->out_len + sizeof(h), 16, h.seq);
	s->out_len += sizeof(h) + 16;
	conn_write(s);
}

static void do_accept(struct sock *l)
{
	struct sockaddr_storage a;
	socklen_t alen = sizeof(a);
	int fd = accept4(l->fd, (struct sockaddr *)&a, &alen, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		wl_fail("accept on %s: %s", l->name, strerror(errno));
	}
	char peer[64];
	tcpmsg_format_addr(&a, peer, sizeof(peer));
	char name[80];
	snprintf(name, sizeof(name), "conn from %s", peer);
	conn_buffers(add_sock(CONN, fd, name));
	wl_log("accepted %s", peer);
}

static void do_udp(struct sock *s)
{
	char buf[65536];
	struct sockaddr_storage from;
	socklen_t flen = sizeof(from);
	ssize_t n = recvfrom(s->fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &flen);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		wl_fail("%s: recvfrom: %s", s->name, strerror(errno));
	}
	if (sendto(s->fd, buf, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&from, flen) < 0 &&
	    errno != EAGAIN)
		wl_fail("%s: sendto: %s", s->name, strerror(errno));
}

static void check_options(void)
{
	for (int i = 0; i < nsocks; i++) {
		struct sock *s = &socks[i];
		if (s->kind == CLOSED)
			continue;
		if (s->kind == UDP) {
			expect_opt(s, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
			expect_opt(s, SOL_SOCKET, SO_BROADCAST, 1, "SO_BROADCAST");
			continue;
		}
		if (s->kind != CONN) {
			expect_opt(s, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
			expect_opt(s, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
			expect_opt(s, SOL_SOCKET, SO_ACCEPTCONN, 1, "SO_ACCEPTCONN");
		}
		if (s->kind == CONN && s->peer_eof) {
			char c;
			ssize_t n = recv(s->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
			if (n != 0)
				wl_fail("%s: half-closed by the peer, but recv says %zd (%s)", s->name, n,
					n < 0 ? strerror(errno) : "data");
		}
		expect_opt(s, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
		expect_opt(s, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
		expect_opt(s, IPPROTO_TCP, TCP_KEEPIDLE, KEEPIDLE, "TCP_KEEPIDLE");
		expect_opt(s, IPPROTO_TCP, TCP_KEEPINTVL, KEEPINTVL, "TCP_KEEPINTVL");
		expect_opt(s, IPPROTO_TCP, TCP_KEEPCNT, KEEPCNT, "TCP_KEEPCNT");
	}
}

/* --mem-mib: pages holding pat(index, generation) in every word. */
static uint64_t *mem;
static uint32_t *mem_gen;
static size_t mem_pages;
#define MEM_WORDS (4096 / sizeof(uint64_t))

static uint64_t mem_pat(size_t page, size_t word, uint32_t gen)
{
	return ((uint64_t)page << 32 | gen) * 0x9E3779B97F4A7C15ULL + word;
}

static void mem_write(size_t page, uint32_t gen)
{
	uint64_t *p = mem + page * MEM_WORDS;
	for (size_t w = 0; w < MEM_WORDS; w++)
		p[w] = mem_pat(page, w, gen);
	mem_gen[page] = gen;
}

static void mem_verify(const char *who)
{
	for (size_t i = 0; i < mem_pages; i++) {
		const uint64_t *p = mem + i * MEM_WORDS;
		for (size_t w = 0; w < MEM_WORDS; w += 61)
			if (p[w] != mem_pat(i, w, mem_gen[i]))
				wl_fail("%s: memory page %zu word %zu is %llx, expected generation %u",
					who, i, w, (unsigned long long)p[w], mem_gen[i]);
	}
}

static void mem_init(size_t mib)
{
	mem_pages = mib * 256;
	mem = mmap(NULL, mem_pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	mem_gen = calloc(mem_pages, sizeof(uint32_t));
	if (mem == MAP_FAILED || !mem_gen)
		wl_fail("cannot allocate %zu MiB", mib);
	for (size_t i = 0; i < mem_pages; i++)
		mem_write(i, 1);
}

/* Rewrites its share of 1%/s since the last call; verifies once a second;
 * a child verifies every 2 s. */
static void mem_tick(void)
{
	static double last_write, last_verify, last_fork;
	static size_t next;
	static pid_t child;
	double now = wl_now();
	if (!last_write)
		last_write = last_verify = last_fork = now;
	size_t n = (size_t)((now - last_write) * (double)mem_pages / 100.0);
	if (n > 0) {
		for (size_t k = 0; k < n; k++) {
			next = (next + 7919) % mem_pages;
			mem_write(next, mem_gen[next] + 1);
		}
		last_write = now;
	}
	if (now - last_verify >= 1.0) {
		mem_verify("server");
		last_verify = now;
	}
	if (child > 0) {
		int st;
		pid_t r = waitpid(child, &st, WNOHANG);
		if (r == child) {
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
				wl_fail("memory check child exited with status 0x%x", st);
			child = 0;
		}
	} else if (now - last_fork >= 2.0) {
		last_fork = now;
		child = fork();
		if (child < 0)
			wl_fail("fork: %s", strerror(errno));
		if (child == 0) {
			mem_verify("child");
			_exit(0);
		}
	}
}

int main(int argc, char **argv)
{
	/* Our own options first; wl_init sees only --log and --dir. */
	char *wl_argv[8];
	int wl_argc = 0;
	wl_argv[wl_argc++] = argv[0];
	const char *listen_specs[16], *lazy_specs[16], *later_specs[16], *udp_specs[16];
	int nl = 0, nz = 0, nt = 0, nu = 0;
	size_t mem_mib = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc && nl < 16)
			listen_specs[nl++] = argv[++i];
		else if (strcmp(argv[i], "--lazy") == 0 && i + 1 < argc && nz < 16)
			lazy_specs[nz++] = argv[++i];
		else if (strcmp(argv[i], "--later") == 0 && i + 1 < argc && nt < 16)
			later_specs[nt++] = argv[++i];
		else if (strcmp(argv[i], "--udp") == 0 && i + 1 < argc && nu < 16)
			udp_specs[nu++] = argv[++i];
		else if (strcmp(argv[i], "--mem-mib") == 0 && i + 1 < argc)
			mem_mib = (size_t)atol(argv[++i]);
		else if (wl_argc < 7)
			wl_argv[wl_argc++] = argv[i];
	}
	wl_argv[wl_argc] = NULL;
	wl_init(wl_argc, wl_argv, 0);
	signal(SIGPIPE, SIG_IGN);

	for (int i = 0; i < nl; i++)
		add_listener(listen_specs[i], LISTENER);
	for (int i = 0; i < nz; i++)
		add_listener(lazy_specs[i], LAZY);
	for (int i = 0; i < nt; i++)
		add_listener(later_specs[i], LATER);
	char accept_path[4096];
	snprintf(accept_path, sizeof(accept_path), "%s/accept", wl_dir ? wl_dir : ".");
	int accepting = 0;
	for (int i = 0; i < nu; i++)
		add_udp(udp_specs[i]);
	setup_loopback();
	check_loopback();
	check_options();
	if (mem_mib)
		mem_init(mem_mib);
	wl_log("ready");

	double last_progress = wl_now(), last_check = wl_now();
	for (;;) {
		if (nt && !accepting && access(accept_path, F_OK) == 0) {
			accepting = 1;
			for (int i = 0; i < nsocks; i++)
				if (socks[i].kind == LATER)
					socks[i].kind = LISTENER;
			wl_log("accepting");
		}
		struct pollfd p[MAX_SOCKS];
		for (int i = 0; i < nsocks; i++) {
			struct sock *s = &socks[i];
			p[i].fd = s->fd;
			p[i].events = s->kind == LAZY || s->kind == LATER || s->peer_eof ? 0 : POLLIN;
			if (s->kind == CONN && s->out_off < s->out_len)
				p[i].events |= POLLOUT;
			p[i].revents = 0;
		}
		int rc = poll(p, (nfds_t)nsocks, 50);
		if (rc < 0 && errno != EINTR)
			wl_fail("poll: %s", strerror(errno));
		int n = nsocks; /* accept may add sockets */
		for (int i = 0; rc > 0 && i < n; i++) {
			struct sock *s = &socks[i];
			if (!p[i].revents)
				continue;
			if (s->kind == LISTENER)
				do_accept(s);
			else if (s->kind == UDP)
				do_udp(s);
			else if (s->kind == CONN) {
				if (p[i].revents & (POLLIN | POLLHUP | POLLERR))
					conn_read(s);
				if (s->kind == CONN)
					conn_write(s);
			}
		}
		for (int i = 0; i < nsocks; i++)
			if (socks[i].kind == CONN)
				conn_tick(&socks[i]);
		if (wl_now() - last_check >= 0.2) {
			last_check = wl_now();
			check_loopback();
			check_options();
		}
		if (mem)
			mem_tick();
		if (wl_progress_due(&last_progress))
			wl_progress();
	}
}
