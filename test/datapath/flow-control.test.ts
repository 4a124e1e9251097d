/**
 * Flow control asserted, not just allowed: a reader that stalls makes its
 * direction hold on TCP (whose window then throttles the writer), the
 * kernel's TCP memory stays bounded while it stalls, and once an
 * event-loop reader (non-blocking fd) catches up the direction resumes;
 * every byte arrives, in order. Without flow control the same stall
 * queues the whole transfer in kernel memory, which is what it prevents.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from '../harness/cluster.js';
import { delta } from '../harness/counters.js';
import { PROXY_UID, role } from '../harness/edge.js';

/** Pages of TCP memory the kernel has allocated (node-wide, /proc/net/sockstat). */
function tcpMemPages(): number {
  const m = /^TCP: .* mem (\d+)/m.exec(readFileSync('/proc/net/sockstat', 'utf8'));
  return Number(m?.[1] ?? NaN);
}

describe('datapath - flow control', () => {
  let c: TestCluster;
  let port = 9300;
  let generation = 1;
  const BYTES = 64 << 20;

  beforeAll(async () => {
    c = new TestCluster(['n1']);
    await c.addPod({ name: 'b', node: 'n1', index: 2, meshed: true });
    await c.startWorker('n1');
  });
  afterAll(async () => {
    await c?.cleanup();
  });

  /**
   * Sidecar -> app in pod b: the app stalls 1.5 s, then reads at full
   * speed; the sender writes 8 MiB bursts with short pauses, in which TCP
   * drains and a held direction may resume.
   */
  async function stalledTransfer(maxQueuedBytes: number): Promise<{ peakPages: number; baseline: number; reader: Record<string, unknown>; sender: Record<string, unknown>; d: Record<string, number> }> {
    await c.worker('n1').apply(c.state('n1', { generation: ++generation, maxQueuedBytes }));
    const b = c.pod('b');
    const p = port++;
    const before = c.worker('n1').counters();
    const baseline = tcpMemPages();
    const reader = role(b, 1000, ['nb_reader', '--port', String(p), '--hold-ms', '1500', '--chunk', '262144']);
    await reader.ready;
    const sender = role(b, PROXY_UID, ['send', '--src', '127.0.0.6', '--host', b.ip4, '--port', String(p), '--bytes', String(BYTES), '--burst', String(8 << 20), '--pause-ms', '150', '--retry-eagain']);
    let peakPages = 0;
    const sample = setInterval(() => (peakPages = Math.max(peakPages, tcpMemPages())), 20);
    try {
      const [s, r] = [await sender.done, await reader.done];
      await new Promise((res) => setTimeout(res, 100));
      return { peakPages, baseline, reader: r, sender: s, d: delta(before, c.worker('n1').counters()) };
    } finally {
      clearInterval(sample);
    }
  }

  it('a stalled reader holds its direction on TCP, kernel TCP memory stays bounded, and it resumes once the reader keeps up', async () => {
    const limited = await stalledTransfer(1 << 20);
    const unlimited = await stalledTransfer(0);
    for (const r of [limited, unlimited]) {
      expect(r.reader).toMatchObject({ bytes: BYTES, error: null });
      expect(r.reader.sha).toBe(r.sender.sha);
    }
    expect(limited.d.paired_inbound).toBe(1);
    expect(limited.d.held).toBeGreaterThanOrEqual(1);
    expect(limited.d.resumed).toBeGreaterThanOrEqual(1);
    expect(limited.d.bytes_redirected).toBeGreaterThan(0);
    expect(unlimited.d.held).toBe(0);
    // Without a limit the stall queues (nearly) the whole transfer in kernel
    // memory; with one, about the limit plus what TCP's window lets through.
    const grewUnlimited = unlimited.peakPages - unlimited.baseline;
    const grewLimited = limited.peakPages - limited.baseline;
    expect(grewUnlimited * 4096).toBeGreaterThan(BYTES / 2);
    // What TCP itself may hold for one connection (both buffers at their
    // autotuned maximum, at about twice their payload in skb truesize),
    // plus the limit.
    const [rmemMax, wmemMax] = ['tcp_rmem', 'tcp_wmem'].map((f) => Number(readFileSync(`/proc/sys/net/ipv4/${f}`, 'utf8').trim().split(/\s+/)[2]));
    expect(grewLimited * 4096).toBeLessThan(2 * (rmemMax! + wmemMax!) + (1 << 20));
    expect(grewLimited).toBeLessThan(grewUnlimited / 2);
  });
});
