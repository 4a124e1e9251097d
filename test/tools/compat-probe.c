// compat-probe: socket-semantics probes for the compatibility suite
// (test/compat/). One connection per run, between a server and a client app
// in two pods; one side is the *observer* (it makes the calls whose results
// are compared between plain TCP and meshlane), the other the *peer* (it
// plays a fixed script with fixed delays). Both print one JSON line with
// what they saw. Fields whose name starts with "_" are raw measurements for
// the report (milliseconds) and are not compared; timings are compared only
// by class (see bucket()).
//
//   compat-probe server --port P --case C --observer client|server [--nonblock] [--ready-file F]
//   compat-probe client --host H --port P --case C --observer client|server [--nonblock]
//
// --nonblock: the observer's socket is non-blocking from the start (a
// SOCK_NONBLOCK connect, an accept4(SOCK_NONBLOCK)) and its blocking calls
// become what an event loop does: poll, then the call, again on EAGAIN.
//
// Cases: fionread fionread-mixed peek splice sendfile rcvlowat rdhup duplex signal-restart
// signal-intr rcvtimeo rst-linger0 close-unread peer-first
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>

// The peer's delays. Observations are classed against them.
#define EARLY_MS 250 // signals, receive timeouts
#define LATE_MS 700  // the peer's late bytes

static double t0;
static bool nonblock; // the observer's socket, see o_recv()
static char out[16384];
static size_t outlen;
static bool first_field = true;

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double since(void)
{
	return now_ms() - t0;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

// Timing classes, from the start of the connection: "at once" (before any
// delay of the peer), "~250ms" (the signal / timeout point), "~700ms" (the
// peer's late bytes), "late" (nothing expected this late: a hang).
static const char *bucket(double ms)
{
	if (ms < 150)
		return "at once";
	if (ms < 500)
		return "~250ms";
	if (ms < 1500)
		return "~700ms";
	return "late";
}

static void field_raw(const char *key, const char *fmt, ...)
{
	va_list ap;
	outlen += snprintf(out + outlen, sizeof(out) - outlen, "%s\"%s\":", first_field ? "" : ",", key);
	first_field = false;
	va_start(ap, fmt);
	outlen += vsnprintf(out + outlen, sizeof(out) - outlen, fmt, ap);
	va_end(ap);
	if (outlen >= sizeof(out))
		outlen = sizeof(out) - 1;
}

static void fstr(const char *key, const char *s)
{
	char esc[1024];
	size_t j = 0;
	for (size_t i = 0; s[i] && j < sizeof(esc) - 8; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\') {
			esc[j++] = '\\';
			esc[j++] = ch;
		} else if (ch < 0x20 || ch >= 0x7f) {
			j += snprintf(esc + j, sizeof(esc) - j, "\\u%04x", ch);
		} else {
			esc[j++] = ch;
		}
	}
	esc[j] = 0;
	field_raw(key, "\"%s\"", esc);
}

static void fint(const char *key, long v)
{
	field_raw(key, "%ld", v);
}

static void fbool(const char *key, bool v)
{
	field_raw(key, "%s", v ? "true" : "false");
}

static void fms(const char *key, double ms)
{
	char k[64];
	snprintf(k, sizeof(k), "_%s_ms", key);
	field_raw(k, "%.1f", ms);
}

// A syscall result as text: "n=<bytes>" or the errno's name.
static const char *errname(int e)
{
	switch (e) {
	case EAGAIN: return "EAGAIN";
	case EINTR: return "EINTR";
	case ECONNRESET: return "ECONNRESET";
	case EPIPE: return "EPIPE";
	case ENOTCONN: return "ENOTCONN";
	case EINVAL: return "EINVAL";
	case ETIMEDOUT: return "ETIMEDOUT";
	case EBADF: return "EBADF";
	case ESHUTDOWN: return "ESHUTDOWN";
	default: return strerror(e);
	}
}

