// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sk_msg: hands each message of a paired socket straight to its peer's
 * receive queue (BPF_F_INGRESS), skipping the TCP/IP stack.
 *
 * Order is the invariant: a direction that has ever sent a byte over TCP is
 * never redirected again, because the reader drains the redirect queue before
 * the TCP queue and would see later bytes first. The opposite switch (redirect
 * first, TCP after) keeps order, which is what the kill switch and a missing
 * peer rely on.
 */
#include "meshlane_maps.bpf.h"
#include <bpf/bpf_core_read.h>
#include "meshlane_sock.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Flow control. A redirect queues bytes at the peer with no regard for its
 * receive buffer, so a fast writer and a slow reader could take the node's
 * TCP memory. When the peer holds more than max_queued unread bytes, the
 * direction is "held" on TCP, whose window then throttles the writer. It
 * resumes only once TCP has nothing in flight and nothing unread (own
 * write_seq == snd_una, peer copied_seq == rcv_nxt) and the peer is below
 * half the limit, so order is kept in both switches.
 *
 * The peer is read through its kernel address with bpf_probe_read_kernel
 * at CO-RE-relocated offsets (BPF_CORE_READ), which faults safely and works
 * from 5.8 on (bpf_rdonly_cast would need 6.2). What is read is never
 * trusted for anything but this heuristic: a stale address can only keep a
 * direction on TCP, never redirect bytes anywhere (redirects go by cookie
 * through the sockhash). sk_rmem_alloc counts redirected bytes only on
 * kernels with "tcp_bpf: Add sk_rmem_alloc related logic for tcp_bpf
 * ingress redirection" (6.13, 6.1.122); the worker probes that at start
 * and refuses to run flow control blind.
 */
static __always_inline __u32 peer_unread(__u64 peer_sk)
{
	struct sock *sk = (struct sock *)peer_sk;

	if (!sk)
		return 0;
	return (__u32)BPF_CORE_READ(sk, sk_backlog.rmem_alloc.counter);
}

static __always_inline struct tcp_sock *own_tcp_sock(struct sk_msg_md *msg)
{
	struct bpf_sock *self = msg->sk;

	asm volatile("" : "+r"(self));
	return self ? bpf_skc_to_tcp_sock(self) : NULL;
}

/*
 * The per-peer limit holds while the node's TCP memory is below tcp_mem's
 * first threshold; above it, where TCP itself starts to moderate buffers,
 * redirects may queue only a sixteenth as much. So a node under memory
 * pressure gets TCP's own backpressure back quickly, and an idle node lets
 * bulk transfers stay in the fast lane.
 */
static __always_inline __u32 queue_limit(struct tcp_sock *own, __u32 configured)
{
	struct proto *prot;
	long allocated = 0, low = 0;

	if (!own)
		return configured;
	prot = own->inet_conn.icsk_inet.sk.__sk_common.skc_prot;
	if (!prot)
		return configured;
	bpf_probe_read_kernel(&allocated, sizeof(allocated), &prot->memory_allocated->counter);
	bpf_probe_read_kernel(&low, sizeof(low), &prot->sysctl_mem[0]);
	if (low > 0 && allocated > low) {
		ml_count(ML_C_PRESSURE, 1);
		return configured / 16;
	}
	return configured;
}

/* TCP states in which a socket still takes in bytes from its peer. */
static __always_inline bool peer_receives(__u64 peer_sk)
{
	struct sock *sk = (struct sock *)peer_sk;
	__u8 state;

	if (!sk)
		return false;
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	return state == BPF_TCP_ESTABLISHED || state == BPF_TCP_FIN_WAIT1 || state == BPF_TCP_FIN_WAIT2;
}

