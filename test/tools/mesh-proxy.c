// mesh-proxy: a stand-in for Istio's Envoy sidecar in iptables REDIRECT mode.
//
// The point is to give the eBPF acceleration a realistic baseline to beat:
// the same socket topology as Envoy (app <-> proxy <-> app, two extra TCP
// hops per side), the same original-destination lookup, the same 127.0.0.6
// inbound source, and a single-threaded non-blocking relay with bounded
// buffers. It deliberately does no L7 work so that measured differences come
// from the data path, not from proxy features.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

// Values from <linux/netfilter_ipv4.h> / <linux/netfilter_ipv6/ip6_tables.h>;
// defined here because those kernel headers clash with the libc socket ones.
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define BUF_SIZE (64 * 1024) // per direction, matching Envoy's default watermark
#define MAX_EVENTS 512
// Rounds of read/write per wakeup before yielding, so one bulk stream
// cannot starve other connections.
#define PUMP_BUDGET 16

enum kind { K_LISTENER, K_SIDE, K_SIGNAL };

struct listener {
	enum kind kind; // must stay first: epoll data points at it
	int fd;
	int family;
	bool inbound;
};

struct pair;

struct side {
	enum kind kind; // must stay first
	int fd;
	int idx;
	struct pair *pair;
	// Edge-triggered epoll only tells us about transitions, so readiness is
	// remembered until a syscall returns EAGAIN.
	bool readable, writable;
	bool connecting;
	bool rd_eof;  // peer sent FIN and we consumed it
	bool wr_shut; // we sent FIN to this side
};

struct buf {
	size_t off, len;
	char data[BUF_SIZE];
};

struct pair {
	struct side s[2]; // 0 = accepted (downstream), 1 = connected (upstream)
	bool dead;
	struct pair *next_dead;
	struct buf b[2]; // b[i]: bytes read from s[i], waiting to go to s[1-i]
};

static int epfd;
// Fixed storage: epoll keeps pointers to these for the process lifetime.
static struct listener listeners[4];
static int n_listeners;
static int outbound_port = 15001, inbound_port = 15006;
static struct in_addr inbound_source;
static struct in6_addr inbound_source6;
// Pairs closed during an epoll batch may still be referenced by later
// events in that batch, so freeing is deferred to the end of the batch.
static struct pair *dead_list;
// Kept open so that on EMFILE we can free a slot, accept and drop the
// connection; otherwise a level-triggered listener would spin forever.
static int reserve_fd = -1;

static void logerr(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("mesh-proxy: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void die(const char *what)
{
	logerr("%s: %s", what, strerror(errno));
	exit(1);
}

static void set_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int make_listener(int family, int port)
{
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	set_nodelay(fd);
	struct sockaddr_storage ss;
	socklen_t len;
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
		len = sizeof(*sin);
	} else {
		// v6only so the v4 listener keeps receiving v4 connections with
		// their native address family (SO_ORIGINAL_DST is per family).
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sin6->sin6_addr = in6addr_any;
		len = sizeof(*sin6);
	}
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 4096) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static void add_listener(int family, int port, bool inbound)
{
	int fd = make_listener(family, port);
	if (fd < 0) {
		// A pod without IPv6 is normal; only IPv4 is mandatory.
		if (family == AF_INET6 && (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL))
			return;
		logerr("listen %s port %d: %s", family == AF_INET ? "v4" : "v6", port,
		       strerror(errno));
		exit(1);
	}
	struct listener *l = &listeners[n_listeners++];
	*l = (struct listener){ .kind = K_LISTENER, .fd = fd, .family = family, .inbound = inbound };
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = l };
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl listener");
}