static char resbuf[8][64];
static int resi;
static const char *res(long r, int e)
{
	char *b = resbuf[resi++ % 8];
	if (r < 0)
		snprintf(b, 64, "%s", errname(e));
	else
		snprintf(b, 64, "n=%ld", r);
	return b;
}

static void die(const char *what)
{
	fprintf(stderr, "compat-probe: %s: %s\n", what, strerror(errno));
	exit(2);
}

// Deterministic byte stream both ends can generate, to check bytes exactly.
static uint32_t prng_state;
static void prng_seed(void) { prng_state = 0x9e3779b9u; }
static uint8_t prng_byte(void)
{
	prng_state ^= prng_state << 13;
	prng_state ^= prng_state >> 17;
	prng_state ^= prng_state << 5;
	return (uint8_t)(prng_state >> 24);
}

static void write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pf = { fd, POLLOUT, 0 };
				poll(&pf, 1, 100);
				continue;
			}
			die("send");
		}
		p += n;
		len -= n;
	}
}

static void write_str(int fd, const char *s)
{
	write_all(fd, s, strlen(s));
}

// Reads until `len` bytes or EOF/error, blocking; returns the count.
static size_t read_n(int fd, char *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = recv(fd, buf + got, len - got, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
			// EAGAIN on a blocking socket is itself a finding elsewhere;
			// here (the script's own reads) wait and retry.
			struct pollfd p = { fd, POLLIN, 0 };
			poll(&p, 1, 100);
			continue;
		}
		if (n <= 0)
			break;
		got += n;
	}
	return got;
}

// Reads until EOF (or error), at most `len` bytes kept; returns "eof",
// or the errno's name, in *end.
static size_t read_to_end(int fd, char *buf, size_t len, const char **end, int timeout_ms)
{
	size_t got = 0;
	double until = now_ms() + timeout_ms;
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		int left = (int)(until - now_ms());
		if (left <= 0) {
			*end = "timeout";
			return got;
		}
		if (poll(&p, 1, left) == 0)
			continue;
		char tmp[4096];
		ssize_t n = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			sleep_ms(2);
			continue;
		}
		if (n < 0) {
			*end = errname(errno);
			return got;
		}
		if (n == 0) {
			*end = "eof";
			return got;
		}
		size_t keep = (size_t)n;
		if (got + keep > len)
			keep = len > got ? len - got : 0;
		memcpy(buf + got, tmp, keep);
		got += keep;
	}
}

// The observer's "blocking" receive: a blocking recv(), or with --nonblock
// an event loop's poll + recv, repeated while recv says EAGAIN (for at
// most 2 s of such spurious wakeups: then EAGAIN is the answer). A signal
// interrupts poll with EINTR whatever SA_RESTART says.
static ssize_t o_recv(int fd, void *buf, size_t len, int flags)
{
	if (!nonblock || (flags & MSG_DONTWAIT))
		return recv(fd, buf, len, flags);
	double spin_until = 0;
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, -1) < 0)
			return -1;
		ssize_t r = recv(fd, buf, len, flags | MSG_DONTWAIT);
		if (r >= 0 || errno != EAGAIN)
			return r;
		if (!spin_until)
			spin_until = now_ms() + 2000;
		else if (now_ms() > spin_until)
			return -1;
		sleep_ms(1);
	}
}

static void wait_byte(int fd)
{
	char c;
	read_n(fd, &c, 1);
}

static volatile sig_atomic_t handled;
static void on_alarm(int sig)
{
	(void)sig;
	handled++;
}

static void arm_alarm(bool restart)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sa.sa_flags = restart ? SA_RESTART : 0;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = { { 0, 0 }, { 0, EARLY_MS * 1000 } };
	setitimer(ITIMER_REAL, &it, NULL);
}

