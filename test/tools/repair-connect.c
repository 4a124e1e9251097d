// repair-connect: makes established TCP sockets with chosen sequence numbers,
// without a handshake, through TCP_REPAIR (needs CAP_NET_ADMIN). Used to
// prove that two connections claiming the same initial sequence numbers are
// treated as ambiguous and neither is paired: a collision no real handshake
// can be made to produce on demand.
//
// usage: repair-connect SRC_IP DST_IP DST_PORT SND_SEQ RCV_SEQ COUNT
// Opens COUNT sockets from SRC_IP (ports chosen by the kernel) to DST_IP:
// DST_PORT, each with send sequence SND_SEQ and receive sequence RCV_SEQ,
// holds them for a second, then exits. No packet is ever sent.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef TCP_REPAIR
#define TCP_REPAIR 19
#endif
#ifndef TCP_REPAIR_QUEUE
#define TCP_REPAIR_QUEUE 20
#endif
#ifndef TCP_QUEUE_SEQ
#define TCP_QUEUE_SEQ 21
#endif
#define TCP_RECV_QUEUE 1
#define TCP_SEND_QUEUE 2

static void die(const char *what)
{
	fprintf(stderr, "repair-connect: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void setopt(int fd, int opt, int val, const char *what)
{
	if (setsockopt(fd, IPPROTO_TCP, opt, &val, sizeof(val)) < 0)
		die(what);
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: repair-connect SRC_IP DST_IP DST_PORT SND_SEQ RCV_SEQ COUNT\n");
		return 2;
	}
	struct sockaddr_in src = { .sin_family = AF_INET }, dst = { .sin_family = AF_INET };
	if (inet_pton(AF_INET, argv[1], &src.sin_addr) != 1 || inet_pton(AF_INET, argv[2], &dst.sin_addr) != 1) {
		fprintf(stderr, "repair-connect: bad address\n");
		return 2;
	}
	dst.sin_port = htons((unsigned short)atoi(argv[3]));
	unsigned int snd = (unsigned int)strtoul(argv[4], NULL, 0), rcv = (unsigned int)strtoul(argv[5], NULL, 0);
	int count = atoi(argv[6]);
	for (int i = 0; i < count; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			die("socket");
		setopt(fd, TCP_REPAIR, 1, "TCP_REPAIR");
		// The callbacks see snd_nxt/rcv_nxt: the queue sequences set here.
		setopt(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE send");
		setopt(fd, TCP_QUEUE_SEQ, (int)snd, "TCP_QUEUE_SEQ send");
		setopt(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE recv");
		setopt(fd, TCP_QUEUE_SEQ, (int)rcv, "TCP_QUEUE_SEQ recv");
		src.sin_port = 0;
		if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0)
			die("bind");
		if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0)
			die("connect");
	}
	printf("%d\n", count);
	fflush(stdout);
	sleep(1);
	return 0;
}