static void close_pair(struct pair *p, int reset_idx)
{
	for (int i = 0; i < 2; i++) {
		if (p->s[i].fd < 0)
			continue;
		if (i == reset_idx) {
			// Abortive close: the peer must observe RST, not FIN, so that
			// an upstream reset is not mistaken for a clean end of stream.
			struct linger lg = { .l_onoff = 1, .l_linger = 0 };
			setsockopt(p->s[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		}
		close(p->s[i].fd);
		p->s[i].fd = -1;
	}
	p->dead = true;
	p->next_dead = dead_list;
	dead_list = p;
}

// Side `bad` failed (RST, connect error...): propagate the reset to the
// other side.
static void reset_from(struct pair *p, int bad)
{
	close_pair(p, 1 - bad);
}

static bool would_block(void)
{
	return errno == EAGAIN || errno == EWOULDBLOCK;
}

// Moves bytes in one direction. Returns true if anything changed, so the
// caller knows whether another round could make progress.
static bool pump_dir(struct pair *p, int i)
{
	struct side *src = &p->s[i], *dst = &p->s[1 - i];
	struct buf *b = &p->b[i];
	bool progress = false;

	if (src->readable && !src->rd_eof && !src->connecting) {
		if (b->len == BUF_SIZE && b->off > 0) {
			memmove(b->data, b->data + b->off, b->len - b->off);
			b->len -= b->off;
			b->off = 0;
		}
		// When the buffer is full we simply stop reading: that is the
		// backpressure. The kernel receive window then throttles the sender.
		if (b->len < BUF_SIZE) {
			ssize_t n = recv(src->fd, b->data + b->len, BUF_SIZE - b->len, 0);
			if (n > 0) {
				b->len += (size_t)n;
				progress = true;
			} else if (n == 0) {
				src->rd_eof = true;
				progress = true;
			} else if (would_block()) {
				src->readable = false;
			} else if (errno == EINTR) {
				progress = true;
			} else {
				reset_from(p, i);
				return false;
			}
		}
	}

	if (dst->writable && !dst->connecting && b->len > b->off) {
		ssize_t n = send(dst->fd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL);
		if (n > 0) {
			b->off += (size_t)n;
			if (b->off == b->len)
				b->off = b->len = 0;
			progress = true;
		} else if (n < 0 && would_block()) {
			dst->writable = false;
		} else if (n < 0 && errno == EINTR) {
			progress = true;
		} else {
			reset_from(p, 1 - i);
			return false;
		}
	}

	// Half-close is forwarded only after everything before the FIN has been
	// delivered, otherwise the receiver would see a truncated stream.
	if (src->rd_eof && b->len == b->off && !dst->wr_shut && !dst->connecting) {
		if (shutdown(dst->fd, SHUT_WR) < 0) {
			reset_from(p, 1 - i);
			return false;
		}
		dst->wr_shut = true;
		progress = true;
	}
	return progress;
}

static void pump(struct pair *p)
{
	for (int round = 0; round < PUMP_BUDGET; round++) {
		bool progress = pump_dir(p, 0);
		if (p->dead)
			return;
		progress |= pump_dir(p, 1);
		if (p->dead)
			return;
		if (p->s[0].rd_eof && p->s[1].rd_eof && p->s[0].wr_shut && p->s[1].wr_shut) {
			close_pair(p, -1);
			return;
		}
		if (!progress)
			return;
	}
	// Budget exhausted while still making progress. Re-arming an
	// edge-triggered fd makes epoll re-check readiness and queue a fresh
	// event, which puts this pair at the back of the line without keeping
	// our own run queue.
	for (int i = 0; i < 2; i++) {
		struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
					  .data.ptr = &p->s[i] };
		epoll_ctl(epfd, EPOLL_CTL_MOD, p->s[i].fd, &ev);
	}
}

static void reset_fd(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static bool same_endpoint(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port &&
	       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

static bool is_loopback(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
	return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)a)->sin6_addr);
}

static int port_of(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)a)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
}

static void handle_conn(struct listener *l, int fd)
{
	struct sockaddr_storage orig, local;
	socklen_t olen = sizeof(orig), llen = sizeof(local);
	memset(&orig, 0, sizeof(orig));
	int rc = l->family == AF_INET
		? getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &orig, &olen)
		: getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &orig, &olen);
	// Without a redirect there is nowhere to forward to; and a destination
	// that is the proxy itself would make us connect to ourselves forever.
	if (rc < 0 || getsockname(fd, (struct sockaddr *)&local, &llen) < 0 ||
	    orig.ss_family != l->family || same_endpoint(&orig, &local) ||
	    (is_loopback(&orig) &&
	     (port_of(&orig) == outbound_port || port_of(&orig) == inbound_port))) {
		close(fd);
		return;
	}
	set_nodelay(fd);

	int up = socket(l->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (up < 0) {
		reset_fd(fd);
		return;
	}
	set_nodelay(up);
	if (l->inbound && l->family == AF_INET6) {
		// The IPv6 twin of 127.0.0.6: istio-iptables puts ::6 on lo and
		// exempts it from capture the same way.
		int one = 1;
		setsockopt(up, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		struct sockaddr_in6 src6 = { .sin6_family = AF_INET6, .sin6_addr = inbound_source6 };
		if (bind(up, (struct sockaddr *)&src6, sizeof(src6)) < 0) {
			logerr("bind inbound source ::6: %s", strerror(errno));
			close(up);
			reset_fd(fd);
			return;
		}
	}
	if (l->inbound && l->family == AF_INET) {
		// Istio sources inbound hops from 127.0.0.6 so the app's traffic is
		// distinguishable from the proxy's own outbound traffic. NO_PORT
		// defers port choice to connect(), so the 4-tuple (not the source
		// address alone) bounds the number of concurrent connections.
		int one = 1;
		setsockopt(up, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		struct sockaddr_in src = { .sin_family = AF_INET, .sin_addr = inbound_source };
		if (bind(up, (struct sockaddr *)&src, sizeof(src)) < 0) {
			logerr("bind inbound source: %s", strerror(errno));
			close(up);
			reset_fd(fd);
			return;
		}
	}
	bool connecting = false;
	if (connect(up, (struct sockaddr *)&orig, olen) < 0) {
		if (errno != EINPROGRESS) {
			close(up);
			reset_fd(fd);
			return;
		}
		connecting = true;
	}

	// Only the header is initialised: untouched buffer pages stay unbacked,
	// which keeps thousands of idle connections cheap.
	struct pair *p = malloc(sizeof(*p));
	if (!p) {
		logerr("out of memory");
		close(up);
		reset_fd(fd);
		return;
	}
	p->dead = false;
	p->next_dead = NULL;
	p->b[0].off = p->b[0].len = p->b[1].off = p->b[1].len = 0;
	int fds[2] = { fd, up };
	for (int i = 0; i < 2; i++) {
		p->s[i] = (struct side){ .kind = K_SIDE, .fd = fds[i], .idx = i, .pair = p };
	}
	p->s[1].connecting = connecting;
	for (int i = 0; i < 2; i++) {
		struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
					  .data.ptr = &p->s[i] };
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fds[i], &ev) < 0) {
			logerr("epoll_ctl: %s", strerror(errno));
			close_pair(p, 0);
			return;
		}
	}
}