static void set_timeo(int fd, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* ---- the cases: observer and peer of each ---- */

static void obs_fionread(int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };
	poll(&p, 1, 3000);
	sleep_ms(150); // all 1000 bytes are in by now
	int n = -1, q = -1;
	ioctl(fd, FIONREAD, &n);
	ioctl(fd, SIOCINQ, &q); // the same request number on Linux; kept for the record
	fint("fionread", n);
	char buf[1000];
	size_t got = read_n(fd, buf, 300);
	ioctl(fd, FIONREAD, &n);
	fint("fionread_after_300", n);
	got += read_n(fd, buf, 700);
	ioctl(fd, FIONREAD, &n);
	fint("fionread_after_all", n);
	fint("read", (long)got);
	int outq = -1;
	ioctl(fd, SIOCOUTQ, &outq);
	fint("siocoutq_idle", outq);
	write_str(fd, "k");
}

static void peer_fionread(int fd)
{
	char buf[1000];
	memset(buf, 'f', sizeof(buf));
	write_all(fd, buf, sizeof(buf));
	wait_byte(fd);
	fbool("acked", true);
}

// Bytes queued two ways: 1000 B arrive, the observer half-closes its write
// side, the peer answers the FIN with 1000 B more (under meshlane the
// second batch comes over TCP, peer_half_closed, behind redirected bytes).
static void obs_fionread_mixed(int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };
	poll(&p, 1, 3000);
	sleep_ms(100);
	shutdown(fd, SHUT_WR);
	sleep_ms(500); // the FIN went round, the second 1000 B are in
	int n = -1;
	ioctl(fd, FIONREAD, &n);
	fint("fionread", n);
	size_t got = 0;
	bool order = true;
	for (;;) {
		char tmp[4096];
		ssize_t r = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT);
		if (r <= 0)
			break;
		for (ssize_t i = 0; i < r; i++, got++)
			order &= tmp[i] == (got < 1000 ? 'a' : 'b');
	}
	fint("read", (long)got);
	fbool("in_order", order);
}

static void peer_fionread_mixed(int fd)
{
	char buf[1000];
	memset(buf, 'a', sizeof(buf));
	write_all(fd, buf, sizeof(buf));
	const char *end;
	char in[16];
	read_to_end(fd, in, sizeof(in), &end, 3000);
	fstr("saw", end);
	memset(buf, 'b', sizeof(buf));
	write_all(fd, buf, sizeof(buf));
	read_to_end(fd, in, sizeof(in), &end, 3000);
}

static void obs_peek(int fd)
{
	char buf[64];
	ssize_t r = recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
	fstr("peek_empty", res(r, errno));
	r = o_recv(fd, buf, 5, MSG_PEEK); // blocks until the peer writes
	int e = errno;
	fstr("peek_block", r > 0 ? (buf[r] = 0, buf) : res(r, e));
	fstr("peek_block_when", bucket(since()));
	sleep_ms(50);
	r = o_recv(fd, buf, sizeof(buf) - 1, MSG_PEEK);
	fstr("peek_all", r > 0 ? (buf[r] = 0, buf) : res(r, errno));
	r = o_recv(fd, buf, sizeof(buf) - 1, 0);
	fstr("read", r > 0 ? (buf[r] = 0, buf) : res(r, errno));
	r = recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
	fstr("peek_drained", res(r, errno));
	write_str(fd, "k");
}

static void peer_peek(int fd)
{
	sleep_ms(LATE_MS);
	write_str(fd, "hello world");
	wait_byte(fd);
	fbool("acked", true);
}

