/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every key and value shared between the BPF programs and user space.
 *
 * Must be in sync with node-worker/src/bpf/layout.ts: a test compares the
 * sizes and offsets there with the BTF of the compiled objects. Bump
 * ML_LAYOUT_VERSION whenever a layout changes, so that a worker never
 * re-adopts pinned maps of an older layout.
 */
#ifndef MESHLANE_LAYOUT_H
#define MESHLANE_LAYOUT_H

#define ML_LAYOUT_VERSION 3

/* Every address is 16 bytes; IPv4 is stored v4-mapped (::ffff:a.b.c.d), the
 * same form the kernel shows for v4 traffic on dual-stack sockets, so one key
 * type serves both families. Words are in network byte order. */
struct ml_addr {
	__u32 w[4];
};

/* endpoints: local mesh endpoints of this node, keyed by pod IP. */
struct ml_endpoint_key {
	struct ml_addr ip;
};

#define ML_EP_ACCELERATE        (1U << 0) /* not opted out, sidecar synced */
#define ML_EP_INBOUND_ALL_PORTS (1U << 1) /* includeInboundPorts="*" */
#define ML_EP_OUTBOUND_ALL_IPS  (1U << 2) /* includeOutboundIPRanges="*" */
#define ML_EP_APP_ALWAYS        (1U << 3) /* app-sockets "true": every app socket may join */
#define ML_EP_APP_NEVER         (1U << 4) /* app-sockets "false"; neither bit: auto */

/*
 * An entry names its pod twice: by the IP it is keyed by, and by the pod's
 * own cgroup (kubelet's pod<uid>), which no other pod can ever have. A
 * socket is governed by an entry only when it lives in that cgroup, so an
 * IP inherited by a new pod while the worker or the bus is down is never
 * governed by the old pod's entry.
 */
struct ml_endpoint_value {
	__u64 cgroup_id;     /* the pod cgroup's id; 0: not found, nothing joins */
	__u32 cgroup_level;  /* its depth in the cgroup v2 hierarchy */
	__u32 endpoint_id;   /* opaque to the kernel; names the pod in dumps */
	__u32 proxy_uid;     /* istio-proxy runAsUser, 1337 by default */
	__u32 flags;         /* ML_EP_* */
	__u16 outbound_port; /* Envoy's outbound capture port, 15001 */
	__u16 inbound_port;  /* Envoy's inbound capture port, 15006 */
	__u32 pad;
};

/* port_rules: per-endpoint port exceptions to capture. */
#define ML_DIR_INBOUND  1
#define ML_DIR_OUTBOUND 2
#define ML_PORT_EXCLUDE 1 /* never accelerate this port */
#define ML_PORT_INCLUDE 2 /* capture only listed ports when *_ALL_* is unset */

struct ml_port_key {
	struct ml_addr ip;
	__u16 port;
	__u8 direction; /* ML_DIR_* */
	__u8 pad;
};

struct ml_port_value {
	__u32 action; /* ML_PORT_* */
};

/* cidr_exclude / cidr_include: LPM tries of outbound destination ranges per
 * endpoint. prefixlen counts the 128 bits of the pod address first, so one
 * trie holds every pod's ranges. */
struct ml_cidr_key {
	__u32 prefixlen;
	struct ml_addr pod;
	struct ml_addr dst;
};

struct ml_cidr_value {
	__u32 action; /* 1: present */
};

/* config: a one-slot array of node-wide switches. */
#define ML_CFG_ENABLED     (1U << 0) /* global kill switch: clear = no new pairs */
#define ML_CFG_APP_SOCKETS (1U << 1) /* master switch for every app socket */
#define ML_CFG_APP_AUTO    (1U << 2) /* this kernel lets "auto" join non-blocking app sockets */

