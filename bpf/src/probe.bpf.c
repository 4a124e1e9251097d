// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Feature probe, loaded by the worker at start and thrown away: does this
 * kernel load an sk_msg program, attach it to a sockmap (bpf_link, or the
 * classic attach to the map), redirect a message into the peer's receive
 * queue, and account the redirected bytes in the peer's sk_rmem_alloc (read
 * back from user space with SO_MEMINFO)? Two sockets of a loopback
 * connection sit at index 0 and 1; every message goes to the other one.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} probe_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} probe_redirected SEC(".maps");

SEC("sk_msg")
int probe_redirect(struct sk_msg_md *msg)
{
	__u32 zero = 0;
	__u64 *n;

	/* Only the client (index 0) writes in the probe: to index 1, ingress. */
	if (bpf_msg_redirect_map(msg, &probe_socks, 1, BPF_F_INGRESS) != SK_PASS)
		return SK_PASS;
	n = bpf_map_lookup_elem(&probe_redirected, &zero);
	if (n)
		__sync_fetch_and_add(n, msg->size);
	return SK_PASS;
}