#define SPLICE_BYTES (64 * 1024)
// Blocking: splice() with SO_RCVTIMEO 1.5 s (tcp_splice_read honours it),
// so bytes splice cannot see end as EAGAIN instead of a hang. Non-blocking:
// poll + SPLICE_F_NONBLOCK for 1.5 s.
static void obs_splice(int fd)
{
	int pfd[2];
	if (pipe(pfd) < 0)
		die("pipe");
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	set_timeo(fd, 1500);
	prng_seed();
	size_t total = 0;
	bool ok = true;
	const char *end = "complete";
	double deadline = now_ms() + 1500;
	while (total < SPLICE_BYTES) {
		if (nonblock && now_ms() > deadline) {
			end = "timeout";
			break;
		}
		if (nonblock) {
			struct pollfd p = { fd, POLLIN, 0 };
			poll(&p, 1, 50);
		}
		ssize_t n = splice(fd, NULL, pfd[1], NULL, SPLICE_BYTES - total, SPLICE_F_MOVE | (nonblock ? SPLICE_F_NONBLOCK : 0));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN && nonblock) {
			sleep_ms(5);
			continue;
		}
		if (n < 0) {
			end = errname(errno);
			break;
		}
		if (n == 0) {
			end = "eof";
			break;
		}
		char buf[65536];
		ssize_t m;
		size_t left = n;
		while (left && (m = read(pfd[0], buf, left < sizeof(buf) ? left : sizeof(buf))) > 0) {
			for (ssize_t i = 0; i < m; i++)
				ok &= (uint8_t)buf[i] == prng_byte();
			left -= m;
		}
		total += n;
	}
	fint("spliced", (long)total);
	fbool("bytes_exact", ok);
	fstr("end", end);
	// Whatever splice did not see: still readable with recv?
	char buf[65536];
	long after = 0;
	ssize_t r;
	while ((r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		after += r;
	fstr("recv_after", after ? res(after, 0) : res(r, errno));
	write_str(fd, "k");
}

static void peer_splice(int fd)
{
	sleep_ms(100);
	char *buf = malloc(SPLICE_BYTES);
	prng_seed();
	for (size_t i = 0; i < SPLICE_BYTES; i++)
		buf[i] = prng_byte();
	write_all(fd, buf, SPLICE_BYTES);
	free(buf);
	wait_byte(fd);
	fbool("acked", true);
}

#define SENDFILE_BYTES (256 * 1024)
static void obs_sendfile(int fd)
{
	int mfd = memfd_create("compat", 0);
	if (mfd < 0)
		die("memfd_create");
	char *buf = malloc(SENDFILE_BYTES);
	prng_seed();
	for (size_t i = 0; i < SENDFILE_BYTES; i++)
		buf[i] = prng_byte();
	if (write(mfd, buf, SENDFILE_BYTES) != SENDFILE_BYTES)
		die("write memfd");
	free(buf);
	off_t off = 0;
	long calls = 0;
	const char *end = "complete";
	while (off < SENDFILE_BYTES) {
		ssize_t n = sendfile(fd, mfd, &off, SENDFILE_BYTES - off);
		calls++;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN && nonblock) {
			struct pollfd p = { fd, POLLOUT, 0 };
			poll(&p, 1, 1000);
			continue;
		}
		if (n <= 0) {
			end = n < 0 ? errname(errno) : "zero";
			break;
		}
	}
	fint("sent", (long)off);
	fstr("end", end);
	char ack[16];
	size_t got = read_n(fd, ack, 2);
	ack[got] = 0;
	fstr("peer_verdict", ack);
}

static void peer_sendfile(int fd)
{
	char buf[65536];
	size_t got = 0;
	bool ok = true;
	prng_seed();
	while (got < SENDFILE_BYTES) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			ok &= (uint8_t)buf[i] == prng_byte();
		got += n;
	}
	fint("received", (long)got);
	fbool("bytes_exact", ok);
	write_str(fd, ok && got == SENDFILE_BYTES ? "ok" : "no");
}

static void obs_rcvlowat(int fd)
{
	int lowat = 1000;
	setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat));
	struct pollfd p = { fd, POLLIN, 0 };
	int pr = poll(&p, 1, 3000);
	double tp = since();
	fstr("poll", pr > 0 ? "readable" : pr == 0 ? "timeout" : errname(errno));
	fstr("poll_when", bucket(tp));
	fms("poll", tp);
	char buf[4096];
	ssize_t r = o_recv(fd, buf, sizeof(buf), 0);
	int e = errno;
	double tr = since();
	fstr("recv", res(r, e));
	fstr("recv_when", bucket(tr));
	fms("recv", tr);
	// Drain the rest so the peer's script can finish.
	size_t got = r > 0 ? r : 0;
	if (got < 1000)
		got += read_n(fd, buf, 1000 - got);
	fint("total", (long)got);
	write_str(fd, "k");
}

