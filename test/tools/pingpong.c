// pingpong: latency / throughput client for the mesh benchmarks.
//
// Blocking sockets by default: one outstanding request at a time gives a
// clean per-round-trip latency with no event-loop overhead in the client,
// so differences between runs come from the path under test.
//
// --nonblock makes it behave like the clients users actually run (nginx,
// Envoy, Go, Node, Java NIO): the socket is O_NONBLOCK from socket() on, the
// connect completes through the event loop, and every read or write that
// would block waits in epoll_wait (level-triggered, EPOLLOUT armed only
// while a write is pending, as libuv does) instead of in the syscall.
//
// --node-cpu adds the node's CPU time (the "cpu" line of /proc/stat, all
// CPUs, in USER_HZ ticks) spent during the measured window only: after the
// warm-up and after the connection is set up, so process start-up is not
// charged to the requests. --edge-sync lets the caller sample its own
// counters at the same edges: at each edge pingpong writes "edge" on stderr
// and waits for a byte on stdin (the bench reads the pods' cgroup cpu.stat
// there, which is not visible inside `ip netns exec`).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_storage target;
static socklen_t target_len;
static int timeout_s = 10;
static bool nonblock;
static bool node_cpu;
static bool edge_sync;
// rr: keep going after --count round trips until the measured window has
// lasted this long (CPU ticks need a long enough window to mean anything).
static double min_seconds;

__attribute__((format(printf, 1, 2), noreturn)) static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("pingpong: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void fail_errno(const char *what)
{
	// A timed-out blocking call surfaces as EAGAIN; name it plainly.
	const char *msg = (errno == EAGAIN || errno == EWOULDBLOCK) ? "timed out" : strerror(errno);
	fprintf(stderr, "pingpong: %s: %s\n", what, msg);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// Optional IPv4 source address: lets a uid-1337 client play Envoy's inbound
// hop, which istio-iptables only exempts from capture when sourced from
// 127.0.0.6.
static const char *bind_addr;

// --nonblock: the client's one event loop. Level-triggered like libuv's;
// the registered fd and its interest set are remembered so a wait only
// costs an epoll_ctl when the interest changes.
static int epfd = -1;
static int ep_fd = -1;
static uint32_t ep_events;
// Wake-ups for readability after which recv() still had nothing to read.
static unsigned long spurious_wakeups;

static uint64_t deadline_from_now(void)
{
	return now_ns() + (uint64_t)timeout_s * 1000000000u;
}

// Waits until fd is ready for `want` (EPOLLIN or EPOLLOUT) or fails at the
// deadline. Errors and hang-ups count as ready: the next syscall reports them.
static void wait_ready(int fd, uint32_t want, uint64_t deadline, const char *what)
{
	if (epfd < 0) {
		epfd = epoll_create1(EPOLL_CLOEXEC);
		if (epfd < 0)
			fail_errno("epoll_create1");
	}
	if (ep_fd != fd || ep_events != want) {
		struct epoll_event ev = { .events = want, .data.fd = fd };
		if (epoll_ctl(epfd, ep_fd == fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0)
			fail_errno("epoll_ctl");
		ep_fd = fd;
		ep_events = want;
	}
	for (;;) {
		uint64_t now = now_ns();
		if (now >= deadline)
			fail("%s: timed out", what);
		int ms = (int)((deadline - now + 999999) / 1000000);
		struct epoll_event ev;
		int n = epoll_wait(epfd, &ev, 1, ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fail_errno("epoll_wait");
		}
		if (n == 1)
			return;
	}
}

static void close_conn(int fd)
{
	// close() drops the fd from the epoll set; forget it so a new socket
	// that reuses the number is added again.
	if (fd == ep_fd)
		ep_fd = -1;
	close(fd);
}

static int connect_target(void)
{
	int fd = socket(target.ss_family, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (fd < 0)
		fail_errno("socket");
	if (bind_addr) {
		struct sockaddr_in src = { .sin_family = AF_INET };
		if (target.ss_family != AF_INET || inet_pton(AF_INET, bind_addr, &src.sin_addr) != 1)
			fail("--bind needs an IPv4 address and an IPv4 --host");
		if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0)
			fail_errno("bind");
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (nonblock) {
		// As an event loop connects: EINPROGRESS, wait for writability,
		// then read the outcome from SO_ERROR.
		if (connect(fd, (struct sockaddr *)&target, target_len) < 0) {
			if (errno != EINPROGRESS)
				fail_errno("connect");
			wait_ready(fd, EPOLLOUT, deadline_from_now(), "connect");
			int err = 0;
			socklen_t len = sizeof(err);
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
				fail_errno("getsockopt SO_ERROR");
			if (err) {
				errno = err;
				fail_errno("connect");
			}
		}
		return fd;
	}
	// Timeouts turn a stalled proxy into a clear failure instead of a hang.
	struct timeval tv = { .tv_sec = timeout_s };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&target, target_len) < 0)
		fail_errno("connect");
	return fd;
}

static void write_all(int fd, const char *p, size_t n)
{
	uint64_t deadline = nonblock ? deadline_from_now() : 0;
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (nonblock && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				wait_ready(fd, EPOLLOUT, deadline, "write");
				continue;
			}
			fail_errno("write");
		}
		p += w;
		n -= (size_t)w;
	}
}

