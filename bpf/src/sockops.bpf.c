// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sockops: decides, once per TCP connection, whether its two sockets are the
 * two ends of one same-node mesh hop, and if so puts both in ml_socks.
 *
 * The client end registers at ACTIVE_ESTABLISHED under its two initial
 * sequence numbers; the accepted end finds it at PASSIVE_ESTABLISHED under the
 * same numbers. REDIRECT rewrites addresses and (on a TIME_WAIT clash) the
 * source port, never the sequence numbers, so the match survives NAT; the
 * addresses are then checked against the one hop shape they must fit before
 * anything is trusted.
 */
#include "meshlane_maps.bpf.h"
#include <bpf/bpf_core_read.h>
#include "meshlane_sock.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Istio's own ports: never accelerated whatever the state says. */
/*
 * bpf_sock_ops_cb_flags_set() assigns the socket's callback flags, it does
 * not add to them: OR in what is set already, so that another sockops
 * program on the same cgroup (Cilium, Calico, an RTT exporter) keeps its
 * callbacks. The state callback is how meshlane learns of a close.
 */
static __always_inline void ml_want_state_cb(struct bpf_sock_ops *skops)
{
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* RTT callbacks (every ACK) only for the sidecar end of an inbound hop
 * whose app end joined by "auto": see on_rtt. Another program's flags are
 * kept here too, and never cleared. */
static __always_inline void ml_want_rtt_cb(struct bpf_sock_ops *skops)
{
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG |
						 BPF_SOCK_OPS_RTT_CB_FLAG);
}

static __always_inline bool istio_port(__u16 port)
{
	return port == 15000 || port == 15001 || port == 15004 || port == 15006 ||
	       port == 15008 || port == 15020 || port == 15021 || port == 15053 ||
	       port == 15090;
}

/* Context fields are read with a fixed-offset load in asm: otherwise clang
 * merges the v4 and v6 branches into one load at a computed offset, which the
 * verifier refuses ("dereference of modified ctx ptr"). */
#define CTX_READ(f) ctx_u32(skops, __builtin_offsetof(struct bpf_sock_ops, f))

static __always_inline __u32 ctx_u32(struct bpf_sock_ops *ctx, const int off)
{
	__u32 v;

	asm volatile("%0 = *(u32 *)(%1 + %2)" : "=r"(v) : "r"(ctx), "i"(off));
	return v;
}

static __always_inline void read_addrs(struct bpf_sock_ops *skops, struct ml_addr *local,
				       struct ml_addr *remote)
{
	if (skops->family == AF_INET) {
		local->w[0] = 0;
		local->w[1] = 0;
		local->w[2] = bpf_htonl(0xffff);
		local->w[3] = CTX_READ(local_ip4);
		remote->w[0] = 0;
		remote->w[1] = 0;
		remote->w[2] = bpf_htonl(0xffff);
		remote->w[3] = CTX_READ(remote_ip4);
		return;
	}
	local->w[0] = CTX_READ(local_ip6[0]);
	local->w[1] = CTX_READ(local_ip6[1]);
	local->w[2] = CTX_READ(local_ip6[2]);
	local->w[3] = CTX_READ(local_ip6[3]);
	remote->w[0] = CTX_READ(remote_ip6[0]);
	remote->w[1] = CTX_READ(remote_ip6[1]);
	remote->w[2] = CTX_READ(remote_ip6[2]);
	remote->w[3] = CTX_READ(remote_ip6[3]);
}

static __always_inline bool addr_eq(const struct ml_addr *a, const struct ml_addr *b)
{
	return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2] &&
	       a->w[3] == b->w[3];
}

static __always_inline struct tcp_sock *tcp_sk_of(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;

	/* Keeps clang from re-loading skops->sk after the NULL check. */
	asm volatile("" : "+r"(sk));
	if (!sk)
		return NULL;
	return bpf_skc_to_tcp_sock(sk);
}

/* The owner of a socket; an accepted socket inherits its listener's. */
static __always_inline __u32 sock_uid(struct tcp_sock *tp)
{
	return tp ? tp->inet_conn.icsk_inet.sk.sk_uid.val : (__u32)-1;
}