static void peer_rcvlowat(int fd)
{
	char buf[900];
	memset(buf, 'l', sizeof(buf));
	write_all(fd, buf, 100);
	sleep_ms(LATE_MS);
	write_all(fd, buf, 900);
	wait_byte(fd);
	fbool("acked", true);
}

static void obs_rdhup(int fd)
{
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.fd = fd };
	epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	char trace[1024] = "";
	size_t tl = 0;
	int rounds = 0;
	bool done = false;
	while (!done && rounds++ < 8) {
		struct epoll_event got;
		int n = epoll_wait(ep, &got, 1, 3000);
		double t = since();
		if (n <= 0) {
			tl += snprintf(trace + tl, sizeof(trace) - tl, "%stimeout", tl ? "; " : "");
			break;
		}
		char buf[256];
		ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		int e = errno;
		tl += snprintf(trace + tl, sizeof(trace) - tl, "%s%s%s%s %s read %s", tl ? "; " : "",
			       got.events & EPOLLIN ? "IN" : "", got.events & EPOLLRDHUP ? "|RDHUP" : "",
			       got.events & EPOLLHUP ? "|HUP" : "", bucket(t), res(r, e));
		if (r == 0)
			done = true;
	}
	fstr("events", trace);
	// After the peer's FIN our direction still works.
	write_str(fd, "reply");
	close(fd);
}

static void peer_rdhup(int fd)
{
	write_str(fd, "0123456789");
	sleep_ms(LATE_MS);
	shutdown(fd, SHUT_WR);
	char buf[64];
	const char *end;
	size_t got = read_to_end(fd, buf, sizeof(buf) - 1, &end, 3000);
	buf[got] = 0;
	fstr("reply", buf);
	fstr("end", end);
}

#define DUPLEX_BYTES (2 * 1024 * 1024)
static int duplex_fd;
static size_t duplex_sent;
static void *duplex_writer(void *arg)
{
	(void)arg;
	char chunk[16384];
	memset(chunk, 'd', sizeof(chunk));
	while (duplex_sent < DUPLEX_BYTES) {
		ssize_t n = send(duplex_fd, chunk, sizeof(chunk), MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN && nonblock) {
			struct pollfd p = { duplex_fd, POLLOUT, 0 };
			poll(&p, 1, 1000);
			continue;
		}
		if (n <= 0)
			break;
		duplex_sent += n;
	}
	return NULL;
}

static void obs_duplex(int fd)
{
	duplex_fd = fd;
	pthread_t th;
	pthread_create(&th, NULL, duplex_writer, NULL);
	char buf[64];
	// Blocks while the other thread writes (write-space wakeups on this
	// socket) until the peer, having read all of it, answers "done".
	ssize_t r;
	if (nonblock) {
		// An event loop has no MSG_WAITALL: it gathers the 4 bytes itself.
		size_t have = 0;
		r = 0;
		while (have < 4 && (r = o_recv(fd, buf + have, 4 - have, 0)) > 0)
			have += r;
		if (have == 4)
			r = 4;
	} else {
		r = recv(fd, buf, 4, MSG_WAITALL);
	}
	int e = errno;
	fstr("first_recv", r == 4 ? (buf[4] = 0, buf) : res(r, e));
	size_t got = r > 0 ? r : 0;
	if (got < 4)
		got += read_n(fd, buf + got, 4 - got);
	buf[got] = 0;
	fstr("eventually", buf);
	pthread_join(th, NULL);
	fint("wrote", (long)duplex_sent);
}