struct ml_config {
	__u32 flags;          /* ML_CFG_* */
	__u32 layout_version; /* ML_LAYOUT_VERSION of the writer */
	__u32 max_queued;     /* bytes a redirect may queue unread at a peer */
	__u32 pad;
	__u64 generation;     /* desired-state generation last applied */
};

/* pending: a client socket waiting for its accepted peer. Keyed by the two
 * initial sequence numbers (as snd_nxt/rcv_nxt right after the handshake),
 * which iptables REDIRECT leaves untouched, unlike addresses and ports. */
struct ml_pending_key {
	__u32 client_nxt; /* client ISN + 1 */
	__u32 server_nxt; /* server ISN + 1 */
};

struct ml_pending_value {
	__u64 cookie;     /* client socket cookie */
	__u64 netns;      /* client netns cookie */
	struct ml_addr local;
	struct ml_addr remote; /* the address the client dialled */
	__u16 local_port;
	__u16 remote_port;
	__u32 uid;        /* client socket owner */
	__u64 sk;         /* client struct sock address, for backpressure reads */
};

/*
 * The endpoints whose policy governs a hop, as they were when it was
 * paired: an opt-out, an app-sockets change or a pod replaced behind its IP
 * must reach connections already established, so each sender re-checks
 * them whenever the desired-state generation moves.
 */
struct ml_governors {
	struct ml_addr ip[2];   /* [1] all zero when one endpoint governs */
	__u64 cgroup_id[2];
};

/* links: client cookie -> server cookie, handed to the client's sk_msg. */
struct ml_link_value {
	__u64 peer;
	__u64 peer_sk; /* struct sock address of the peer */
	__u32 hop;     /* ML_HOP_* */
	__u32 flags;   /* ML_SK_* bits the client takes over (ML_SK_PEER_AUTO...) */
	struct ml_governors gov;
};

/* Per-socket state in socket-local storage: freed with the socket. */
#define ML_SK_CLIENT  (1U << 0)
#define ML_SK_SERVER  (1U << 1)
#define ML_SK_TCP     (1U << 2) /* this direction has used TCP: never redirect again */
#define ML_SK_PAIRED  (1U << 3)
#define ML_SK_HELD    (1U << 4) /* on TCP for now (peer behind, or not yet proven safe); may resume */
#define ML_SK_PEER_AUTO (1U << 5) /* the peer is an app socket joined by "auto": its fd must stay non-blocking */
#define ML_SK_REDIRECTED (1U << 6) /* this direction has redirected a byte: the peer may hold some */
#define ML_SK_APP_HOP (1U << 7) /* the hop ends in an app socket (outbound, inbound) */
#define ML_SK_PEER_CHECKED (1U << 8) /* the "auto" peer's fd was judged (kept or evicted) */

#define ML_HOP_NONE     0
#define ML_HOP_OUTBOUND 1 /* app -> own sidecar (15001) */
#define ML_HOP_MESH     2 /* Envoy -> Envoy (15006) */
#define ML_HOP_INBOUND  3 /* sidecar -> app */

struct ml_sock_state {
	__u64 cookie;
	__u64 peer;
	__u64 peer_sk; /* read-only, never trusted: see redirect.bpf.c */
	__u64 policy_generation; /* config generation the governors were last checked at */
	struct ml_pending_key pending;
	__u32 flags; /* ML_SK_* */
	__u32 hop;   /* ML_HOP_* */
	struct ml_governors gov;
};

/* counters: per-CPU u64 array, one slot per decision. The order is part of
 * the layout: node-worker/src/bpf/layout.ts names them in this order. */