/* The socket's kernel address, kept only so the peer's sk_msg can read its
 * receive memory and state (faults read as zero). */
static __always_inline __u64 sock_addr(struct tcp_sock *tp)
{
	return (__u64)tp;
}

/*
 * Is the socket in the pod of this entry? The socket's cgroup is the one
 * of the process that created it (an accepted socket: its listener's),
 * some container of the pod; its ancestor at the pod's level must be the
 * pod's cgroup. Read with probe reads at CO-RE offsets (the ancestors
 * array is indexed by a run-time level, which direct BTF loads can't do);
 * a fault reads as 0, which matches no entry, so an unreadable socket is
 * never taken for a pod's.
 */
static __always_inline bool in_pod(struct tcp_sock *tp, const struct ml_endpoint_value *ep)
{
	struct cgroup *cg, *anc = NULL;
	struct kernfs_node *kn;
	__u64 id = 0;
	int level;

	if (!tp || !ep->cgroup_id || ep->cgroup_level > 255)
		return false;
	cg = BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup);
	if (!cg)
		return false;
	level = BPF_CORE_READ(cg, level);
	if (level < (int)ep->cgroup_level)
		return false;
	bpf_probe_read_kernel(&anc, sizeof(anc), (void *)cg + bpf_core_field_offset(struct cgroup, ancestors) +
							 ep->cgroup_level * sizeof(anc));
	if (!anc)
		return false;
	kn = BPF_CORE_READ(anc, kn);
	if (!kn)
		return false;
	id = BPF_CORE_READ(kn, id);
	return id == ep->cgroup_id;
}

/*
 * A socket in the sockhash reads through tcp_bpf_recvmsg, which on kernels
 * up to at least 6.18 answers a *blocking* recv() with EAGAIN when it wakes
 * with nothing queued (a signal, write space), and can't be spliced. Envoy
 * never blocks; an app may. "always"/"never" are the pod's override;
 * "auto" lets a socket join only where this kernel allows it (the worker's
 * behaviour probes) and only while its fd is non-blocking, which is what
 * every event loop (nginx, Envoy, Go, Node, Netty, curl) sets.
 */
enum app_gate { APP_NO, APP_YES, APP_AUTO };

static __always_inline enum app_gate app_gate(struct ml_config *cfg, const struct ml_endpoint_value *ep)
{
	if (!(cfg->flags & ML_CFG_APP_SOCKETS) || (ep->flags & ML_EP_APP_NEVER))
		return APP_NO;
	if (ep->flags & ML_EP_APP_ALWAYS)
		return APP_YES;
	return (cfg->flags & ML_CFG_APP_AUTO) ? APP_AUTO : APP_NO;
}

static __always_inline struct ml_endpoint_value *endpoint(const struct ml_addr *ip)
{
	return bpf_map_lookup_elem(&ml_endpoints, ip);
}

static __always_inline bool port_excluded(const struct ml_addr *ip, __u16 port, __u8 dir,
					  bool all_ports)
{
	struct ml_port_key key = { .port = port, .direction = dir };
	struct ml_port_value *rule;

	key.ip = *ip;
	rule = bpf_map_lookup_elem(&ml_port_rules, &key);
	if (rule && rule->action == ML_PORT_EXCLUDE)
		return true;
	if (!all_ports)
		return !rule || rule->action != ML_PORT_INCLUDE;
	return false;
}

static __always_inline bool cidr_refused(const struct ml_addr *pod, const struct ml_addr *dst,
					 bool all_ips)
{
	struct ml_cidr_key key = { .prefixlen = 256 };

	key.pod = *pod;
	key.dst = *dst;
	/* Exclusion wins over inclusion whatever the prefix lengths, as in
	 * istio-iptables where the exclude RETURN rules come first. */
	if (bpf_map_lookup_elem(&ml_cidr_exclude, &key))
		return true;
	if (all_ips)
		return false;
	return !bpf_map_lookup_elem(&ml_cidr_include, &key);
}

