/**
 * The side tables (ml_pending: clients waiting for their accept; ml_links:
 * a client's peer until its first message) are cleaned by the sockops close
 * callback. That callback needs BPF_SOCK_OPS_STATE_CB_FLAG, and another
 * sockops program on the same cgroup may clear the socket's flags after
 * meshlane set them (the helper assigns). So the worker also sweeps: an
 * entry whose socket has left the sockhash (the kernel removes a socket
 * from a sockhash when it closes, whatever the flags) is deleted. Both
 * tables are LRU maps as well, so nothing can fill them either way.
 *
 * A pending entry is written a moment before its socket joins the
 * sockhash, so it is only deleted once it has been seen orphaned by two
 * sweeps in a row.
 */
import type { Datapath } from '../bpf/datapath.js';

export class SideTableSweeper {
  private suspects = new Set<string>();
  readonly swept = { pending: 0, links: 0 };

  constructor(private readonly dp: Datapath) {}

  private inSockhash(cookie: Buffer): boolean {
    return this.dp.maps.ml_socks.lookup(cookie) !== undefined;
  }

  /** One pass; returns what it deleted. */
  sweep(): { pending: number; links: number } {
    const dead = { pending: 0, links: 0 };
    // One by one: an entry may vanish meanwhile (the socket's own close, LRU
    // eviction), which a batch delete would treat as an error.
    for (const cookie of this.dp.maps.ml_links.keys()) {
      if (!this.inSockhash(cookie) && this.dp.maps.ml_links.delete(cookie)) dead.links++;
    }
    const suspects = new Set<string>();
    for (const [key, value] of this.dp.maps.ml_pending.entries()) {
      if (this.inSockhash(value.subarray(0, 8))) continue;
      const k = key.toString('hex');
      if (!this.suspects.has(k)) suspects.add(k);
      else if (this.dp.maps.ml_pending.delete(key)) dead.pending++;
    }
    this.suspects = suspects;
    this.swept.pending += dead.pending;
    this.swept.links += dead.links;
    return dead;
  }
}