enum ml_counter {
	ML_C_ESTABLISHED = 0,    /* established callbacks seen */
	ML_C_NOT_ENDPOINT,       /* client with no local mesh endpoint at either end */
	ML_C_NOT_CANDIDATE,      /* endpoint, but no hop shape can start here */
	ML_C_SWITCH_OFF,         /* global switch off */
	ML_C_OPTED_OUT,          /* endpoint not accelerated (opt-out, not synced) */
	ML_C_APP_SOCKETS_OFF,    /* hop ends in an app socket and those are off */
	ML_C_CANDIDATE,          /* client recorded, waiting for its peer */
	ML_C_MAP_FULL,           /* an insert failed: map full or no memory */
	ML_C_AMBIGUOUS,          /* two clients with one key: neither is paired */
	ML_C_NO_CLIENT,          /* accepted socket with no recorded client */
	ML_C_PAIRED_OUTBOUND,
	ML_C_PAIRED_MESH,
	ML_C_PAIRED_INBOUND,
	ML_C_REFUSED_PORT,       /* excluded or not included port */
	ML_C_REFUSED_CIDR,       /* excluded or not included destination */
	ML_C_REFUSED_SHAPE,      /* fits no hop (app -> app, wrong uid, wrong port) */
	ML_C_REFUSED_TUPLE,      /* addresses do not confirm the pairing */
	ML_C_MSG_REDIRECTED,
	ML_C_BYTES_REDIRECTED,
	ML_C_MSG_TCP,            /* messages of sockets in the map sent over TCP */
	ML_C_BYTES_TCP,
	ML_C_PEER_MISSING,       /* sender had no peer at its first message */
	ML_C_PEER_GONE,          /* redirect failed: the peer left the map */
	ML_C_PEER_HALF_CLOSED,   /* peer shut down its write side: TCP from here */
	ML_C_HELD,               /* a direction moved to TCP: peer too far behind */
	ML_C_RESUMED,            /* a held direction went back to redirect */
	ML_C_PRESSURE,           /* node TCP memory above tcp_mem[0]: limit cut to 1/16 */
	ML_C_CLOSED,             /* map sockets closed */
	ML_C_NOT_POD,            /* a pod's address, but the socket is not in that pod's cgroup */
	ML_C_APP_BLOCKING,       /* "auto" app socket kept on TCP: its fd is blocking */
	ML_C_APP_PROBATION,      /* "auto" accepted app socket: TCP until its fd proves non-blocking */
	ML_C_EVICTED,            /* a socket that never got a redirected byte left the sockhash */
	ML_C_RECONNECTED,        /* connect() again after connect(AF_UNSPEC): stays on TCP */
	ML_C_NOT_ESTABLISHED,    /* sender not ESTABLISHED (closing, reset): TCP reports it */
	ML_C_PEER_CLOSED,        /* peer can no longer receive (reset, closed): TCP reports it */
	ML_C_POLICY_OFF,         /* a governing endpoint changed: this connection went to TCP */
	ML_C_PEER_BLOCKING,      /* resume refused: the peer's reader may sit inside tcp_recvmsg */
	ML_C_MAX
};

#ifdef __BPF__
_Static_assert(sizeof(struct ml_addr) == 16, "ml_addr");
_Static_assert(sizeof(struct ml_endpoint_key) == 16, "ml_endpoint_key");
_Static_assert(sizeof(struct ml_endpoint_value) == 32, "ml_endpoint_value");
_Static_assert(sizeof(struct ml_port_key) == 20, "ml_port_key");
_Static_assert(sizeof(struct ml_port_value) == 4, "ml_port_value");
_Static_assert(sizeof(struct ml_cidr_key) == 36, "ml_cidr_key");
_Static_assert(sizeof(struct ml_governors) == 48, "ml_governors");
_Static_assert(sizeof(struct ml_link_value) == 72, "ml_link_value");
_Static_assert(sizeof(struct ml_config) == 24, "ml_config");
_Static_assert(sizeof(struct ml_pending_key) == 8, "ml_pending_key");
_Static_assert(sizeof(struct ml_pending_value) == 64, "ml_pending_value");
_Static_assert(sizeof(struct ml_sock_state) == 96, "ml_sock_state");
#endif

#endif /* MESHLANE_LAYOUT_H */