/* The outbound hop's own rules: which destinations the app's sidecar
 * captures at all. Checked before the app socket joins, and again at the
 * accept. */
static __always_inline bool outbound_refused(const struct ml_addr *pod, const struct ml_endpoint_value *ep,
					     const struct ml_addr *dst, __u16 dport)
{
	if (istio_port(dport) || port_excluded(pod, dport, ML_DIR_OUTBOUND, true)) {
		ml_count(ML_C_REFUSED_PORT, 1);
		return true;
	}
	if (cidr_refused(pod, dst, ep->flags & ML_EP_OUTBOUND_ALL_IPS)) {
		ml_count(ML_C_REFUSED_CIDR, 1);
		return true;
	}
	return false;
}

static __always_inline bool inbound_port_refused(const struct ml_addr *pod, const struct ml_endpoint_value *ep,
						 __u16 port)
{
	if (istio_port(port) ||
	    port_excluded(pod, port, ML_DIR_INBOUND, ep->flags & ML_EP_INBOUND_ALL_PORTS)) {
		ml_count(ML_C_REFUSED_PORT, 1);
		return true;
	}
	return false;
}

static __always_inline struct ml_sock_state *sock_state(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return NULL;
	return bpf_sk_storage_get(&ml_sock_state, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
}

/*
 * connect(AF_UNSPEC) and connect() again keep the socket, its cookie, its
 * storage and its place in the sockhash, while the old peer may still
 * name it. Such a socket leaves the sockhash (what sits in its redirect
 * queue belongs to the old connection, which TCP's disconnect discards
 * too) and is never paired again.
 */
static __always_inline bool was_connected(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct ml_sock_state *st;

	if (!sk)
		return false;
	st = bpf_sk_storage_get(&ml_sock_state, sk, NULL, 0);
	if (!st || !st->flags)
		return false;
	bpf_map_delete_elem(&ml_socks, &st->cookie);
	bpf_map_delete_elem(&ml_pending, &st->pending);
	bpf_map_delete_elem(&ml_links, &st->cookie);
	st->flags = ML_SK_TCP;
	st->peer = 0;
	st->peer_sk = 0;
	ml_count(ML_C_RECONNECTED, 1);
	return true;
}

/*
 * Could this connecting socket be the client end of a same-node hop? Only
 * then is it worth a pending entry and a place in the sockhash; so every
 * check the client side can make is made here, before it joins: an
 * outsider (another pod's socket, a gateway running as the proxy uid) or
 * an excluded port or range never enters the sockhash.
 */
static __always_inline void on_active_established(struct bpf_sock_ops *skops, struct ml_config *cfg)
{
	struct ml_endpoint_value *lep, *rep;
	struct ml_pending_value pv = {};
	struct tcp_sock *tp;
	struct ml_pending_key pk;
	struct ml_sock_state *st;
	enum app_gate g = APP_NO;
	__u32 uid;
	long err;

	if (was_connected(skops))
		return;
	read_addrs(skops, &pv.local, &pv.remote);
	lep = endpoint(&pv.local);
	rep = endpoint(&pv.remote);
	/* Keeps clang from OR-ing the two pointers, which the verifier refuses. */
	asm volatile("" : "+r"(lep));
	if (!lep && !rep) {
		ml_count(ML_C_NOT_ENDPOINT, 1);
		return;
	}
	if (!(cfg->flags & ML_CFG_ENABLED)) {
		ml_count(ML_C_SWITCH_OFF, 1);
		return;
	}
	tp = tcp_sk_of(skops);
	uid = sock_uid(tp);
	pv.remote_port = (__u16)bpf_ntohl(skops->remote_port);
	if (lep) {
		/* The address is a local pod's: the socket must be that pod's. */
		if (!in_pod(tp, lep)) {
			ml_count(ML_C_NOT_POD, 1);
			return;
		}
		if (!(lep->flags & ML_EP_ACCELERATE)) {
			ml_count(ML_C_OPTED_OUT, 1);
			return;
		}
		if (uid != lep->proxy_uid) {
			/* An app socket: the outbound hop, if its sidecar captures
			 * this destination. */
			g = app_gate(cfg, lep);
			if (g == APP_NO) {
				ml_count(ML_C_APP_SOCKETS_OFF, 1);
				return;
			}
			if (g == APP_AUTO && ml_fd_nonblocking((struct sock *)tp) != 1) {
				ml_count(ML_C_APP_BLOCKING, 1);
				return;
			}
			if (outbound_refused(&pv.local, lep, &pv.remote, pv.remote_port))
				return;
			g = APP_NO; /* the app is this socket: nothing to watch from here */
		} else if (!rep) {
			/* Its sidecar dialling anything but a local pod. */
			ml_count(ML_C_NOT_CANDIDATE, 1);
			return;
		} else if (!(rep->flags & ML_EP_ACCELERATE)) {
			ml_count(ML_C_OPTED_OUT, 1);
			return;
		} else if (inbound_port_refused(&pv.remote, rep, pv.remote_port)) {
			/* Mesh (or inbound from the pod IP): the server side's
			 * capture of this port; its own outbound exclusions are
			 * checked at the accept, where the hop's shape is known. */
			return;
		} else if (lep == rep) {
			/* Inbound from the pod IP itself. */
			g = app_gate(cfg, rep);
		}
	} else {
		/* From an address no pod has (127.0.0.6, ::6) to a local pod:
		 * only that pod's own sidecar starts the inbound hop so. */
		if (uid != rep->proxy_uid || !in_pod(tp, rep)) {
			ml_count(ML_C_NOT_CANDIDATE, 1);
			return;
		}
		if (!(rep->flags & ML_EP_ACCELERATE)) {
			ml_count(ML_C_OPTED_OUT, 1);
			return;
		}
		g = app_gate(cfg, rep);
		if (g == APP_NO) {
			ml_count(ML_C_APP_SOCKETS_OFF, 1);
			return;
		}
		if (inbound_port_refused(&pv.remote, rep, pv.remote_port))
			return;
	}

	pv.cookie = bpf_get_socket_cookie(skops);
	pv.netns = bpf_get_netns_cookie(skops);
	pv.local_port = (__u16)skops->local_port;
	pv.uid = uid;
	pv.sk = sock_addr(tp);
	pk.client_nxt = skops->snd_nxt;
	pk.server_nxt = skops->rcv_nxt;

	/* The claim comes first, before anything else can fail: a second
	 * socket with the same ISN pair must always find the first one's
	 * entry and void both, whatever else goes wrong for it. */
	err = bpf_map_update_elem(&ml_pending, &pk, &pv, BPF_NOEXIST);
	if (err == -17 /* EEXIST */ || (err && bpf_map_lookup_elem(&ml_pending, &pk))) {
		/* Two live connections with one ISN pair: trust neither. */
		bpf_map_delete_elem(&ml_pending, &pk);
		ml_count(ML_C_AMBIGUOUS, 1);
		st = sock_state(skops);
		if (st)
			st->flags = ML_SK_TCP;
		return;
	}
	if (err) {
		ml_count(ML_C_MAP_FULL, 1);
		return;
	}
	st = sock_state(skops);
	if (!st) {
		bpf_map_delete_elem(&ml_pending, &pk);
		ml_count(ML_C_MAP_FULL, 1);
		return;
	}
	if (bpf_sock_hash_update(skops, &ml_socks, &pv.cookie, BPF_NOEXIST)) {
		bpf_map_delete_elem(&ml_pending, &pk);
		ml_count(ML_C_MAP_FULL, 1);
		return;
	}
	st->cookie = pv.cookie;
	st->peer = 0;
	st->peer_sk = 0;
	st->policy_generation = 0;
	st->pending = pk;
	st->flags = ML_SK_CLIENT;
	st->hop = ML_HOP_NONE;
	if (g == APP_AUTO)
		ml_want_rtt_cb(skops);
	else
		ml_want_state_cb(skops);
	ml_count(ML_C_CANDIDATE, 1);
}

/*
 * Which hop do these two ends form, and may it be accelerated? Returns the
 * hop, or 0 after counting the reason it may not; fills the hop's
 * governors and the ML_SK_* bits each end takes (*cflags the client's,
 * *sflags the server's).
 */
static __always_inline __u32 classify(struct ml_pending_value *c, struct ml_addr *slocal,
				      struct ml_addr *sremote, __u16 sport, __u64 snetns,
				      struct tcp_sock *stp, struct ml_config *cfg,
				      struct ml_governors *gov, __u32 *cflags, __u32 *sflags)
{
	struct ml_endpoint_value *cep, *sep;
	__u32 suid = sock_uid(stp);

	if (c->netns == snetns) {
		cep = endpoint(&c->local);
		/* Outbound: app -> its own sidecar on 15001 via REDIRECT in
		 * OUTPUT; the accepted end sees 127.0.0.1:15001 and the app's
		 * address as its peer. */
		if (cep && c->uid != cep->proxy_uid && suid == cep->proxy_uid &&
		    sport == cep->outbound_port) {
			enum app_gate g;

			if (!addr_eq(sremote, &c->local)) {
				ml_count(ML_C_REFUSED_TUPLE, 1);
				return 0;
			}
			if (!in_pod(stp, cep)) {
				ml_count(ML_C_NOT_POD, 1);
				return 0;
			}
			if (outbound_refused(&c->local, cep, &c->remote, c->remote_port))
				return 0;
			g = app_gate(cfg, cep);
			if (g == APP_NO) {
				ml_count(ML_C_APP_SOCKETS_OFF, 1);
				return 0;
			}
			/* The client (the app) joined with a non-blocking fd
			 * under "auto": its sidecar checks that it stays so. */
			if (g == APP_AUTO)
				*sflags |= ML_SK_PEER_AUTO;
			*cflags |= ML_SK_APP_HOP;
			*sflags |= ML_SK_APP_HOP;
			gov->ip[0] = c->local;
			gov->cgroup_id[0] = cep->cgroup_id;
			return ML_HOP_OUTBOUND;
		}
		/* Inbound: the sidecar (from 127.0.0.6 or the pod IP) -> the
		 * app; no NAT on this hop, so the tuples mirror exactly. */
		sep = endpoint(slocal);
		if (sep && c->uid == sep->proxy_uid && suid != sep->proxy_uid) {
			enum app_gate g;

			if (!addr_eq(&c->remote, slocal) || c->remote_port != sport ||
			    !addr_eq(&c->local, sremote)) {
				ml_count(ML_C_REFUSED_TUPLE, 1);
				return 0;
			}
			if (!in_pod(stp, sep)) {
				ml_count(ML_C_NOT_POD, 1);
				return 0;
			}
			if (!(sep->flags & ML_EP_ACCELERATE)) {
				ml_count(ML_C_OPTED_OUT, 1);
				return 0;
			}
			g = app_gate(cfg, sep);
			if (g == APP_NO) {
				ml_count(ML_C_APP_SOCKETS_OFF, 1);
				return 0;
			}
			if (inbound_port_refused(slocal, sep, sport))
				return 0;
			/* The app has not accept()ed this socket yet, so whether
			 * it will read it blocking is unknown: under "auto" the
			 * sidecar's direction stays on TCP until it is known
			 * non-blocking (a blocking one then leaves the sockhash
			 * before any byte is queued there). The app's own
			 * direction may redirect: its bytes land at Envoy. */
			if (g == APP_AUTO) {
				*cflags |= ML_SK_PEER_AUTO | ML_SK_HELD;
				ml_count(ML_C_APP_PROBATION, 1);
			}
			*cflags |= ML_SK_APP_HOP;
			*sflags |= ML_SK_APP_HOP;
			gov->ip[0] = *slocal;
			gov->cgroup_id[0] = sep->cgroup_id;
			return ML_HOP_INBOUND;
		}
		ml_count(ML_C_REFUSED_SHAPE, 1);
		return 0;
	}

	/* Mesh: sidecar A -> pod B's address, REDIRECTed in B's PREROUTING to
	 * 15006 on B's own address; B's sidecar accepts. Both must be
	 * sidecars of local endpoints that both accelerate: that is the whole
	 * pair policy, so the maps grow with the pods, not their square. */
	cep = endpoint(&c->local);
	sep = endpoint(slocal);
	if (!cep || !sep || c->uid != cep->proxy_uid || suid != sep->proxy_uid ||
	    sport != sep->inbound_port) {
		ml_count(ML_C_REFUSED_SHAPE, 1);
		return 0;
	}
	if (!addr_eq(&c->remote, slocal) || !addr_eq(sremote, &c->local)) {
		ml_count(ML_C_REFUSED_TUPLE, 1);
		return 0;
	}
	if (!in_pod(stp, sep)) {
		ml_count(ML_C_NOT_POD, 1);
		return 0;
	}
	if (!(cep->flags & ML_EP_ACCELERATE) || !(sep->flags & ML_EP_ACCELERATE)) {
		ml_count(ML_C_OPTED_OUT, 1);
		return 0;
	}
	if (inbound_port_refused(slocal, sep, c->remote_port))
		return 0;
	if (istio_port(c->remote_port) || port_excluded(&c->local, c->remote_port, ML_DIR_OUTBOUND, true)) {
		ml_count(ML_C_REFUSED_PORT, 1);
		return 0;
	}
	gov->ip[0] = c->local;
	gov->cgroup_id[0] = cep->cgroup_id;
	gov->ip[1] = *slocal;
	gov->cgroup_id[1] = sep->cgroup_id;
	return ML_HOP_MESH;
}

/* A candidate refused at its accept leaves the sockhash: it was never
 * paired, so nothing was ever redirected to it and nothing is lost. */
static __always_inline void evict_candidate(__u64 cookie)
{
	if (!bpf_map_delete_elem(&ml_socks, &cookie))
		ml_count(ML_C_EVICTED, 1);
}

static __always_inline void on_passive_established(struct bpf_sock_ops *skops, struct ml_config *cfg)
{
	struct ml_pending_key pk = {
		.client_nxt = skops->rcv_nxt,
		.server_nxt = skops->snd_nxt,
	};
	struct ml_pending_value *c, client;
	struct ml_governors gov = {};
	struct ml_addr slocal, sremote;
	struct ml_link_value link = {};
	struct ml_sock_state *st;
	struct tcp_sock *tp;
	__u32 hop, cflags = 0, sflags = 0;
	__u64 cookie;

	c = bpf_map_lookup_elem(&ml_pending, &pk);
	if (!c) {
		ml_count(ML_C_NO_CLIENT, 1);
		return;
	}
	client = *c;
	/* One accept consumes the entry, and the delete is the claim: of two
	 * accepts racing for one key on two CPUs, only the one whose delete
	 * succeeded may pair. */
	if (bpf_map_delete_elem(&ml_pending, &pk)) {
		ml_count(ML_C_AMBIGUOUS, 1);
		return;
	}
	if (!(cfg->flags & ML_CFG_ENABLED)) {
		ml_count(ML_C_SWITCH_OFF, 1);
		evict_candidate(client.cookie);
		return;
	}

	read_addrs(skops, &slocal, &sremote);
	tp = tcp_sk_of(skops);
	hop = classify(&client, &slocal, &sremote, (__u16)skops->local_port,
		       bpf_get_netns_cookie(skops), tp, cfg, &gov, &cflags, &sflags);
	if (!hop) {
		evict_candidate(client.cookie);
		return;
	}

	st = sock_state(skops);
	if (!st) {
		ml_count(ML_C_MAP_FULL, 1);
		evict_candidate(client.cookie);
		return;
	}
	cookie = bpf_get_socket_cookie(skops);
	/* The link is written create-only: should two servers ever claim one
	 * client, the second one finds the first link and stays on TCP. */
	link.peer = cookie;
	link.peer_sk = sock_addr(tp);
	link.hop = hop;
	link.flags = cflags;
	link.gov = gov;
	if (bpf_map_update_elem(&ml_links, &client.cookie, &link, BPF_NOEXIST)) {
		ml_count(ML_C_AMBIGUOUS, 1);
		st->flags = ML_SK_SERVER | ML_SK_TCP;
		return;
	}
	st->cookie = cookie;
	st->peer = client.cookie;
	st->peer_sk = client.sk;
	st->policy_generation = 0;
	st->pending = pk;
	st->flags = ML_SK_SERVER | ML_SK_PAIRED | sflags;
	st->hop = hop;
	st->gov = gov;
	if (bpf_sock_hash_update(skops, &ml_socks, &cookie, BPF_NOEXIST)) {
		/* The client may already have read the link: its redirects
		 * then fail and fall back to TCP, in order. */
		bpf_map_delete_elem(&ml_links, &client.cookie);
		st->flags = ML_SK_SERVER | ML_SK_TCP;
		ml_count(ML_C_MAP_FULL, 1);
		return;
	}
	ml_want_state_cb(skops);
	ml_count(ML_C_PAIRED_OUTBOUND + hop - ML_HOP_OUTBOUND, 1);
}

/*
 * The sidecar end of an inbound hop whose app end joined by "auto": the
 * app's fd is only known once it has accept()ed. At each ACK, as long as
 * nothing was decided: a non-blocking fd lets the sidecar's direction
 * resume (sk_msg does that); a blocking one makes the app socket leave the
 * sockhash, back to plain tcp_recvmsg, which is only safe while nothing
 * was ever redirected to it, and sk_msg may not delete from a sockhash, so
 * it happens here.
 */
static __always_inline void on_rtt(struct bpf_sock_ops *skops)
{
	struct ml_sock_state *st;
	struct ml_link_value *link;
	struct bpf_sock *sk = skops->sk;
	__u64 peer, peer_sk;
	__u32 flags;

	if (!sk)
		return;
	st = bpf_sk_storage_get(&ml_sock_state, sk, NULL, 0);
	if (!st || (st->flags & (ML_SK_PEER_CHECKED | ML_SK_REDIRECTED)) || st->hop == ML_HOP_OUTBOUND ||
	    st->hop == ML_HOP_MESH)
		return;
	if (st->peer) {
		peer = st->peer;
		peer_sk = st->peer_sk;
		flags = st->flags;
	} else {
		/* The first message has not taken the link yet. */
		link = bpf_map_lookup_elem(&ml_links, &st->cookie);
		if (!link)
			return;
		peer = link->peer;
		peer_sk = link->peer_sk;
		flags = link->flags;
	}
	if (!(flags & ML_SK_PEER_AUTO))
		return;
	switch (ml_fd_nonblocking((struct sock *)peer_sk)) {
	case 1:
		st->flags |= ML_SK_PEER_CHECKED;
		return;
	case 0:
		if (!bpf_map_delete_elem(&ml_socks, &peer))
			ml_count(ML_C_EVICTED, 1);
		st->flags |= ML_SK_TCP | ML_SK_PEER_CHECKED;
		return;
	default:
		return; /* not accept()ed yet */
	}
}

static __always_inline void on_close(struct bpf_sock_ops *skops)
{
	struct ml_sock_state *st;
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return;
	st = bpf_sk_storage_get(&ml_sock_state, sk, NULL, 0);
	if (!st)
		return;
	/* The sockhash drops the socket by itself; the side tables don't. */
	if (st->flags & ML_SK_CLIENT) {
		bpf_map_delete_elem(&ml_pending, &st->pending);
		bpf_map_delete_elem(&ml_links, &st->cookie);
	}
	ml_count(ML_C_CLOSED, 1);
}

SEC("sockops")
int ml_sockops(struct bpf_sock_ops *skops)
{
	struct ml_config *cfg;

	ML_UPGRADE_TEST_MARK();
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			on_close(skops);
		return 1;
	case BPF_SOCK_OPS_RTT_CB:
		on_rtt(skops);
		return 1;
	default:
		return 1;
	}
	if (skops->family != AF_INET && skops->family != AF_INET6)
		return 1;
	cfg = ml_cfg();
	if (!cfg)
		return 1;
	ml_count(ML_C_ESTABLISHED, 1);
	if (skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		on_active_established(skops, cfg);
	else
		on_passive_established(skops, cfg);
	return 1;
}
