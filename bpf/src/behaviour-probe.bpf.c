// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Behaviour probe (bpf/src/behaviour-probe.c loads it and throws it away):
 * the sk_msg program of a private sockhash, never attached to a cgroup. The
 * probe inserts both ends of each loopback connection it makes into
 * bp_socks itself (key: the socket's local port) and says in bp_peers, per
 * local port, which socket is the other end and whether its messages go
 * there (redirect != 0: bpf_msg_redirect_hash with BPF_F_INGRESS, as the
 * datapath does) or stay on TCP. bytes counts what was redirected, so the
 * probe knows a case really went through the redirect queue.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct bp_peer {
	__u32 port;     /* local port of the other end: its key in bp_socks */
	__u32 redirect; /* 0: SK_PASS (TCP), else redirect into its receive side */
	__u64 bytes;    /* bytes redirected so far */
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} bp_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct bp_peer);
} bp_peers SEC(".maps");

SEC("sk_msg")
int bp_redirect(struct sk_msg_md *msg)
{
	__u32 port = msg->local_port;
	struct bp_peer *p;
	__u32 key;

	p = bpf_map_lookup_elem(&bp_peers, &port);
	if (!p || !p->redirect)
		return SK_PASS;
	key = p->port;
	/* Not redirectable (the peer left the map): plain TCP, like the datapath. */
	if (bpf_msg_redirect_hash(msg, &bp_socks, &key, BPF_F_INGRESS) != SK_PASS)
		return SK_PASS;
	__sync_fetch_and_add(&p->bytes, msg->size);
	return SK_PASS;
}
