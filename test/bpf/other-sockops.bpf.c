// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Another sockops program on meshlane's cgroup, as Cilium, Calico or an RTT
 * exporter would attach one, for the coexistence tests:
 *   other_rtt    asks for RTT callbacks (keeping whatever flags are set);
 *                at each close it sees, it counts whether its flag was
 *                still set: meshlane, which sets its own flag after this
 *                program, must not have taken it away;
 *   other_clear  clears every callback flag of each established socket,
 *                the way a careless program would: meshlane must stay
 *                correct without its close callback.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* [0] RTT callbacks, [1] closes with the RTT flag still set, [2] closes without it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} other_counts SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&other_counts, &slot);

	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("sockops")
int other_rtt(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_RTT_CB_FLAG);
		break;
	case BPF_SOCK_OPS_RTT_CB:
		count(0);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			count(skops->bpf_sock_ops_cb_flags & BPF_SOCK_OPS_RTT_CB_FLAG ? 1 : 2);
		break;
	}
	return 1;
}

SEC("sockops")
int other_clear(struct bpf_sock_ops *skops)
{
	if (skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB || skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		bpf_sock_ops_cb_flags_set(skops, 0);
	return 1;
}
