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
#include "meshlane_defs.bpf.h"

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
static __always_inline __u32 sock_uid(struct bpf_sock_ops *skops)
{
	struct tcp_sock *tp = tcp_sk_of(skops);

	return tp ? tp->inet_conn.icsk_inet.sk.sk_uid.val : (__u32)-1;
}

/* The socket's kernel address, kept only so the peer's sk_msg can read its
 * receive memory through bpf_rdonly_cast (faults read as zero). */
static __always_inline __u64 sock_addr(struct bpf_sock_ops *skops)
{
	return (__u64)tcp_sk_of(skops);
}

/*
 * A socket in the sockhash reads through tcp_bpf_recvmsg, which on kernels
 * up to at least 6.18 answers a *blocking* recv() with EAGAIN when it wakes
 * for anything but redirected bytes (TCP bytes, a FIN, a signal). Envoy
 * never blocks; an app may. So an app socket joins only when the pod says
 * its app reads non-blocking, and the node-wide switch allows it.
 */
static __always_inline bool app_sockets_allowed(struct ml_config *cfg, struct ml_endpoint_value *ep)
{
	return (cfg->flags & ML_CFG_APP_SOCKETS) && (ep->flags & ML_EP_APP_SOCKETS);
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

static __always_inline struct ml_sock_state *sock_state(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return NULL;
	return bpf_sk_storage_get(&ml_sock_state, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
}

/* Could this connecting socket be the client end of a same-node hop? Only
 * then is it worth a pending entry and a place in the sockhash. */
static __always_inline void on_active_established(struct bpf_sock_ops *skops, struct ml_config *cfg)
{
	struct ml_endpoint_value *lep, *rep;
	struct ml_pending_value pv = {};
	struct ml_pending_key pk;
	struct ml_sock_state *st;
	__u32 uid;
	long err;

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
	uid = sock_uid(skops);
	if (lep && uid != lep->proxy_uid) {
		/* An app socket of a local pod: outbound hop, if REDIRECTed. */
		if (!(lep->flags & ML_EP_ACCELERATE)) {
			ml_count(ML_C_OPTED_OUT, 1);
			return;
		}
		if (!app_sockets_allowed(cfg, lep)) {
			ml_count(ML_C_APP_SOCKETS_OFF, 1);
			return;
		}
	} else if (rep && uid == rep->proxy_uid) {
		/* A sidecar dialling a local pod: its own app (inbound hop) or
		 * another sidecar (mesh hop). */
		if (!(rep->flags & ML_EP_ACCELERATE)) {
			ml_count(ML_C_OPTED_OUT, 1);
			return;
		}
	} else {
		ml_count(ML_C_NOT_CANDIDATE, 1);
		return;
	}

	pv.cookie = bpf_get_socket_cookie(skops);
	pv.netns = bpf_get_netns_cookie(skops);
	pv.local_port = (__u16)skops->local_port;
	pv.remote_port = (__u16)bpf_ntohl(skops->remote_port);
	pv.uid = uid;
	pv.sk = sock_addr(skops);
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
	st->pending = pk;
	st->flags = ML_SK_CLIENT;
	st->hop = ML_HOP_NONE;
	ml_want_state_cb(skops);
	ml_count(ML_C_CANDIDATE, 1);
}

/* Which hop do these two ends form, and may it be accelerated? Returns the
 * hop, or 0 after counting the reason it may not. */
static __always_inline __u32 classify(struct ml_pending_value *c, struct ml_addr *slocal,
				      struct ml_addr *sremote, __u16 sport, __u64 snetns,
				      __u32 suid, struct ml_config *cfg)
{
	struct ml_endpoint_value *cep, *sep;

	if (c->netns == snetns) {
		cep = endpoint(&c->local);
		/* Outbound: app -> its own sidecar on 15001 via REDIRECT in
		 * OUTPUT; the accepted end sees 127.0.0.1:15001 and the app's
		 * address as its peer. */
		if (cep && c->uid != cep->proxy_uid && suid == cep->proxy_uid &&
		    sport == cep->outbound_port) {
			if (!addr_eq(sremote, &c->local)) {
				ml_count(ML_C_REFUSED_TUPLE, 1);
				return 0;
			}
			if (istio_port(c->remote_port) ||
			    port_excluded(&c->local, c->remote_port, ML_DIR_OUTBOUND, true)) {
				ml_count(ML_C_REFUSED_PORT, 1);
				return 0;
			}
			if (cidr_refused(&c->local, &c->remote, cep->flags & ML_EP_OUTBOUND_ALL_IPS)) {
				ml_count(ML_C_REFUSED_CIDR, 1);
				return 0;
			}
			return ML_HOP_OUTBOUND;
		}
		/* Inbound: the sidecar (from 127.0.0.6 or the pod IP) -> the
		 * app; no NAT on this hop, so the tuples mirror exactly. */
		sep = endpoint(slocal);
		if (sep && c->uid == sep->proxy_uid && suid != sep->proxy_uid) {
			if (!addr_eq(&c->remote, slocal) || c->remote_port != sport ||
			    !addr_eq(&c->local, sremote)) {
				ml_count(ML_C_REFUSED_TUPLE, 1);
				return 0;
			}
			if (!(sep->flags & ML_EP_ACCELERATE)) {
				ml_count(ML_C_OPTED_OUT, 1);
				return 0;
			}
			if (!app_sockets_allowed(cfg, sep)) {
				ml_count(ML_C_APP_SOCKETS_OFF, 1);
				return 0;
			}
			if (istio_port(sport) ||
			    port_excluded(slocal, sport, ML_DIR_INBOUND,
					  sep->flags & ML_EP_INBOUND_ALL_PORTS)) {
				ml_count(ML_C_REFUSED_PORT, 1);
				return 0;
			}
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
	if (!(cep->flags & ML_EP_ACCELERATE) || !(sep->flags & ML_EP_ACCELERATE)) {
		ml_count(ML_C_OPTED_OUT, 1);
		return 0;
	}
	if (istio_port(c->remote_port) ||
	    port_excluded(slocal, c->remote_port, ML_DIR_INBOUND, sep->flags & ML_EP_INBOUND_ALL_PORTS) ||
	    port_excluded(&c->local, c->remote_port, ML_DIR_OUTBOUND, true)) {
		ml_count(ML_C_REFUSED_PORT, 1);
		return 0;
	}
	return ML_HOP_MESH;
}

static __always_inline void on_passive_established(struct bpf_sock_ops *skops, struct ml_config *cfg)
{
	struct ml_pending_key pk = {
		.client_nxt = skops->rcv_nxt,
		.server_nxt = skops->snd_nxt,
	};
	struct ml_pending_value *c, client;
	struct ml_addr slocal, sremote;
	struct ml_link_value link;
	struct ml_sock_state *st;
	__u64 cookie;
	__u32 hop;

	c = bpf_map_lookup_elem(&ml_pending, &pk);
	if (!c) {
		ml_count(ML_C_NO_CLIENT, 1);
		return;
	}
	client = *c;
	/* One accept consumes the entry: a second socket claiming the same
	 * numbers finds nothing and stays on TCP. */
	bpf_map_delete_elem(&ml_pending, &pk);
	if (!(cfg->flags & ML_CFG_ENABLED)) {
		ml_count(ML_C_SWITCH_OFF, 1);
		return;
	}

	read_addrs(skops, &slocal, &sremote);
	hop = classify(&client, &slocal, &sremote, (__u16)skops->local_port,
		       bpf_get_netns_cookie(skops), sock_uid(skops), cfg);
	if (!hop)
		return;

	st = sock_state(skops);
	if (!st) {
		ml_count(ML_C_MAP_FULL, 1);
		return;
	}
	cookie = bpf_get_socket_cookie(skops);
	st->cookie = cookie;
	st->peer = client.cookie;
	st->peer_sk = client.sk;
	st->pending = pk;
	st->flags = ML_SK_SERVER | ML_SK_PAIRED;
	st->hop = hop;
	if (bpf_sock_hash_update(skops, &ml_socks, &cookie, BPF_NOEXIST)) {
		st->flags = ML_SK_SERVER | ML_SK_TCP;
		ml_count(ML_C_MAP_FULL, 1);
		return;
	}
	link.peer = cookie;
	link.peer_sk = sock_addr(skops);
	if (bpf_map_update_elem(&ml_links, &client.cookie, &link, BPF_ANY)) {
		/* The client will never learn its peer; this direction alone
		 * would gain nothing and could reorder nothing, so keep it. */
		ml_count(ML_C_MAP_FULL, 1);
	}
	ml_want_state_cb(skops);
	ml_count(ML_C_PAIRED_OUTBOUND + hop - ML_HOP_OUTBOUND, 1);
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