/*
 * May a direction that is on TCP for now come back to redirecting? Only
 * when the switch back cannot reorder or strand a byte:
 *  - TCP has nothing in flight (own write_seq == snd_una) and the peer has
 *    read everything TCP gave it (copied_seq == rcv_nxt), so no later byte
 *    can overtake an earlier one;
 *  - the peer's reader cannot be asleep inside tcp_recvmsg: a blocking
 *    MSG_WAITALL (or SO_RCVLOWAT) reader that entered it for TCP bytes
 *    only wakes for more TCP bytes and would never see redirected ones, so
 *    only a non-blocking peer fd is resumed to;
 *  - with flow control, the peer is below half the limit.
 */
static __always_inline bool may_resume(struct tcp_sock *own, __u64 peer_sk, __u32 max_queued, __u32 limit)
{
	struct tcp_sock *peer = (struct tcp_sock *)peer_sk;

	if (!own || !peer || own->write_seq != own->snd_una)
		return false;
	if (BPF_CORE_READ(peer, copied_seq) != BPF_CORE_READ(peer, rcv_nxt))
		return false;
	if (ml_fd_nonblocking((struct sock *)peer_sk) != 1) {
		ml_count(ML_C_PEER_BLOCKING, 1);
		return false;
	}
	return !max_queued || peer_unread(peer_sk) < limit / 2;
}

static __always_inline int to_tcp(struct ml_sock_state *st, struct sk_msg_md *msg, __u32 reason)
{
	st->flags |= ML_SK_TCP;
	if (reason)
		ml_count(reason, 1);
	ml_count(ML_C_MSG_TCP, 1);
	ml_count(ML_C_BYTES_TCP, msg->size);
	return SK_PASS;
}

/* This message goes over TCP, the direction may still come back. */
static __always_inline int held_on_tcp(struct sk_msg_md *msg)
{
	ml_count(ML_C_MSG_TCP, 1);
	ml_count(ML_C_BYTES_TCP, msg->size);
	return SK_PASS;
}

/*
 * Do the endpoints that governed this hop when it was paired still allow
 * it? An opt-out, an app-sockets change, the switch for app sockets or a
 * pod replaced behind its IP (another cgroup) reach live connections
 * here, on the first message after the desired state moved.
 */
static __always_inline bool governors_allow(struct ml_sock_state *st, struct ml_config *cfg)
{
	struct ml_endpoint_value *ep;
	int i;

	for (i = 0; i < 2; i++) {
		if (!st->gov.cgroup_id[i])
			continue;
		ep = bpf_map_lookup_elem(&ml_endpoints, &st->gov.ip[i]);
		if (!ep || ep->cgroup_id != st->gov.cgroup_id[i] || !(ep->flags & ML_EP_ACCELERATE))
			return false;
		if (!(st->flags & ML_SK_APP_HOP))
			continue;
		if (!(cfg->flags & ML_CFG_APP_SOCKETS) || (ep->flags & ML_EP_APP_NEVER))
			return false;
		if (!(ep->flags & ML_EP_APP_ALWAYS)) {
			if (!(cfg->flags & ML_CFG_APP_AUTO))
				return false;
			/* Now "auto": the app end must prove non-blocking. */
			if (st->hop == ML_HOP_INBOUND ? (st->flags & ML_SK_CLIENT) : (st->flags & ML_SK_SERVER))
				st->flags |= ML_SK_PEER_AUTO;
		}
	}
	return true;
}