static void handle_accept(struct listener *l)
{
	for (;;) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			handle_conn(l, fd);
			continue;
		}
		if (would_block())
			return;
		switch (errno) {
		case EINTR:
		case ECONNABORTED:
		case EPROTO:
		case EPERM:
			continue;
		case EMFILE:
		case ENFILE:
			if (reserve_fd >= 0) {
				close(reserve_fd);
				fd = accept(l->fd, NULL, NULL);
				if (fd >= 0)
					reset_fd(fd);
				reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
				logerr("accept: out of file descriptors, dropped connection");
				continue;
			}
			/* fall through */
		default:
			logerr("accept: %s", strerror(errno));
			return;
		}
	}
}

static void handle_side_event(struct side *s, uint32_t ev)
{
	struct pair *p = s->pair;
	if (p->dead)
		return;
	if (ev & EPOLLERR) {
		reset_from(p, s->idx);
		return;
	}
	if (s->connecting && (ev & (EPOLLOUT | EPOLLHUP))) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
			reset_from(p, s->idx);
			return;
		}
		s->connecting = false;
	}
	// HUP/RDHUP are folded into "readable": recv() then reports the EOF
	// in order, after any data still queued.
	if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))
		s->readable = true;
	if (ev & EPOLLOUT)
		s->writable = true;
	pump(p);
}

static void write_ready_file(const char *path)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
		logerr("ready file path too long");
		exit(1);
	}
	FILE *f = fopen(tmp, "w");
	if (!f)
		die("create ready file");
	fprintf(f, "%d\n", (int)getpid());
	// Rename makes the file appear complete: a harness polling for it never
	// sees a half-written one.
	if (fclose(f) != 0 || rename(tmp, path) < 0)
		die("write ready file");
}

static void usage(void)
{
	fprintf(stderr, "usage: mesh-proxy [--outbound-port 15001] [--inbound-port 15006]\n"
			"                  [--inbound-source 127.0.0.6] [--ready-file PATH]\n");
	exit(1);
}

static int parse_port(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v <= 0 || v > 65535)
		usage();
	return (int)v;
}

int main(int argc, char **argv)
{
	const char *ready_file = NULL;
	const char *src = "127.0.0.6";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (i + 1 >= argc)
			usage();
		if (!strcmp(a, "--outbound-port"))
			outbound_port = parse_port(argv[++i]);
		else if (!strcmp(a, "--inbound-port"))
			inbound_port = parse_port(argv[++i]);
		else if (!strcmp(a, "--inbound-source"))
			src = argv[++i];
		else if (!strcmp(a, "--ready-file"))
			ready_file = argv[++i];
		else
			usage();
	}
	inet_pton(AF_INET6, "::6", &inbound_source6);
	if (inet_pton(AF_INET, src, &inbound_source) != 1) {
		logerr("--inbound-source must be an IPv4 address");
		return 1;
	}

	// Each proxied connection costs two descriptors.
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	// signalfd turns SIGTERM into an ordinary epoll event, avoiding the race
	// between checking a flag and blocking in epoll_wait.
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		die("sigprocmask");
	int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0)
		die("signalfd");

	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1");
	static enum kind signal_tag = K_SIGNAL;
	struct epoll_event sev = { .events = EPOLLIN, .data.ptr = &signal_tag };
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &sev) < 0)
		die("epoll_ctl signalfd");

	add_listener(AF_INET, outbound_port, false);
	add_listener(AF_INET, inbound_port, true);
	add_listener(AF_INET6, outbound_port, false);
	add_listener(AF_INET6, inbound_port, true);
	if (ready_file)
		write_ready_file(ready_file);

	struct epoll_event events[MAX_EVENTS];
	for (bool running = true; running;) {
		int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			enum kind *k = events[i].data.ptr;
			switch (*k) {
			case K_LISTENER:
				handle_accept((struct listener *)k);
				break;
			case K_SIDE:
				handle_side_event((struct side *)k, events[i].events);
				break;
			case K_SIGNAL:
				running = false;
				break;
			}
		}
		while (dead_list) {
			struct pair *p = dead_list;
			dead_list = p->next_dead;
			free(p);
		}
	}
	// Open connections are closed by process exit; nothing else to flush.
	return 0;
}