// A blocking recv() on a socket in a sockmap can return EAGAIN when it wakes
// for anything but redirected bytes (kernel tcp_bpf_recvmsg, up to at least
// 6.18). Robust apps retry; so does this client, until its own deadline, and
// it reports how often that happened.
static unsigned long eagain_retries;

// --nonblock: wait for readability first, then read, as an event loop does
// after it has sent a request; a short read means the socket is drained, so
// the loop waits again rather than trying a recv() that would say EAGAIN.
static void read_exact_nonblock(int fd, char *p, size_t n)
{
	uint64_t deadline = deadline_from_now();
	while (n > 0) {
		wait_ready(fd, EPOLLIN, deadline, "read");
		ssize_t r = recv(fd, p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				spurious_wakeups++;
				continue;
			}
			fail_errno("read");
		}
		if (r == 0) {
			fprintf(stderr, "pingpong: short read: connection closed with %zu bytes missing\n", n);
			exit(1);
		}
		p += r;
		n -= (size_t)r;
	}
}

static void read_exact(int fd, char *p, size_t n)
{
	if (nonblock) {
		read_exact_nonblock(fd, p, n);
		return;
	}
	uint64_t deadline = now_ns() + (uint64_t)timeout_s * 1000000000u;
	while (n > 0) {
		ssize_t r = recv(fd, p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if ((errno == EAGAIN || errno == EWOULDBLOCK) && now_ns() < deadline) {
				struct pollfd pfd = { .fd = fd, .events = POLLIN };
				eagain_retries++;
				poll(&pfd, 1, 100);
				continue;
			}
			fail_errno("read");
		}
		if (r == 0) {
			fprintf(stderr, "pingpong: short read: connection closed with %zu bytes missing\n", n);
			exit(1);
		}
		p += r;
		n -= (size_t)r;
	}
}

// Large messages: writing all before reading could deadlock once the echo
// fills every buffer on the path, so send and receive are interleaved.
static void exchange(int fd, const char *tx, char *rx, size_t n)
{
	if (n <= 65536) {
		// Fits in socket buffers: two plain syscalls keep the client's own
		// cost per round trip minimal.
		write_all(fd, tx, n);
		read_exact(fd, rx, n);
		return;
	}
	size_t sent = 0, got = 0;
	while (got < n) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN | (sent < n ? POLLOUT : 0) };
		int r = poll(&pfd, 1, timeout_s * 1000);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			fail_errno("poll");
		}
		if (r == 0)
			fail("timed out waiting for echo (%zu of %zu bytes back)", got, n);
		if (sent < n && (pfd.revents & (POLLOUT | POLLERR | POLLHUP))) {
			ssize_t w = send(fd, tx + sent, n - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				fail_errno("write");
			if (w > 0)
				sent += (size_t)w;
		}
		if (pfd.revents & (POLLIN | POLLERR | POLLHUP)) {
			ssize_t rd = recv(fd, rx + got, n - got, MSG_DONTWAIT);
			if (rd == 0)
				fail("short read: connection closed with %zu bytes missing", n - got);
			if (rd < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				fail_errno("read");
			if (rd > 0)
				got += (size_t)rd;
		}
	}
}

// --node-cpu: the node's CPU time from /proc/stat, sampled at the edges of
// the measured window. Ticks of USER_HZ; the fields in /proc/stat order.
#define MAX_CPUS 1024
enum { F_USER, F_NICE, F_SYSTEM, F_IDLE, F_IOWAIT, F_IRQ, F_SOFTIRQ, F_STEAL, N_FIELDS };
static const char *const field_names[N_FIELDS] = { "user", "nice", "system", "idle",
						    "iowait", "irq", "softirq", "steal" };