SEC("sk_msg")
int ml_redirect(struct sk_msg_md *msg)
{
	struct ml_sock_state *st;
	struct ml_config *cfg;
	struct bpf_sock *self;
	__u32 size = msg->size;
	long verdict;

	ML_UPGRADE_TEST_MARK();
	self = msg->sk;
	asm volatile("" : "+r"(self));
	if (!self)
		return SK_PASS;
	st = bpf_sk_storage_get(&ml_sock_state, self, NULL, 0);
	if (!st)
		return SK_PASS;
	if (st->flags & ML_SK_TCP) {
		ml_count(ML_C_MSG_TCP, 1);
		ml_count(ML_C_BYTES_TCP, size);
		return SK_PASS;
	}
	cfg = ml_cfg();
	if (!cfg || !(cfg->flags & ML_CFG_ENABLED))
		return to_tcp(st, msg, ML_C_SWITCH_OFF);

	/*
	 * Only an ESTABLISHED socket redirects. In CLOSE_WAIT the peer has
	 * half-closed and our FIN will move it to TIME_WAIT, whose bytes TCP
	 * keeps; anything else (reset, closing) must get the error TCP gives.
	 */
	if (self->state != BPF_TCP_ESTABLISHED)
		return to_tcp(st, msg, self->state == BPF_TCP_CLOSE_WAIT ? ML_C_PEER_HALF_CLOSED : ML_C_NOT_ESTABLISHED);

	if (!st->peer) {
		/* A client learns its peer from the accept side, which ran
		 * before the client could write in every case but a race with
		 * an early first write; then this direction stays on TCP. */
		struct ml_link_value *link = bpf_map_lookup_elem(&ml_links, &st->cookie);

		if (!link)
			return to_tcp(st, msg, ML_C_PEER_MISSING);
		st->peer = link->peer;
		st->peer_sk = link->peer_sk;
		st->hop = link->hop;
		st->gov = link->gov;
		st->flags |= ML_SK_PAIRED | link->flags;
		bpf_map_delete_elem(&ml_links, &st->cookie);
	}

	if (st->policy_generation != cfg->generation) {
		if (!governors_allow(st, cfg))
			return to_tcp(st, msg, ML_C_POLICY_OFF);
		st->policy_generation = cfg->generation;
	}

	/* A peer that was reset or closed takes no bytes: TCP answers with
	 * the RST the app expects instead of a redirect into a dead socket. */
	if (!peer_receives(st->peer_sk))
		return to_tcp(st, msg, ML_C_PEER_CLOSED);

	if (st->flags & ML_SK_PEER_AUTO) {
		int nb = ml_fd_nonblocking((struct sock *)st->peer_sk);

		if (nb == 0)
			/* The app reads this socket blocking: TCP from here (TCP
			 * bytes wake a blocking reader the way it expects). The
			 * socket itself leaves the sockhash from sockops (see
			 * on_rtt there): sk_msg may not delete from a sockhash. */
			return to_tcp(st, msg, ML_C_APP_BLOCKING);
		if (nb < 0 && !(st->flags & ML_SK_REDIRECTED)) {
			/* Not accept()ed yet: TCP for now, decided later. */
			st->flags |= ML_SK_HELD;
			return held_on_tcp(msg);
		}
	}

	if (st->flags & ML_SK_HELD) {
		struct tcp_sock *own = own_tcp_sock(msg);
		__u32 limit = cfg->max_queued ? queue_limit(own, cfg->max_queued) : 0;

		if (!may_resume(own, st->peer_sk, cfg->max_queued, limit))
			return held_on_tcp(msg);
		st->flags &= ~ML_SK_HELD;
		ml_count(ML_C_RESUMED, 1);
	} else if (cfg->max_queued) {
		/* The common case, a peer that keeps up, costs one load: the
		 * node's memory pressure is only read once the peer holds
		 * more than the smallest limit it could lead to. */
		__u32 unread = peer_unread(st->peer_sk);

		if (unread > cfg->max_queued / 16 &&
		    unread > queue_limit(own_tcp_sock(msg), cfg->max_queued)) {
			st->flags |= ML_SK_HELD;
			ml_count(ML_C_HELD, 1);
			return held_on_tcp(msg);
		}
	}

	verdict = bpf_msg_redirect_hash(msg, &ml_socks, &st->peer, BPF_F_INGRESS);
	if (verdict != SK_PASS)
		/* The peer has closed and left the map: deliver over TCP,
		 * which reports the close the way the app expects. Never
		 * SK_DROP, which would fail the write. */
		return to_tcp(st, msg, ML_C_PEER_GONE);
	st->flags |= ML_SK_REDIRECTED;
	ml_count(ML_C_MSG_REDIRECTED, 1);
	ml_count(ML_C_BYTES_REDIRECTED, size);
	return SK_PASS;
}
