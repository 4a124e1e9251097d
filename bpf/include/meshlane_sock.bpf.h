/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Reads of another kernel socket that both programs make, through probe
 * reads at CO-RE offsets: the socket may be any address a side table
 * holds (a fault reads as zero), so nothing read here is trusted for more
 * than a heuristic that can only keep bytes on TCP.
 */
#ifndef MESHLANE_SOCK_BPF_H
#define MESHLANE_SOCK_BPF_H
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

#define ML_O_NONBLOCK 04000

/*
 * 1: the socket's file is non-blocking; 0: blocking; -1: no file yet (an
 * accepted socket its app has not accept()ed) or unreadable.
 */
static __always_inline int ml_fd_nonblocking(const struct sock *sk)
{
	struct socket *so;
	struct file *f;

	if (!sk)
		return -1;
	so = BPF_CORE_READ(sk, sk_socket);
	if (!so)
		return -1;
	f = BPF_CORE_READ(so, file);
	if (!f)
		return -1;
	return (BPF_CORE_READ(f, f_flags) & ML_O_NONBLOCK) ? 1 : 0;
}

#endif /* MESHLANE_SOCK_BPF_H */
