/**
 * Real bytes through the real kernel path: each of the three same-node hops,
 * the full request over all three, sizes from 1 B to 64 MB, IPv4 and IPv6,
 * half-close, reset and 500 concurrent connections. Every transfer is
 * checked by sha256 and the counters prove which hops were redirected.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, TOOLS, type Agent } from '../harness/cluster.js';
import { measure, until } from '../harness/counters.js';

describe('datapath - paths', () => {
  let c: TestCluster;
  let a: Agent;
  beforeAll(async () => {
    c = new TestCluster(['n1', 'n2']);
    await c.addPod({ name: 'a', node: 'n1', index: 1, meshed: true });
    await c.addPod({ name: 'b', node: 'n1', index: 2, meshed: true, servers: { 8080: 'echo', 8090: 'sink' } });
    await c.addPod({ name: 'plain', node: 'n1', index: 3, meshed: false, servers: { 8080: 'echo' } });
    await c.addPod({ name: 'e', node: 'n2', index: 5, meshed: true });
    await c.startWorker('n1');
    await c.startWorker('n2');
    a = await c.pod('a').agent();
  });
  afterAll(async () => {
    a?.close();
    await c?.cleanup();
  });

  const KB = 1024;
  const MB = 1024 * KB;

  /**
   * Every byte of every hop went through the fast lane. In a kernel-matrix
   * guest (qemu without KVM, about 20x slower) one more case is seen: a
   * client writes before its accept side has registered the pair, and that
   * direction stays on TCP (peer_missing, the documented safe fallback);
   * every byte is still accounted for, the ones on TCP by that race alone.
   */
  function expectAllRedirected(d: Record<string, number>, total: number): void {
    if (process.env.MESHLANE_IN_KERNEL_MATRIX === '1' && d.bytes_tcp! > 0) {
      expect(d.peer_missing).toBeGreaterThan(0);
      expect(d.bytes_redirected! + d.bytes_tcp!).toBe(total);
      return;
    }
    expect(d.bytes_redirected).toBe(total);
    expect(d.bytes_tcp).toBe(0);
  }
  for (const bytes of [1, KB, 64 * KB, MB, 16 * MB, 64 * MB]) {
    it(`full request app -> sidecar -> sidecar -> app, ${bytes} B, every hop redirected`, async () => {
      // No half-close here (see the half-close test): the client reads the
      // whole echo back, then closes.
      const { result: r, d } = await measure(c.worker('n1'), () => a.xfer({ host: c.pod('b').ip4, port: 8080, bytes, halfClose: false }));
      expect(r.error).toBeUndefined();
      expect(r.recvBytes).toBe(bytes);
      expect(r.recvSha).toBe(r.sentSha);
      expect(d.paired_outbound).toBe(1);
      expect(d.paired_mesh).toBe(1);
      expect(d.paired_inbound).toBe(1);
      if (bytes <= MB) {
        // Both directions of all three hops, and nothing over TCP.
        expectAllRedirected(d, 6 * bytes);
      } else {
        // Past the flow-control limit a direction may be held on TCP for a
        // while; the rest is redirected.
        expect(d.bytes_redirected).toBeGreaterThan(bytes);
        expect(d.bytes_redirected + d.bytes_tcp).toBeLessThanOrEqual(6 * bytes);
      }
    });
  }

  it('full request over IPv6', async () => {
    const { result: r, d } = await measure(c.worker('n1'), () => a.xfer({ host: c.pod('b').ip6, port: 8080, bytes: MB, halfClose: false }));
    expect(r.error).toBeUndefined();
    expect(r.recvSha).toBe(r.sentSha);
    expect([d.paired_outbound, d.paired_mesh, d.paired_inbound]).toEqual([1, 1, 1]);
    expectAllRedirected(d, 6 * MB);
  });

  it('outbound hop alone: app -> own sidecar when the destination has no sidecar', async () => {
    const { result: r, d } = await measure(c.worker('n1'), () => a.xfer({ host: c.pod('plain').ip4, port: 8080, bytes: MB, halfClose: false }));
    expect(r.recvSha).toBe(r.sentSha);
    expect([d.paired_outbound, d.paired_mesh, d.paired_inbound]).toEqual([1, 0, 0]);
    expect(d.bytes_redirected).toBe(2 * MB);
  });

  it('inbound hop alone: sidecar -> app when the caller is on another node', async () => {
    const e = await c.pod('e').agent();
    try {
      const { result: r, d } = await measure(c.worker('n1'), () => e.xfer({ host: c.pod('b').ip4, port: 8080, bytes: MB, halfClose: false }));
      expect(r.recvSha).toBe(r.sentSha);
      expect([d.paired_outbound, d.paired_mesh, d.paired_inbound]).toEqual([0, 0, 1]);
      expect(d.bytes_redirected).toBe(2 * MB);
    } finally {
      e.close();
    }
  });

  it('mesh hop alone: Envoy -> Envoy when app sockets are switched off', async () => {
    const w = c.worker('n1');
    await w.apply(c.state('n1', { generation: 2, appSockets: false }));
    try {
      const { result: r, d } = await measure(w, () => a.xfer({ host: c.pod('b').ip4, port: 8080, bytes: MB, halfClose: false }));
      expect(r.recvSha).toBe(r.sentSha);
      expect([d.paired_outbound, d.paired_mesh, d.paired_inbound]).toEqual([0, 1, 0]);
      expect(d.app_sockets_off).toBe(2);
      expect(d.bytes_redirected).toBe(2 * MB);
    } finally {
      await w.apply(c.state('n1', { generation: 3 }));
    }
  });

  it('half-close: the server sees EOF after every byte and its reply still arrives', async () => {
    const bytes = 32 * MB;
    const { result: r, d } = await measure(c.worker('n1'), () => a.sink({ host: c.pod('b').ip4, port: 8090, bytes }));
    expect(r.error).toBeUndefined();
    expect(r.counted).toBe(bytes);
    expect([d.paired_outbound, d.paired_mesh, d.paired_inbound]).toEqual([1, 1, 1]);
    // The reply travels after the client's FIN: over TCP on every hop, so
    // that the FIN_WAIT2 -> TIME_WAIT purge of a redirect queue cannot eat it.
    expect(d.peer_half_closed).toBe(3);
    expect(d.bytes_redirected).toBeGreaterThan(0);
    // A send that waits for TCP window is not seen twice by sk_msg: <=.
    expect(d.bytes_redirected + d.bytes_tcp).toBeLessThanOrEqual(3 * bytes + 3 * 8);
  });

  it('a blocking app whose pod does not declare non-blocking I/O keeps its own sockets on TCP', async () => {
    const w = c.worker('n1');
    const endpoints = [c.pod('a').endpoint({ appSockets: 'never' }), c.pod('b').endpoint()];
    await w.apply(c.state('n1', { generation: 4, endpoints }));
    try {
      // pingpong reads with blocking recv(): the reply comes after its FIN.
      const { result: r, d } = await measure(w, () =>
        c.pod('a').run([`${TOOLS}/pingpong`, '--host', c.pod('b').ip4, '--port', '8090', '--mode', 'bulk', '--seconds', '0.5']),
      );
      expect(r.code, r.stderr).toBe(0);
      expect([d.paired_outbound, d.paired_mesh, d.paired_inbound]).toEqual([0, 1, 1]);
      expect(d.app_sockets_off).toBe(1);
    } finally {
      await w.apply(c.state('n1', { generation: 5 }));
    }
  });

  it('reset: an aborted client closes all six sockets of the chain', async () => {
    const w = c.worker('n1');
    const before = w.counters();
    const r = await a.reset({ host: c.pod('b').ip4, port: 8080 });
    expect(r.error).toBeUndefined();
    expect(r.echoed).toBe(1024);
    await until(w, (k) => k.closed - before.closed >= 6);
    const after = await a.xfer({ host: c.pod('b').ip4, port: 8080, bytes: KB });
    expect(after.recvSha).toBe(after.sentSha);
  });

  it('500 concurrent connections, each byte-exact and each hop redirected', async () => {
    const { result: r, d } = await measure(c.worker('n1'), () => a.many({ host: c.pod('b').ip4, port: 8080, bytes: 16 * KB, count: 500 }));
    expect(r.errors).toEqual([]);
    expect(r.mismatches).toBe(0);
    expect(r.bytes).toBe(500 * 16 * KB);
    expect([d.paired_outbound, d.paired_mesh, d.paired_inbound]).toEqual([500, 500, 500]);
    expect(d.ambiguous).toBe(0);
    // Requests are redirected on every hop; echoes written after the
    // client's FIN ride TCP by design (see the half-close test).
    expect(d.bytes_redirected).toBeGreaterThanOrEqual(3 * 500 * 16 * KB);
  });
});
