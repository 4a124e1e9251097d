// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * behaviour-probe: what a socket in a sockhash with an sk_msg program (and
 * no verdict program, as meshlane's) shows to an application on THIS
 * kernel, where tcp_bpf_recvmsg has replaced tcp_recvmsg for it. The worker
 * runs it once at start (node-worker/src/bpf/behaviour.ts) and decides from
 * its output what may be accelerated; it prints one JSON object of raw
 * observations on stdout and the worker classifies them.
 *
 * Every case uses real TCP connections on 127.0.0.1, in a private network
 * namespace when it may make one (else the caller's), and runs the same
 * steps on a plain connection (the control: what TCP does) and on one whose
 * two sockets the probe put into its own sockhash (bp_socks, with the
 * sk_msg program of behaviour-probe.bpf.o attached to that map only; never
 * to a cgroup). Nothing is pinned: maps, program, link and sockets go with
 * the process.
 *
 * Cases:
 *   blocking recv with both queues empty, woken by (1) a signal with
 *     SA_RESTART, (2a) the other direction in use (redirected bytes written
 *     by another thread and read by the peer), (2b) write space (TCP bytes
 *     the peer reads after the send buffer filled), (3) our own shutdown
 *     (FIN_WAIT1 -> FIN_WAIT2): "blocked" (kept waiting until a byte came),
 *     "eagain", "eintr", ...
 *   FIONREAD with bytes only on TCP, only redirected, both.
 *   splice(2) from the socket: redirected bytes, and TCP bytes (control).
 *   SO_RCVLOWAT 1000 with 100 bytes queued: poll(POLLIN), blocking recv.
 *   MSG_PEEK of redirected bytes (and across both queues), MSG_WAITALL.
 *
 * Usage: behaviour-probe [--object FILE] [--netns private|own]
 *                        [--settle-ms N] [--deadline-ms N]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/sockios.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define PROBE_VERSION 1

struct bp_peer {
	__u32 port;
	__u32 redirect;
	__u64 bytes;
};

static int socks_fd = -1, peers_fd = -1;
static int settle_ms = 100;
static long long deadline_at;

/* ---- output ---- */

static char out[32768];
static size_t outn;
static int first_key = 1;

static void emit(const char *fmt, ...)
{
	va_list ap;

	if (outn >= sizeof(out) - 1)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(out + outn, sizeof(out) - outn, fmt, ap);
	va_end(ap);
	if (n > 0)
		outn = (size_t)n < sizeof(out) - outn ? outn + (size_t)n : sizeof(out) - 1;
}

/* A key of the current object: the comma before it when needed. */
static void key(const char *k)
{
	emit("%s\"%s\":", first_key ? "" : ",", k);
	first_key = 0;
}

static void open_obj(const char *k)
{
	key(k);
	emit("{");
	first_key = 1;
}

static void close_obj(void)
{
	emit("}");
	first_key = 0;
}

static void kv_str(const char *k, const char *v)
{
	key(k);
	emit("\"");
	for (const char *p = v; *p; p++) {
		if (*p == '"' || *p == '\\')
			emit("\\%c", *p);
		else if ((unsigned char)*p < 0x20)
			emit(" ");
		else
			emit("%c", *p);
	}
	emit("\"");
}

static void kv_int(const char *k, long long v)
{
	key(k);
	emit("%lld", v);
}

static void kv_bool(const char *k, int v)
{
	key(k);
	emit(v ? "true" : "false");
}

static char errors[4096];

static void note_error(const char *fmt, ...)
{
	size_t n = strlen(errors);
	va_list ap;

	if (n >= sizeof(errors) - 2)
		return;
	if (n)
		errors[n++] = ';', errors[n++] = ' ', errors[n] = 0;
	va_start(ap, fmt);
	vsnprintf(errors + n, sizeof(errors) - n, fmt, ap);
	va_end(ap);
}

/* ---- time ---- */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int over_deadline(void)
{
	return now_ms() > deadline_at;
}

/* ---- connections ---- */

struct pair {
	int a, b;          /* a: the connecting end, b: the accepted end */
	__u32 a_port, b_port;
	int inhash;
};

static __u32 local_port(int fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	if (getsockname(fd, (struct sockaddr *)&sin, &len) < 0)
		return 0;
	return ntohs(sin.sin_port);
}

static int set_peer(__u32 port, __u32 peer, int redirect)
{
	struct bp_peer v = { .port = peer, .redirect = redirect ? 1 : 0, .bytes = 0 };

	return bpf_map_update_elem(peers_fd, &port, &v, BPF_ANY);
}

/* Turns the redirect of the messages sent on one end on or off (its byte count stays). */
static int set_redirect(__u32 port, int on)
{
	struct bp_peer v;

	if (bpf_map_lookup_elem(peers_fd, &port, &v) < 0)
		return -1;
	v.redirect = on ? 1 : 0;
	return bpf_map_update_elem(peers_fd, &port, &v, BPF_EXIST);
}

static long long redirected(__u32 port)
{
	struct bp_peer v;

	if (bpf_map_lookup_elem(peers_fd, &port, &v) < 0)
		return -1;
	return (long long)v.bytes;
}

/*
 * A connected pair on 127.0.0.1; inhash: both ends in bp_socks, each
 * redirecting to the other. small: 4 KiB buffers (a send buffer fills soon).
 */
static int make_pair(struct pair *p, int inhash, int small)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	int lfd, one = 1, buf = 4096;

	memset(p, 0, sizeof(*p));
	p->a = p->b = -1;
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (small)
		setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sin, &len) < 0)
		goto fail;
	p->a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->a < 0)
		goto fail;
	if (small) {
		setsockopt(p->a, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
		setsockopt(p->a, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	}
	if (connect(p->a, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		goto fail;
	p->b = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (p->b < 0)
		goto fail;
	close(lfd);
	lfd = -1;
	p->a_port = local_port(p->a);
	p->b_port = local_port(p->b);
	if (inhash) {
		__u64 fa = (__u64)p->a, fb = (__u64)p->b;

		if (set_peer(p->a_port, p->b_port, 1) < 0 || set_peer(p->b_port, p->a_port, 1) < 0) {
			note_error("bp_peers update: %s", strerror(errno));
			goto fail;
		}
		if (bpf_map_update_elem(socks_fd, &p->a_port, &fa, BPF_ANY) < 0 ||
		    bpf_map_update_elem(socks_fd, &p->b_port, &fb, BPF_ANY) < 0) {
			/* EBUSY: another sk_msg program already owns the socket (a cgroup's sockops put it in its map). */
			note_error("adding a socket to the probe sockhash: %s", strerror(errno));
			goto fail;
		}
		p->inhash = 1;
	}
	return 0;
fail:
	if (lfd >= 0)
		close(lfd);
	if (p->a >= 0)
		close(p->a);
	if (p->b >= 0)
		close(p->b);
	p->a = p->b = -1;
	return -1;
}

static void close_pair(struct pair *p)
{
	if (p->inhash) {
		bpf_map_delete_elem(socks_fd, &p->a_port);
		bpf_map_delete_elem(socks_fd, &p->b_port);
		bpf_map_delete_elem(peers_fd, &p->a_port);
		bpf_map_delete_elem(peers_fd, &p->b_port);
	}
	if (p->a >= 0)
		close(p->a);
	if (p->b >= 0)
		close(p->b);
	p->a = p->b = -1;
}

static ssize_t send_fill(int fd, char c, size_t n)
{
	char buf[4096];
	size_t done = 0;

	memset(buf, c, sizeof(buf));
	while (done < n) {
		size_t chunk = n - done < sizeof(buf) ? n - done : sizeof(buf);
		ssize_t r = send(fd, buf, chunk, MSG_NOSIGNAL);

		if (r < 0)
			return done ? (ssize_t)done : -errno;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

/* Reads what is there without waiting, until nothing came for quiet_ms. */
static long long drain(int fd, int quiet_ms, int max_ms)
{
	char buf[65536];
	long long total = 0, start = now_ms(), last = start;

	while (now_ms() - start < max_ms) {
		ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (r > 0) {
			total += r;
			last = now_ms();
			continue;
		}
		if (r == 0 || (errno != EAGAIN && errno != EINTR))
			break;
		if (now_ms() - last >= quiet_ms)
			break;
		sleep_ms(1);
	}
	return total;
}

static int fionread(int fd)
{
	int n = -1;

	if (ioctl(fd, FIONREAD, &n) < 0)
		return -errno;
	return n;
}

/* ---- a thread blocked in recv ---- */

struct reader {
	pthread_t th;
	int fd, flags;
	size_t len;
	atomic_int state; /* 0: not started, 1: about to recv, 2: returned */
	atomic_int tid;
	ssize_t ret;
	int err;
	char buf[4096];
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;

	atomic_store(&r->tid, (int)syscall(SYS_gettid));
	atomic_store(&r->state, 1);
	r->ret = recv(r->fd, r->buf, r->len, r->flags);
	r->err = errno;
	atomic_store(&r->state, 2);
	return NULL;
}

/* Heap, never freed while its thread may still be blocked (the process exit ends it). */
static struct reader *reader_start(int fd, size_t len, int flags)
{
	struct reader *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->fd = fd;
	r->len = len < sizeof(r->buf) ? len : sizeof(r->buf);
	r->flags = flags;
	if (pthread_create(&r->th, NULL, reader_main, r) != 0) {
		free(r);
		return NULL;
	}
	return r;
}

static int task_sleeping(int tid)
{
	char path[64], buf[512];
	ssize_t n;
	int fd;
	char *p;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'S';
}

/* Until the thread sleeps in recv (or returned): 1 if it is blocked. */
static int reader_wait_blocked(struct reader *r, int max_ms)
{
	long long end = now_ms() + max_ms;

	while (now_ms() < end) {
		int st = atomic_load(&r->state);

		if (st == 2)
			return 0;
		if (st == 1 && task_sleeping(atomic_load(&r->tid))) {
			sleep_ms(5);
			return atomic_load(&r->state) == 1;
		}
		sleep_ms(1);
	}
	return 0;
}

static int reader_done(struct reader *r)
{
	return atomic_load(&r->state) == 2;
}

static int reader_wait_done(struct reader *r, int max_ms)
{
	long long end = now_ms() + max_ms;

	while (!reader_done(r) && now_ms() < end)
		sleep_ms(1);
	if (reader_done(r)) {
		pthread_join(r->th, NULL);
		return 1;
	}
	return 0;
}

static const char *errno_word(int e, char *buf, size_t len)
{
	switch (e) {
	case EAGAIN: return "eagain";
	case EINTR: return "eintr";
	case ECONNRESET: return "econnreset";
	case ENOTCONN: return "enotconn";
	case EPIPE: return "epipe";
	default:
		snprintf(buf, len, "errno:%d", e);
		return buf;
	}
}

/*
 * What the blocked recv did: "blocked" (returned the byte sent to end it:
 * it kept waiting through the wakeup, as TCP does), or how it returned
 * before that byte came ("eagain", "eintr", "eof", "data"), or "stuck".
 */
static void reader_outcome(struct reader *r, int early, char *buf, size_t len)
{
	char e[32];

	if (!reader_done(r))
		snprintf(buf, len, "stuck");
	else if (!early && r->ret > 0)
		snprintf(buf, len, "blocked");
	else if (r->ret == 0)
		snprintf(buf, len, "%seof", early ? "" : "late-");
	else if (r->ret > 0)
		snprintf(buf, len, "data");
	else
		snprintf(buf, len, "%s%s", early ? "" : "late-", errno_word(r->err, e, sizeof(e)));
}

static void on_signal(int sig)
{
	(void)sig;
}

enum wake { WAKE_SIGNAL, WAKE_DUPLEX_REDIRECTED, WAKE_WRITE_SPACE, WAKE_FIN_WAIT };

static void trigger(enum wake how, struct pair *p, struct reader *r)
{
	switch (how) {
	case WAKE_SIGNAL:
		pthread_kill(r->th, SIGUSR1);
		break;
	case WAKE_DUPLEX_REDIRECTED:
		/* The other direction of a full-duplex connection: a writes (redirected to b), b reads. */
		for (int i = 0; i < 4; i++) {
			ssize_t n = send_fill(p->a, 'd', 16384);

			if (n > 0)
				drain(p->b, 5, 200);
		}
		break;
	case WAKE_WRITE_SPACE:
		/* a's send buffer full (SOCK_NOSPACE), then b reads: ACKs free it, write space wakes a. */
		if (p->inhash)
			set_redirect(p->a_port, 0);
		{
			char buf[4096];
			long long total = 0;

			memset(buf, 'w', sizeof(buf));
			while (total < (64LL << 20)) {
				ssize_t n = send(p->a, buf, sizeof(buf), MSG_DONTWAIT | MSG_NOSIGNAL);

				if (n <= 0)
					break;
				total += n;
			}
			drain(p->b, 20, 500);
		}
		if (p->inhash)
			set_redirect(p->a_port, 1);
		break;
	case WAKE_FIN_WAIT:
		shutdown(p->a, SHUT_WR);
		break;
	}
}

/*
 * One wakeup, on a plain connection and on one in the sockhash at once: a
 * thread blocks in recv on a (nothing queued), the wakeup happens, and
 * after settle_ms b sends one byte to end any recv still waiting.
 */
static void blocking_case(const char *name, enum wake how)
{
	struct pair p[2];
	struct reader *r[2] = { NULL, NULL };
	int early[2] = { 0, 0 }, blocked[2] = { 0, 0 };
	char o[2][48];

	open_obj(name);
	if (over_deadline()) {
		kv_str("skipped", "deadline");
		close_obj();
		return;
	}
	for (int i = 0; i < 2; i++) {
		if (make_pair(&p[i], i, how == WAKE_WRITE_SPACE) < 0) {
			kv_str("error", "cannot make a loopback pair");
			if (i)
				close_pair(&p[0]);
			close_obj();
			return;
		}
	}
	for (int i = 0; i < 2; i++)
		r[i] = reader_start(p[i].a, 64, 0);
	for (int i = 0; i < 2; i++)
		blocked[i] = r[i] && reader_wait_blocked(r[i], 1000);
	for (int i = 0; i < 2; i++)
		if (r[i] && blocked[i])
			trigger(how, &p[i], r[i]);
	{
		long long end = now_ms() + settle_ms;

		while (now_ms() < end && !((!r[0] || reader_done(r[0])) && (!r[1] || reader_done(r[1]))))
			sleep_ms(1);
	}
	for (int i = 0; i < 2; i++) {
		if (!r[i])
			continue;
		early[i] = reader_done(r[i]);
		if (!early[i])
			send(p[i].b, "!", 1, MSG_NOSIGNAL);
	}
	for (int i = 0; i < 2; i++) {
		if (!r[i]) {
			snprintf(o[i], sizeof(o[i]), "no-thread");
			continue;
		}
		reader_wait_done(r[i], 500);
		if (!blocked[i] && early[i])
			snprintf(o[i], sizeof(o[i]), "did-not-block");
		else
			reader_outcome(r[i], early[i], o[i], sizeof(o[i]));
	}
	kv_str("plain", o[0]);
	kv_str("sockhash", o[1]);
	if (how == WAKE_DUPLEX_REDIRECTED)
		kv_int("redirected", redirected(p[1].a_port));
	close_obj();
	for (int i = 0; i < 2; i++)
		if (!r[i] || reader_done(r[i])) {
			close_pair(&p[i]);
			free(r[i]);
		}
}

/* ---- non-blocking cases ---- */

static void fionread_case(void)
{
	struct pair p;

	open_obj("fionread");
	/* control: plain TCP */
	if (make_pair(&p, 0, 0) == 0) {
		send_fill(p.a, 'T', 1000);
		sleep_ms(10);
		kv_int("plain", fionread(p.b));
		close_pair(&p);
	}
	if (make_pair(&p, 1, 0) == 0) {
		set_redirect(p.a_port, 0);
		send_fill(p.a, 'T', 1000);
		sleep_ms(10);
		kv_int("tcpOnly", fionread(p.b));
		kv_int("tcpOnlyRedirected", redirected(p.a_port));
		close_pair(&p);
	}
	if (make_pair(&p, 1, 0) == 0) {
		send_fill(p.a, 'R', 1000);
		sleep_ms(10);
		kv_int("redirectedOnly", fionread(p.b));
		kv_int("redirectedOnlyRedirected", redirected(p.a_port));
		close_pair(&p);
	}
	if (make_pair(&p, 1, 0) == 0) {
		char c = 0;

		set_redirect(p.a_port, 0);
		send_fill(p.a, 'T', 1000);
		sleep_ms(10);
		set_redirect(p.a_port, 1);
		send_fill(p.a, 'R', 500);
		sleep_ms(10);
		kv_int("both", fionread(p.b));
		kv_int("bothRedirected", redirected(p.a_port));
		/* Which queue a read takes first (TCP bytes were sent first). */
		if (recv(p.b, &c, 1, MSG_DONTWAIT) == 1)
			kv_str("bothFirstRead", c == 'T' ? "tcp" : c == 'R' ? "redirected" : "other");
		close_pair(&p);
	}
	close_obj();
}

static long long splice_from(int fd)
{
	int pfd[2];
	ssize_t n;

	if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	n = splice(fd, NULL, pfd[1], NULL, 65536, SPLICE_F_NONBLOCK);
	if (n < 0)
		n = -errno;
	close(pfd[0]);
	close(pfd[1]);
	return n;
}

static void splice_case(void)
{
	struct pair p;

	open_obj("splice");
	if (make_pair(&p, 1, 0) == 0) {
		set_redirect(p.a_port, 0);
		send_fill(p.a, 'T', 1000);
		sleep_ms(10);
		kv_int("tcp", splice_from(p.b));
		close_pair(&p);
	}
	if (make_pair(&p, 1, 0) == 0) {
		send_fill(p.a, 'R', 1000);
		sleep_ms(10);
		kv_int("redirected", splice_from(p.b));
		kv_int("redirectedRedirected", redirected(p.a_port));
		close_pair(&p);
	}
	close_obj();
}

/*
 * 100 bytes queued, a blocking recv(len) with flags in a thread; when it
 * blocks, 1000 more. Returns what the recv returned (1100: it waited for
 * the rest; 100: it returned what was there), or -errno, or -1000 (stuck).
 */
static long long short_then_more(struct pair *p, size_t len, int flags, int lowat)
{
	struct reader *r;
	long long ret;

	if (lowat)
		setsockopt(p->b, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat));
	send_fill(p->a, 'x', 100);
	sleep_ms(10);
	r = reader_start(p->b, len, flags);
	if (!r)
		return -ENOMEM;
	if (reader_wait_blocked(r, 500))
		send_fill(p->a, 'y', 1000);
	if (!reader_wait_done(r, 500)) {
		send_fill(p->a, 'z', 4096); /* release it, then leave it */
		if (!reader_wait_done(r, 200))
			return -1000;
	}
	ret = r->ret < 0 ? -r->err : r->ret;
	free(r);
	return ret;
}

static void rcvlowat_case(void)
{
	struct pair p;
	const char *names[2] = { "plain", "sockhash" };

	open_obj("rcvlowat");
	for (int i = 0; i < 2; i++) {
		int lowat = 1000;
		struct pollfd pfd;

		if (make_pair(&p, i, 0) < 0)
			continue;
		setsockopt(p.b, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat));
		send_fill(p.a, 'x', 100);
		sleep_ms(10);
		pfd.fd = p.b;
		pfd.events = POLLIN;
		pfd.revents = 0;
		open_obj(names[i]);
		kv_bool("pollReadable", poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN));
		/* drain the 100, then the blocking case on the same socket */
		drain(p.b, 2, 50);
		kv_int("recv", short_then_more(&p, 2000, 0, 0));
		close_obj();
		close_pair(&p);
	}
	close_obj();
}

static void waitall_case(void)
{
	struct pair p;
	const char *names[2] = { "plain", "sockhash" };

	open_obj("waitall");
	for (int i = 0; i < 2; i++) {
		if (make_pair(&p, i, 0) < 0)
			continue;
		kv_int(names[i], short_then_more(&p, 1100, MSG_WAITALL, 0));
		close_pair(&p);
	}
	close_obj();
}

static void peek_case(void)
{
	struct pair p;
	const char *names[2] = { "plain", "sockhash" };

	open_obj("peek");
	for (int i = 0; i < 2; i++) {
		char b1[512], b2[512];
		ssize_t n1, n2;

		if (make_pair(&p, i, 0) < 0)
			continue;
		send_fill(p.a, 'P', 100);
		sleep_ms(10);
		n1 = recv(p.b, b1, sizeof(b1), MSG_PEEK | MSG_DONTWAIT);
		if (n1 < 0)
			n1 = -errno;
		n2 = recv(p.b, b2, sizeof(b2), MSG_DONTWAIT);
		if (n2 < 0)
			n2 = -errno;
		open_obj(names[i]);
		kv_int("peeked", n1);
		kv_int("read", n2);
		kv_bool("same", n1 > 0 && n1 == n2 && memcmp(b1, b2, (size_t)n1) == 0);
		close_obj();
		close_pair(&p);
	}
	/* Across both queues: 100 TCP bytes, then 100 redirected. */
	if (make_pair(&p, 1, 0) == 0) {
		char b[512];
		ssize_t n;

		set_redirect(p.a_port, 0);
		send_fill(p.a, 'T', 100);
		sleep_ms(10);
		set_redirect(p.a_port, 1);
		send_fill(p.a, 'R', 100);
		sleep_ms(10);
		n = recv(p.b, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT);
		open_obj("both");
		kv_int("peeked", n < 0 ? -errno : n);
		if (n > 0)
			kv_str("peekedFirst", b[0] == 'T' ? "tcp" : "redirected");
		kv_int("thenRead", drain(p.b, 5, 100));
		close_obj();
		close_pair(&p);
	}
	close_obj();
}

/* ---- setup ---- */

static const char *private_netns(char *err, size_t len)
{
	struct ifreq ifr;
	int s;

	if (unshare(CLONE_NEWNET) < 0) {
		snprintf(err, len, "unshare(CLONE_NEWNET): %s", strerror(errno));
		return "own";
	}
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	memset(&ifr, 0, sizeof(ifr));
	strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0 || (ifr.ifr_flags |= IFF_UP, ioctl(s, SIOCSIFFLAGS, &ifr) < 0)) {
		snprintf(err, len, "lo up in the private netns: %s", strerror(errno));
		if (s >= 0)
			close(s);
		return "private-no-lo";
	}
	close(s);
	return "private";
}

static int quiet_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static void default_object(char *buf, size_t len)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (n <= 0) {
		snprintf(buf, len, "behaviour-probe.bpf.o");
		return;
	}
	exe[n] = 0;
	slash = strrchr(exe, '/');
	if (slash)
		*slash = 0;
	if (strlen(exe) + sizeof("/behaviour-probe.bpf.o") > len) {
		snprintf(buf, len, "behaviour-probe.bpf.o");
		return;
	}
	strcpy(buf, exe);
	strcat(buf, "/behaviour-probe.bpf.o");
}

