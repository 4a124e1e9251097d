// app-server: the workload inside a test pod.
//
// It is intentionally the simplest server that still behaves like a real
// one at the TCP level (non-blocking, bounded buffers, honest half-close),
// so that throughput and latency measured through the mesh reflect the
// data path being tested rather than the application.
//
// --blocking turns it into the other kind of app: blocking listeners and
// blocking connection sockets, one process per connection doing plain
// recv()/send() (classic thread-per-connection servers, java.io, most
// scripts). The benchmarks use it to show what such an app gets.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)
#define MAX_EVENTS 512
#define PUMP_BUDGET 16 // rounds per wakeup, so one stream cannot starve others

enum kind { K_LISTENER, K_CONN, K_SIGNAL };
enum mode { M_ECHO, M_SINK };

struct listener {
	enum kind kind; // must stay first: epoll data points at it
	int fd;
};

struct conn {
	enum kind kind; // must stay first
	int fd;
	// Edge-triggered: readiness is remembered until a syscall says EAGAIN.
	bool readable, writable;
	bool rd_eof;
	uint64_t received;
	size_t off, len;
	char data[BUF_SIZE];
};

static int epfd;
// Fixed storage: epoll keeps pointers to these for the process lifetime.
static struct listener listeners[2];
static int n_listeners;
static enum mode mode = M_ECHO;
static bool blocking;

static void die(const char *what)
{
	fprintf(stderr, "app-server: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void set_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void add_listener(int family, int port)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | (blocking ? 0 : SOCK_NONBLOCK), 0);
	if (fd < 0) {
		if (family == AF_INET6 && errno == EAFNOSUPPORT)
			return;
		die("socket");
	}
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
		// Separate v4 socket exists, so keep v6 from claiming v4 traffic.
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sin6->sin6_addr = in6addr_any;
		len = sizeof(*sin6);
	}
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 4096) < 0) {
		if (family == AF_INET6 && errno == EADDRNOTAVAIL) {
			close(fd);
			return;
		}
		die(family == AF_INET ? "listen v4" : "listen v6");
	}
	struct listener *l = &listeners[n_listeners++];
	*l = (struct listener){ .kind = K_LISTENER, .fd = fd };
	if (blocking)
		return;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = l };
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl");
}

static void conn_close(struct conn *c)
{
	close(c->fd);
	free(c);
}

static bool would_block(void)
{
	return errno == EAGAIN || errno == EWOULDBLOCK;
}

// Returns false if the connection was closed (and freed).
static bool pump_once(struct conn *c, bool *progress)
{
	if (c->readable && !c->rd_eof) {
		if (c->len == BUF_SIZE && c->off > 0) {
			memmove(c->data, c->data + c->off, c->len - c->off);
			c->len -= c->off;
			c->off = 0;
		}
		// A full buffer means the client is not reading its echo; not
		// reading further lets TCP flow control push back on it.
		if (c->len < BUF_SIZE) {
			char *dst = mode == M_SINK ? c->data : c->data + c->len;
			size_t room = mode == M_SINK ? BUF_SIZE : BUF_SIZE - c->len;
			ssize_t n = recv(c->fd, dst, room, 0);
			if (n > 0) {
				c->received += (uint64_t)n;
				if (mode == M_ECHO)
					c->len += (size_t)n;
				*progress = true;
			} else if (n == 0) {
				c->rd_eof = true;
				if (mode == M_SINK) {
					// Explicit little-endian so the client can decode it
					// regardless of host byte order.
					for (int i = 0; i < 8; i++)
						c->data[i] = (char)(c->received >> (8 * i));
					c->off = 0;
					c->len = 8;
				}
				*progress = true;
			} else if (would_block()) {
				c->readable = false;
			} else if (errno == EINTR) {
				*progress = true;
			} else {
				conn_close(c);
				return false;
			}
		}
	}
	if (c->writable && c->len > c->off) {
		ssize_t n = send(c->fd, c->data + c->off, c->len - c->off, MSG_NOSIGNAL);
		if (n > 0) {
			c->off += (size_t)n;
			if (c->off == c->len)
				c->off = c->len = 0;
			*progress = true;
		} else if (n < 0 && would_block()) {
			c->writable = false;
		} else if (n < 0 && errno == EINTR) {
			*progress = true;
		} else {
			conn_close(c);
			return false;
		}
	}
	// Only after the echo/count is fully handed to the kernel: FIN must
	// follow the last byte, not overtake it.
	if (c->rd_eof && c->off == c->len) {
		shutdown(c->fd, SHUT_WR);
		conn_close(c);
		return false;
	}
	return true;
}

static void pump(struct conn *c)
{
	for (int round = 0; round < PUMP_BUDGET; round++) {
		bool progress = false;
		if (!pump_once(c, &progress) || !progress)
			return;
	}
	// Still busy: re-arming makes epoll queue a fresh edge for this fd, so
	// it gets served again after the other ready connections.
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c };
	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void handle_accept(struct listener *l)
{
	for (;;) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (would_block())
				return;
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO || errno == EPERM)
				continue;
			// EMFILE and friends: leave the rest in the backlog rather than
			// spinning; they are retried on the next wakeup.
			fprintf(stderr, "app-server: accept: %s\n", strerror(errno));
			return;
		}
		set_nodelay(fd);
		// Buffer pages are only touched on use, so idle connections stay cheap.
		struct conn *c = malloc(sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->kind = K_CONN;
		c->fd = fd;
		c->readable = c->writable = c->rd_eof = false;
		c->received = 0;
		c->off = c->len = 0;
		struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
					  .data.ptr = c };
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
			conn_close(c);
	}
}

