/*
 * tcpmsg.h - the message format wl_tcpserv and tcp_client speak (header-only).
 *
 * A message is a header (magic, payload length, sequence number) and a
 * payload whose bytes follow from the sequence number, so either side can
 * check a message it receives. The server echoes each message whole.
 */
#ifndef CKPT_TESTS_WORKLOADS_TCPMSG_H
#define CKPT_TESTS_WORKLOADS_TCPMSG_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define TCPMSG_MAGIC 0x4d504354u /* "TCPM" */
/* Header-only requests (len 0, no sequence number of their own):
 * HALF: "I am shutting down my side; keep sending me messages" (the server
 *       then sends one every 50 ms, numbered on from the last echo);
 * SHUT: "shut down your side" (the server echoes this header, then
 *       shutdown(SHUT_WR); it keeps checking what still comes, unechoed). */
#define TCPMSG_HALF 0x464c4148u /* "HALF" */
#define TCPMSG_SHUT 0x54554853u /* "SHUT" */
#define TCPMSG_MAX (1u << 20)

struct tcpmsg_hdr {
	uint32_t magic;
	uint32_t len;
	uint64_t seq;
};

static inline unsigned char tcpmsg_byte(uint64_t seq, size_t i)
{
	return (unsigned char)((seq * 131 + i * 7 + (i >> 8)) & 0xff);
}

static inline void tcpmsg_fill(char *p, size_t len, uint64_t seq)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (char)tcpmsg_byte(seq, i);
}

static inline int tcpmsg_check(const char *p, size_t len, uint64_t seq)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)p[i] != tcpmsg_byte(seq, i))
			return 0;
	return 1;
}

/* "10.0.0.1:80" or "[fd00::1]:80"; returns 0 or -1. */
static inline int tcpmsg_parse_addr(const char *spec, struct sockaddr_storage *a, socklen_t *alen)
{
	char host[64];
	const char *colon;
	memset(a, 0, sizeof(*a));
	if (spec[0] == '[') {
		const char *end = strchr(spec, ']');
		if (!end || end[1] != ':' || (size_t)(end - spec - 1) >= sizeof(host))
			return -1;
		memcpy(host, spec + 1, (size_t)(end - spec - 1));
		host[end - spec - 1] = '\0';
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)a;
		s->sin6_family = AF_INET6;
		s->sin6_port = htons((uint16_t)atoi(end + 2));
		if (inet_pton(AF_INET6, host, &s->sin6_addr) != 1)
			return -1;
		*alen = sizeof(*s);
		return 0;
	}
	colon = strrchr(spec, ':');
	if (!colon || (size_t)(colon - spec) >= sizeof(host))
		return -1;
	memcpy(host, spec, (size_t)(colon - spec));
	host[colon - spec] = '\0';
	struct sockaddr_in *s = (struct sockaddr_in *)a;
	s->sin_family = AF_INET;
	s->sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &s->sin_addr) != 1)
		return -1;
	*alen = sizeof(*s);
	return 0;
}

static inline void tcpmsg_format_addr(const struct sockaddr_storage *a, char *buf, size_t size)
{
	char host[INET6_ADDRSTRLEN] = "?";
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)a;
		inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof(host));
		snprintf(buf, size, "[%s]:%u", host, ntohs(s->sin6_port));
	} else {
		const struct sockaddr_in *s = (const struct sockaddr_in *)a;
		inet_ntop(AF_INET, &s->sin_addr, host, sizeof(host));
		snprintf(buf, size, "%s:%u", host, ntohs(s->sin_port));
	}
}

#endif /* CKPT_TESTS_WORKLOADS_TCPMSG_H */