int main(int argc, char **argv)
{
	char object[PATH_MAX], nserr[256] = "";
	const char *netns_mode = "private", *netns = "own";
	struct bpf_object *obj = NULL;
	struct bpf_program *prog;
	struct bpf_map *m;
	struct utsname uts;
	struct sigaction sa;
	int deadline_ms = 2500, prog_fd, link_fd = -1;
	const char *attach = "none";

	default_object(object, sizeof(object));
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--object") && i + 1 < argc)
			snprintf(object, sizeof(object), "%s", argv[++i]);
		else if (!strcmp(argv[i], "--netns") && i + 1 < argc)
			netns_mode = argv[++i];
		else if (!strcmp(argv[i], "--settle-ms") && i + 1 < argc)
			settle_ms = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--deadline-ms") && i + 1 < argc)
			deadline_ms = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: %s [--object FILE] [--netns private|own] [--settle-ms N] [--deadline-ms N]\n", argv[0]);
			return 2;
		}
	}
	if (settle_ms < 10)
		settle_ms = 10;
	deadline_at = now_ms() + deadline_ms;
	/* A hard stop well after the deadline: never outlive the caller's patience. */
	alarm((unsigned)(deadline_ms / 1000 + 3));
	signal(SIGPIPE, SIG_IGN);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);

	uname(&uts);
	emit("{");
	first_key = 1;
	kv_int("version", PROBE_VERSION);
	kv_str("kernel", uts.release);
	if (!strcmp(netns_mode, "private"))
		netns = private_netns(nserr, sizeof(nserr));
	kv_str("netns", netns);
	if (nserr[0])
		kv_str("netnsError", nserr);
	if (!strcmp(netns, "private-no-lo")) {
		kv_str("error", nserr);
		goto done;
	}

	libbpf_set_print(quiet_print);
	obj = bpf_object__open_file(object, NULL);
	if (!obj) {
		char e[PATH_MAX + 64];

		snprintf(e, sizeof(e), "open %s: %s", object, strerror(errno));
		kv_str("error", e);
		goto done;
	}
	if (bpf_object__load(obj)) {
		kv_str("error", "loading behaviour-probe.bpf.o failed (see stderr)");
		goto done;
	}
	prog = bpf_object__find_program_by_name(obj, "bp_redirect");
	m = bpf_object__find_map_by_name(obj, "bp_socks");
	socks_fd = m ? bpf_map__fd(m) : -1;
	m = bpf_object__find_map_by_name(obj, "bp_peers");
	peers_fd = m ? bpf_map__fd(m) : -1;
	if (!prog || socks_fd < 0 || peers_fd < 0) {
		kv_str("error", "behaviour-probe.bpf.o lacks bp_redirect, bp_socks or bp_peers");
		goto done;
	}
	prog_fd = bpf_program__fd(prog);
	/* Attached to the probe's own sockhash only; both go with this process. */
	link_fd = bpf_link_create(prog_fd, socks_fd, BPF_SK_MSG_VERDICT, NULL);
	if (link_fd >= 0)
		attach = "link";
	else if (bpf_prog_attach(prog_fd, socks_fd, BPF_SK_MSG_VERDICT, 0) == 0)
		attach = "map";
	kv_str("attach", attach);
	if (!strcmp(attach, "none")) {
		kv_str("error", "cannot attach the sk_msg program to the probe sockhash");
		goto done;
	}

	open_obj("blockingRecv");
	blocking_case("signal", WAKE_SIGNAL);
	blocking_case("duplexRedirected", WAKE_DUPLEX_REDIRECTED);
	blocking_case("writeSpace", WAKE_WRITE_SPACE);
	blocking_case("finWait", WAKE_FIN_WAIT);
	close_obj();
	if (!over_deadline())
		fionread_case();
	if (!over_deadline())
		splice_case();
	if (!over_deadline())
		rcvlowat_case();
	if (!over_deadline())
		waitall_case();
	if (!over_deadline())
		peek_case();
	kv_bool("deadlineHit", over_deadline());

done:
	if (errors[0])
		kv_str("errors", errors);
	emit("}\n");
	fwrite(out, 1, outn, stdout);
	fflush(stdout);
	/* Readers still blocked (stuck cases) end with the process. */
	if (link_fd >= 0)
		close(link_fd);
	_exit(0);
}