// --blocking: a blocking recv() on a socket in a sockmap can come back with
// EAGAIN when it wakes for anything but redirected bytes (kernel
// tcp_bpf_recvmsg, see README); this server then waits and retries, like
// pingpong's blocking mode, rather than dropping the connection.
static bool blocking_retry(int fd, short events)
{
	if (errno == EINTR)
		return true;
	if (errno != EAGAIN && errno != EWOULDBLOCK)
		return false;
	struct pollfd pfd = { .fd = fd, .events = events };
	poll(&pfd, 1, 100);
	return true;
}

static bool blocking_send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (blocking_retry(fd, POLLOUT))
				continue;
			return false;
		}
		p += w;
		n -= (size_t)w;
	}
	return true;
}

static void serve_blocking(int fd)
{
	static char buf[BUF_SIZE];
	uint64_t received = 0;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0) {
			if (blocking_retry(fd, POLLIN))
				continue;
			return;
		}
		if (n == 0)
			break;
		received += (uint64_t)n;
		if (mode == M_ECHO && !blocking_send_all(fd, buf, (size_t)n))
			return;
	}
	if (mode == M_SINK) {
		char cnt[8];
		for (int i = 0; i < 8; i++)
			cnt[i] = (char)(received >> (8 * i));
		if (!blocking_send_all(fd, cnt, sizeof(cnt)))
			return;
	}
	shutdown(fd, SHUT_WR);
}

static void run_blocking(void)
{
	// Children are reaped by the kernel; each serves one connection.
	signal(SIGCHLD, SIG_IGN);
	struct pollfd pfds[2];
	for (int i = 0; i < n_listeners; i++)
		pfds[i] = (struct pollfd){ .fd = listeners[i].fd, .events = POLLIN };
	for (;;) {
		// poll only picks the listener (v4 or v6); accept() itself blocks.
		if (poll(pfds, (nfds_t)n_listeners, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		for (int i = 0; i < n_listeners; i++) {
			if (!(pfds[i].revents & POLLIN))
				continue;
			int fd = accept4(pfds[i].fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0) {
				if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO || errno == EPERM || errno == EAGAIN)
					continue;
				fprintf(stderr, "app-server: accept: %s\n", strerror(errno));
				continue;
			}
			set_nodelay(fd);
			pid_t pid = fork();
			if (pid == 0) {
				for (int j = 0; j < n_listeners; j++)
					close(listeners[j].fd);
				serve_blocking(fd);
				close(fd);
				_exit(0);
			}
			if (pid < 0)
				fprintf(stderr, "app-server: fork: %s\n", strerror(errno));
			close(fd);
		}
	}
}

static void write_ready(const char *ready_file)
{
	if (!ready_file)
		return;
	// Write then rename, so a polling harness never sees a partial file.
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", ready_file, (int)getpid()) >= (int)sizeof(tmp)) {
		fprintf(stderr, "app-server: ready file path too long\n");
		exit(1);
	}
	FILE *f = fopen(tmp, "w");
	if (!f)
		die("create ready file");
	fprintf(f, "%d\n", (int)getpid());
	if (fclose(f) != 0 || rename(tmp, ready_file) < 0)
		die("write ready file");
}

static void usage(void)
{
	fprintf(stderr, "usage: app-server --port P [--mode echo|sink|pingpong] [--blocking] [--ready-file PATH]\n");
	exit(1);
}

int main(int argc, char **argv)
{
	int port = 0;
	const char *ready_file = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--blocking")) {
			blocking = true;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		const char *a = argv[i], *v = argv[++i];
		if (!strcmp(a, "--port")) {
			char *end;
			long p = strtol(v, &end, 10);
			if (*end || p <= 0 || p > 65535)
				usage();
			port = (int)p;
		} else if (!strcmp(a, "--mode")) {
			// pingpong needs nothing beyond echo: the client drives timing.
			if (!strcmp(v, "echo") || !strcmp(v, "pingpong"))
				mode = M_ECHO;
			else if (!strcmp(v, "sink"))
				mode = M_SINK;
			else
				usage();
		} else if (!strcmp(a, "--ready-file")) {
			ready_file = v;
		} else {
			usage();
		}
	}
	if (!port)
		usage();

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);

	if (blocking) {
		// Default SIGTERM/SIGINT: the process (and its children with it,
		// when the harness kills the cgroup) just ends.
		add_listener(AF_INET, port);
		add_listener(AF_INET6, port);
		write_ready(ready_file);
		run_blocking();
	}

	// signalfd avoids the check-flag-then-block race with epoll_wait.
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
		die("epoll_ctl");

	add_listener(AF_INET, port);
	add_listener(AF_INET6, port);
	write_ready(ready_file);

	struct epoll_event events[MAX_EVENTS];
	for (;;) {
		int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		// Each fd appears at most once per batch and a conn owns exactly one
		// fd, so freeing a conn mid-batch cannot leave a dangling event.
		for (int i = 0; i < n; i++) {
			enum kind *k = events[i].data.ptr;
			uint32_t ev = events[i].events;
			if (*k == K_SIGNAL)
				return 0;
			if (*k == K_LISTENER) {
				handle_accept((struct listener *)k);
				continue;
			}
			struct conn *c = (struct conn *)k;
			if (ev & EPOLLERR) {
				conn_close(c);
				continue;
			}
			if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))
				c->readable = true;
			if (ev & EPOLLOUT)
				c->writable = true;
			pump(c);
		}
	}
}