struct cpu_sample {
	uint64_t t_ns;
	uint64_t total[N_FIELDS];
	int ncpu;
	uint64_t busy[MAX_CPUS]; // per CPU: user + nice + system + irq + softirq
};
static struct cpu_sample cpu_start, cpu_end;
static void parse_cpu_fields(const char *p, uint64_t *out)
{
	for (int i = 0; i < N_FIELDS; i++) {
		char *end;
		out[i] = strtoull(p, &end, 10);
		p = end;
	}
}

// --edge-sync: tell the caller an edge of the window is here and wait
// until it has taken its own sample.
static void sync_edge(void)
{
	if (!edge_sync)
		return;
	fputs("edge\n", stderr);
	fflush(stderr);
	char c;
	ssize_t r;
	do
		r = read(STDIN_FILENO, &c, 1);
	while (r < 0 && errno == EINTR);
	if (r != 1)
		fail("--edge-sync: no answer on stdin");
}

static void read_proc_stat(struct cpu_sample *s)
{
	if (!node_cpu)
		return;
	FILE *f = fopen("/proc/stat", "re");
	if (!f)
		fail_errno("open /proc/stat");
	memset(s, 0, sizeof(*s));
	char line[1024];
	// The cpu lines come first; the long ones after them ("intr") are
	// never read.
	while (fgets(line, sizeof(line), f) && !strncmp(line, "cpu", 3)) {
		uint64_t v[N_FIELDS];
		if (line[3] == ' ') {
			parse_cpu_fields(line + 3, s->total);
		} else if (s->ncpu < MAX_CPUS) {
			char *p = line + 3;
			strtol(p, &p, 10);
			parse_cpu_fields(p, v);
			s->busy[s->ncpu++] = v[F_USER] + v[F_NICE] + v[F_SYSTEM] + v[F_IRQ] + v[F_SOFTIRQ];
		}
	}
	fclose(f);
	s->t_ns = now_ns();
}

// One edge of the measured window. The caller's window (--edge-sync) nests
// inside the /proc/stat one: it opens after it and closes before it.
static void sample_cpu(struct cpu_sample *s)
{
	if (s == &cpu_end)
		sync_edge();
	read_proc_stat(s);
	if (s == &cpu_start)
		sync_edge();
}

// Appends ,"node_cpu":{...} (the deltas of the window) to a JSON object.
static void print_node_cpu(void)
{
	if (!node_cpu)
		return;
	printf(",\"node_cpu\":{\"user_hz\":%ld,\"cpus\":%d,\"window_s\":%.6f", sysconf(_SC_CLK_TCK),
	       cpu_end.ncpu, (double)(cpu_end.t_ns - cpu_start.t_ns) / 1e9);
	for (int i = 0; i < N_FIELDS; i++)
		printf(",\"%s\":%" PRIu64, field_names[i], cpu_end.total[i] - cpu_start.total[i]);
	printf(",\"per_cpu_busy\":[");
	for (int i = 0; i < cpu_end.ncpu && i < cpu_start.ncpu; i++)
		printf("%s%" PRIu64, i ? "," : "", cpu_end.busy[i] - cpu_start.busy[i]);
	printf("]}");
}