static void peer_duplex(int fd)
{
	char *buf = malloc(65536);
	size_t got = 0;
	while (got < DUPLEX_BYTES) {
		ssize_t n = recv(fd, buf, 65536, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			break;
		got += n;
	}
	free(buf);
	fint("received", (long)got);
	write_str(fd, "done");
}

static void obs_signal(int fd, bool restart)
{
	arm_alarm(restart);
	char buf[64];
	ssize_t r = o_recv(fd, buf, sizeof(buf) - 1, 0);
	int e = errno;
	double t = since();
	fstr("recv", r > 0 ? (buf[r] = 0, buf) : res(r, e));
	fstr("recv_when", bucket(t));
	fms("recv", t);
	fint("handler_ran", handled);
	if (r <= 0) {
		r = o_recv(fd, buf, sizeof(buf) - 1, 0);
		e = errno;
		t = since();
		fstr("second_recv", r > 0 ? (buf[r] = 0, buf) : res(r, e));
		fstr("second_recv_when", bucket(t));
	}
	write_str(fd, "k");
}

static void peer_late(int fd)
{
	sleep_ms(LATE_MS);
	write_str(fd, "late");
	wait_byte(fd);
	fbool("acked", true);
}

static void obs_rcvtimeo(int fd)
{
	set_timeo(fd, EARLY_MS);
	char buf[64];
	ssize_t r = recv(fd, buf, sizeof(buf) - 1, 0);
	int e = errno;
	double t = since();
	fstr("recv", r > 0 ? (buf[r] = 0, buf) : res(r, e));
	fstr("recv_when", bucket(t));
	fms("recv", t);
	set_timeo(fd, 3000);
	r = recv(fd, buf, sizeof(buf) - 1, 0);
	e = errno;
	t = since();
	fstr("second_recv", r > 0 ? (buf[r] = 0, buf) : res(r, e));
	fstr("second_recv_when", bucket(t));
	write_str(fd, "k");
}

static void obs_rst(int fd)
{
	sleep_ms(400); // the peer has written and reset by now
	char buf[256];
	const char *end;
	size_t got = read_to_end(fd, buf, sizeof(buf), &end, 2000);
	fint("read", (long)got);
	fstr("end", end);
	ssize_t r = send(fd, "x", 1, MSG_NOSIGNAL);
	fstr("send_after", res(r, errno));
}

static void peer_rst(int fd)
{
	char buf[100];
	memset(buf, 'r', sizeof(buf));
	write_all(fd, buf, sizeof(buf));
	sleep_ms(100);
	struct linger lg = { 1, 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	fbool("reset", true);
}

static void obs_close_unread(int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };
	poll(&p, 1, 3000);
	sleep_ms(100);
	int n = -1;
	ioctl(fd, FIONREAD, &n);
	fint("unread", n);
	close(fd); // with unread bytes: RST, not FIN
}

static void peer_close_unread(int fd)
{
	char buf[100];
	memset(buf, 'u', sizeof(buf));
	write_all(fd, buf, sizeof(buf));
	sleep_ms(500);
	const char *end;
	size_t got = read_to_end(fd, buf, sizeof(buf), &end, 1500);
	fint("read", (long)got);
	fstr("end", end);
	ssize_t r = send(fd, "more", 4, MSG_NOSIGNAL);
	fstr("send_after", res(r, errno));
}

static void obs_peer_first(int fd)
{
	char buf[64];
	ssize_t r = o_recv(fd, buf, sizeof(buf) - 1, 0); // blocks until the banner
	int e = errno;
	double t = since();
	fstr("banner", r > 0 ? (buf[r] = 0, buf) : res(r, e));
	fstr("banner_when", bucket(t));
	write_str(fd, "QUIT\r\n");
	const char *end;
	size_t got = read_to_end(fd, buf, sizeof(buf) - 1, &end, 3000);
	buf[got] = 0;
	fstr("bye", buf);
	fstr("end", end);
}

static void peer_peer_first(int fd)
{
	write_str(fd, "220 hello\r\n");
	char buf[16];
	size_t got = read_n(fd, buf, 6);
	buf[got] = 0;
	fstr("command", buf);
	write_str(fd, "221 bye\r\n");
	close(fd);
}

struct probe {
	const char *name;
	void (*obs)(int);
	void (*peer)(int);
};

static void obs_sig_restart(int fd) { obs_signal(fd, true); }
static void obs_sig_intr(int fd) { obs_signal(fd, false); }

static const struct probe probes[] = {
	{ "fionread", obs_fionread, peer_fionread },
	{ "fionread-mixed", obs_fionread_mixed, peer_fionread_mixed },
	{ "peek", obs_peek, peer_peek },
	{ "splice", obs_splice, peer_splice },
	{ "sendfile", obs_sendfile, peer_sendfile },
	{ "rcvlowat", obs_rcvlowat, peer_rcvlowat },
	{ "rdhup", obs_rdhup, peer_rdhup },
	{ "duplex", obs_duplex, peer_duplex },
	{ "signal-restart", obs_sig_restart, peer_late },
	{ "signal-intr", obs_sig_intr, peer_late },
	{ "rcvtimeo", obs_rcvtimeo, peer_late },
	{ "rst-linger0", obs_rst, peer_rst },
	{ "close-unread", obs_close_unread, peer_close_unread },
	{ "peer-first", obs_peer_first, peer_peer_first },
};

static void usage(void)
{
	fprintf(stderr, "usage: compat-probe server --port P --case C --observer client|server [--ready-file F]\n"
			"       compat-probe client --host H --port P --case C --observer client|server\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	bool server = !strcmp(argv[1], "server");
	if (!server && strcmp(argv[1], "client"))
		usage();
	const char *host = NULL, *port = NULL, *cname = NULL, *observer = NULL, *ready = NULL;
	for (int i = 2; i < argc; i += 2) {
		if (!strcmp(argv[i], "--nonblock")) {
			nonblock = true;
			i--;
			continue;
		}
		if (i + 1 >= argc) usage();
		if (!strcmp(argv[i], "--host")) host = argv[i + 1];
		else if (!strcmp(argv[i], "--port")) port = argv[i + 1];
		else if (!strcmp(argv[i], "--case")) cname = argv[i + 1];
		else if (!strcmp(argv[i], "--observer")) observer = argv[i + 1];
		else if (!strcmp(argv[i], "--ready-file")) ready = argv[i + 1];
		else usage();
	}
	if (!port || !cname || !observer || (!server && !host))
		usage();
	const struct probe *pr = NULL;
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
		if (!strcmp(probes[i].name, cname))
			pr = &probes[i];
	if (!pr) {
		fprintf(stderr, "compat-probe: unknown case %s\n", cname);
		return 2;
	}
	bool is_obs = !strcmp(observer, server ? "server" : "client");
	nonblock = nonblock && is_obs; // the peer's script always blocks
	signal(SIGPIPE, SIG_IGN);

	int fd;
	if (server) {
		int ls = socket(AF_INET6, SOCK_STREAM, 0);
		if (ls < 0)
			die("socket");
		int one = 1, zero = 0;
		setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		setsockopt(ls, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
		struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_port = htons(atoi(port)), .sin6_addr = in6addr_any };
		if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 16) < 0)
			die("bind/listen");
		if (ready) {
			FILE *f = fopen(ready, "w");
			if (f)
				fclose(f);
		}
		fd = accept4(ls, NULL, NULL, nonblock ? SOCK_NONBLOCK : 0);
		if (fd < 0)
			die("accept");
		close(ls);
	} else {
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST }, *ai;
		if (getaddrinfo(host, port, &hints, &ai))
			die("getaddrinfo");
		fd = socket(ai->ai_family, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
		if (fd < 0)
			die("socket");
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			if (errno != EINPROGRESS)
				die("connect");
			struct pollfd p = { fd, POLLOUT, 0 };
			int err = 0;
			socklen_t el = sizeof(err);
			poll(&p, 1, 5000);
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
			if (err) {
				errno = err;
				die("connect");
			}
		}
		freeaddrinfo(ai);
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	t0 = now_ms();
	fstr("role", is_obs ? "observer" : "peer");
	if (is_obs)
		fstr("fd", nonblock ? "non-blocking" : "blocking");
	if (is_obs)
		pr->obs(fd);
	else
		pr->peer(fd);
	printf("{%s}\n", out);
	fflush(stdout);
	return 0;
}
