/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map definitions shared by every meshlane BPF object. Each object declares
 * all of them; the worker pins them under /sys/fs/bpf/meshlane/<node>/maps and
 * every object after the first re-uses the pinned ones, so the sockops and
 * sk_msg programs see one set of maps. max_entries here are defaults: the
 * worker sizes them from the node's pod capacity before load.
 */
#ifndef MESHLANE_MAPS_BPF_H
#define MESHLANE_MAPS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshlane_layout.h"

#define AF_INET  2
#define AF_INET6 10

/*
 * The upgrade tests need a second build whose programs behave the same but
 * are different code (another kernel program tag): `make upgrade-test`
 * builds out/upgrade-test/ with this adding zero to a counter. Empty in the
 * real objects.
 */
#ifdef ML_UPGRADE_TEST
#define ML_UPGRADE_TEST_MARK() ml_count(ML_C_CLOSED, 0)
#else
#define ML_UPGRADE_TEST_MARK() do { } while (0)
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct ml_endpoint_key);
	__type(value, struct ml_endpoint_value);
} ml_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ml_port_key);
	__type(value, struct ml_port_value);
} ml_port_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ml_cidr_key);
	__type(value, struct ml_cidr_value);
} ml_cidr_exclude SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ml_cidr_key);
	__type(value, struct ml_cidr_value);
} ml_cidr_include SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ml_config);
} ml_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ML_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ml_counters SEC(".maps");

/* LRU: a client whose peer never shows up (it dialled a remote node) must
 * not pin an entry forever; close also deletes it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ml_pending_key);
	__type(value, struct ml_pending_value);
} ml_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct ml_link_value);
} ml_links SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 131072);
	__type(key, __u64);
	__type(value, __u64);
} ml_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ml_sock_state);
} ml_sock_state SEC(".maps");

static __always_inline void ml_count(__u32 slot, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&ml_counters, &slot);

	/*
	 * Atomic even on a per-CPU slot: sk_msg runs in process context with
	 * only migration disabled, and sockops (softirq) can interrupt it on
	 * the same CPU between the load and the store of a plain `+=`; lost
	 * increments were measured that way on 6.18.
	 */
	if (v)
		__sync_fetch_and_add(v, n);
}

static __always_inline struct ml_config *ml_cfg(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&ml_config, &zero);
}

#endif /* MESHLANE_MAPS_BPF_H */