// The fields every JSON report ends with.
static void print_json_tail(void)
{
	printf(",\"eagain_retries\":%lu,\"nonblock\":%s,\"spurious_wakeups\":%lu", eagain_retries,
	       nonblock ? "true" : "false", spurious_wakeups);
	print_node_cpu();
	printf("}\n");
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

// Nearest-rank percentile on a sorted array.
static double pct_us(const uint64_t *v, size_t n, double p)
{
	size_t rank = (size_t)(p * (double)n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)v[rank - 1] / 1000.0;
}

static void report_latency(const char *mode, long size, uint64_t *lat, size_t n, bool json)
{
	qsort(lat, n, sizeof(*lat), cmp_u64);
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += (double)lat[i];
	double mean = sum / (double)n / 1000.0;
	if (json)
	{
		printf("{\"mode\":\"%s\",\"size\":%ld,\"count\":%zu,\"p50_us\":%.3f,\"p90_us\":%.3f,"
		       "\"p99_us\":%.3f,\"mean_us\":%.3f,\"min_us\":%.3f",
		       mode, size, n, pct_us(lat, n, 0.50), pct_us(lat, n, 0.90), pct_us(lat, n, 0.99),
		       mean, (double)lat[0] / 1000.0);
		print_json_tail();
	} else
		printf("%s size=%ld count=%zu p50=%.1fus p90=%.1fus p99=%.1fus mean=%.1fus min=%.1fus\n",
		       mode, size, n, pct_us(lat, n, 0.50), pct_us(lat, n, 0.90), pct_us(lat, n, 0.99),
		       mean, (double)lat[0] / 1000.0);
}

static void run_rr(long size, long count, long warmup, bool json)
{
	char *tx = malloc((size_t)size), *rx = malloc((size_t)size);
	size_t cap = (size_t)count, n = 0;
	uint64_t *lat = malloc(sizeof(uint64_t) * cap);
	if (!tx || !rx || !lat)
		fail("out of memory");
	for (long i = 0; i < size; i++)
		tx[i] = (char)(i * 31 + 7);
	int fd = connect_target();
	uint64_t window_start = 0;
	for (long i = 0;; i++) {
		if (i >= warmup + count &&
		    (min_seconds <= 0 || (double)(now_ns() - window_start) >= min_seconds * 1e9))
			break;
		if (i == warmup) {
			sample_cpu(&cpu_start);
			window_start = now_ns();
		}
		// A per-iteration tag catches a relay that replays or reorders
		// data, which equal-looking payloads would hide.
		memcpy(tx, &i, (size_t)size < sizeof(i) ? (size_t)size : sizeof(i));
		uint64_t t0 = now_ns();
		exchange(fd, tx, rx, (size_t)size);
		uint64_t t1 = now_ns();
		if (memcmp(tx, rx, (size_t)size) != 0) {
			fprintf(stderr, "pingpong: echo mismatch in round trip %ld\n", i);
			exit(1);
		}
		if (i >= warmup) {
			if (n == cap) {
				cap *= 2;
				lat = realloc(lat, sizeof(uint64_t) * cap);
				if (!lat)
					fail("out of memory");
			}
			lat[n++] = t1 - t0;
		}
	}
	sample_cpu(&cpu_end);
	close_conn(fd);
	report_latency("rr", size, lat, n, json);
	free(tx);
	free(rx);
	free(lat);
}

static void run_crr(long count, long warmup, bool json)
{
	uint64_t *lat = malloc(sizeof(uint64_t) * (size_t)count);
	if (!lat)
		fail("out of memory");
	for (long i = 0; i < warmup + count; i++) {
		if (i == warmup)
			sample_cpu(&cpu_start);
		char tx = (char)i, rx;
		uint64_t t0 = now_ns();
		int fd = connect_target();
		write_all(fd, &tx, 1);
		read_exact(fd, &rx, 1);
		// The client closes first and so holds TIME_WAIT; for long runs
		// rely on tcp_tw_reuse (default on for loopback) rather than RST,
		// which would exercise the proxy's reset path instead.
		close_conn(fd);
		uint64_t t1 = now_ns();
		if (rx != tx) {
			fprintf(stderr, "pingpong: echo mismatch in connection %ld\n", i);
			exit(1);
		}
		if (i >= warmup)
			lat[i - warmup] = t1 - t0;
	}
	sample_cpu(&cpu_end);
	report_latency("crr", 1, lat, (size_t)count, json);
	free(lat);
}

static void run_bulk(long chunk, double seconds, bool json)
{
	char *buf = malloc((size_t)chunk);
	if (!buf)
		fail("out of memory");
	memset(buf, 0x5a, (size_t)chunk);
	int fd = connect_target();
	uint64_t sent = 0;
	sample_cpu(&cpu_start);
	uint64_t start = now_ns();
	uint64_t deadline = start + (uint64_t)(seconds * 1e9);
	while (now_ns() < deadline) {
		write_all(fd, buf, (size_t)chunk);
		sent += (uint64_t)chunk;
	}
	if (shutdown(fd, SHUT_WR) < 0)
		fail_errno("shutdown");
	unsigned char cnt[8];
	read_exact(fd, (char *)cnt, sizeof(cnt));
	// Throughput counts until the sink confirmed receipt, so bytes still
	// sitting in socket buffers are not credited as delivered.
	uint64_t elapsed = now_ns() - start;
	sample_cpu(&cpu_end);
	close_conn(fd);
	free(buf);
	uint64_t got = 0;
	for (int i = 0; i < 8; i++)
		got |= (uint64_t)cnt[i] << (8 * i);
	if (got != sent) {
		fprintf(stderr, "pingpong: sink received %" PRIu64 " bytes but %" PRIu64 " were sent\n",
			got, sent);
		exit(2);
	}
	double gbps = (double)sent * 8.0 / (double)elapsed;
	if (json)
	{
		printf("{\"mode\":\"bulk\",\"chunk\":%ld,\"seconds\":%.3f,\"bytes\":%" PRIu64
		       ",\"gbit_per_s\":%.3f",
		       chunk, (double)elapsed / 1e9, sent, gbps);
		print_json_tail();
	} else
		printf("bulk chunk=%ld seconds=%.3f bytes=%" PRIu64 " %.3f Gbit/s\n", chunk,
		       (double)elapsed / 1e9, sent, gbps);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: pingpong --host H --port P --mode rr|crr|bulk [--size BYTES] [--count N]\n"
		"                [--warmup W] [--seconds S] [--cpu N] [--timeout S] [--bind IPV4] [--json]\n"
		"                [--nonblock] [--node-cpu] [--edge-sync] [--min-seconds S]\n"
		"  rr:   N round trips of BYTES against an echo server\n"
		"  crr:  N connect + 1-byte round trip + close against an echo server\n"
		"  bulk: stream BYTES-sized writes for S seconds to a sink server\n"
		"  --nonblock: O_NONBLOCK socket driven by epoll, like an event-loop app\n"
		"  --node-cpu: report the node's /proc/stat CPU ticks of the measured window (--json)\n"
		"  --min-seconds: rr: after N round trips, go on until the window lasted S seconds\n"
		"  --edge-sync: at each edge of the measured window, write \"edge\" on stderr and\n"
		"               wait for a byte on stdin\n");
	exit(1);
}

