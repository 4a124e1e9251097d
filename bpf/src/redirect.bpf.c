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
#include "meshlane_defs.bpf.h"
#include <bpf/bpf_core_read.h>

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

static __always_inline bool may_resume(struct tcp_sock *own, __u64 peer_sk, __u32 limit)
{
	struct tcp_sock *peer = (struct tcp_sock *)peer_sk;

	if (!own || !peer || own->write_seq != own->snd_una)
		return false;
	if (BPF_CORE_READ(peer, copied_seq) != BPF_CORE_READ(peer, rcv_nxt))
		return false;
	return peer_unread(peer_sk) < limit / 2;
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

SEC("sk_msg")
int ml_redirect(struct sk_msg_md *msg)
{
	struct ml_sock_state *st;
	struct ml_config *cfg;
	__u32 size = msg->size;
	long verdict;

	ML_UPGRADE_TEST_MARK();
	if (!msg->sk)
		return SK_PASS;
	st = bpf_sk_storage_get(&ml_sock_state, msg->sk, NULL, 0);
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
	 * The peer has half-closed (we are in CLOSE_WAIT): it sits in FIN_WAIT2
	 * and our FIN will move it to TIME_WAIT, which unhashes it from the
	 * sockhash and purges its redirect queue, unread bytes included. Bytes
	 * sent over TCP survive that in its receive queue, so from here on this
	 * direction uses TCP.
	 */
	{
		struct bpf_sock *self = msg->sk;

		asm volatile("" : "+r"(self));
		if (self && self->state == BPF_TCP_CLOSE_WAIT)
			return to_tcp(st, msg, ML_C_PEER_HALF_CLOSED);
	}

	if (!st->peer) {
		/* A client learns its peer from the accept side, which ran
		 * before the client could write in every case but a race with
		 * an early first write; then this direction stays on TCP. */
		struct ml_link_value *link = bpf_map_lookup_elem(&ml_links, &st->cookie);

		if (!link)
			return to_tcp(st, msg, ML_C_PEER_MISSING);
		st->peer = link->peer;
		st->peer_sk = link->peer_sk;
		st->flags |= ML_SK_PAIRED;
		bpf_map_delete_elem(&ml_links, &st->cookie);
	}

	if (cfg->max_queued) {
		if (st->flags & ML_SK_HELD) {
			struct tcp_sock *own = own_tcp_sock(msg);

			if (!may_resume(own, st->peer_sk, queue_limit(own, cfg->max_queued))) {
				ml_count(ML_C_MSG_TCP, 1);
				ml_count(ML_C_BYTES_TCP, size);
				return SK_PASS;
			}
			st->flags &= ~ML_SK_HELD;
			ml_count(ML_C_RESUMED, 1);
		} else {
			/* The common case, a peer that keeps up, costs one load: the
			 * node's memory pressure is only read once the peer holds
			 * more than the smallest limit it could lead to. */
			__u32 unread = peer_unread(st->peer_sk);

			if (unread > cfg->max_queued / 16 &&
			    unread > queue_limit(own_tcp_sock(msg), cfg->max_queued)) {
				st->flags |= ML_SK_HELD;
				ml_count(ML_C_HELD, 1);
				ml_count(ML_C_MSG_TCP, 1);
				ml_count(ML_C_BYTES_TCP, size);
				return SK_PASS;
			}
		}
	}

	verdict = bpf_msg_redirect_hash(msg, &ml_socks, &st->peer, BPF_F_INGRESS);
	if (verdict != SK_PASS)
		/* The peer has closed and left the map: deliver over TCP,
		 * which reports the close the way the app expects. Never
		 * SK_DROP, which would fail the write. */
		return to_tcp(st, msg, ML_C_PEER_GONE);
	ml_count(ML_C_MSG_REDIRECTED, 1);
	ml_count(ML_C_BYTES_REDIRECTED, size);
	return SK_PASS;
}