static long parse_long(const char *s, long min)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v < min)
		fail("invalid number: %s", s);
	return v;
}

int main(int argc, char **argv)
{
	const char *host = NULL, *mode = NULL;
	long port = 0, size = -1, count = 1000, warmup = 100, cpu = -1;
	double seconds = 10;
	bool json = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--json")) {
			json = true;
			continue;
		}
		if (!strcmp(a, "--nonblock")) {
			nonblock = true;
			continue;
		}
		if (!strcmp(a, "--node-cpu")) {
			node_cpu = true;
			continue;
		}
		if (!strcmp(a, "--edge-sync")) {
			edge_sync = true;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		const char *v = argv[++i];
		if (!strcmp(a, "--host"))
			host = v;
		else if (!strcmp(a, "--port"))
			port = parse_long(v, 1);
		else if (!strcmp(a, "--mode"))
			mode = v;
		else if (!strcmp(a, "--size"))
			size = parse_long(v, 1);
		else if (!strcmp(a, "--count"))
			count = parse_long(v, 1);
		else if (!strcmp(a, "--warmup"))
			warmup = parse_long(v, 0);
		else if (!strcmp(a, "--cpu"))
			cpu = parse_long(v, 0);
		else if (!strcmp(a, "--bind"))
			bind_addr = v;

		else if (!strcmp(a, "--timeout"))
			timeout_s = (int)parse_long(v, 1);
		else if (!strcmp(a, "--min-seconds")) {
			char *end;
			min_seconds = strtod(v, &end);
			if (*end || !(min_seconds >= 0))
				fail("invalid --min-seconds: %s", v);
		} else if (!strcmp(a, "--seconds")) {
			char *end;
			seconds = strtod(v, &end);
			if (*end || !(seconds > 0))
				fail("invalid --seconds: %s", v);
		} else
			usage();
	}
	if (!host || !mode || port > 65535 || !port)
		usage();
	if (size < 0)
		size = !strcmp(mode, "bulk") ? 65536 : 1;

	memset(&target, 0, sizeof(target));
	struct sockaddr_in *sin = (struct sockaddr_in *)&target;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&target;
	// Brackets are tolerated so "[::1]" copied from a URL works too.
	char h[INET6_ADDRSTRLEN + 2];
	snprintf(h, sizeof(h), "%s", host);
	size_t hl = strlen(h);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		memmove(h, h + 1, hl - 2);
		h[hl - 2] = '\0';
	}
	if (inet_pton(AF_INET, h, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		target_len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, h, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		target_len = sizeof(*sin6);
	} else {
		fail("--host must be an IPv4 or IPv6 literal, got %s", host);
	}

	if (cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		if (cpu >= CPU_SETSIZE)
			fail("--cpu out of range");
		CPU_SET((int)cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set) < 0)
			fail_errno("sched_setaffinity");
	}
	signal(SIGPIPE, SIG_IGN);

	if (!strcmp(mode, "rr"))
		run_rr(size, count, warmup, json);
	else if (!strcmp(mode, "crr"))
		run_crr(count, warmup, json);
	else if (!strcmp(mode, "bulk"))
		run_bulk(size, seconds, json);
	else
		fail("unknown --mode %s", mode);
	if (fflush(stdout) != 0)
		fail_errno("stdout");
	return 0;
}
