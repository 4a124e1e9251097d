/**
 * appSockets "auto" (a pod without the meshlane.io/app-sockets annotation)
 * where the worker lets it act (--app-sockets-auto on; on kernels whose
 * behaviour probes find it safe, "probe" does the same): an app socket
 * joins only with a non-blocking fd. A connecting app shows its fd at
 * once; an accepted one only after accept(), so the sidecar's direction
 * stays on TCP until then, and a blocking accepted socket leaves the
 * sockhash before any byte was redirected to it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, type Agent } from '../harness/cluster.js';
import { measure } from '../harness/counters.js';
import { PROXY_UID, role } from '../harness/edge.js';

describe('datapath - app sockets "auto": non-blocking fds only', () => {
  let c: TestCluster;
  let agent: Agent;
  let port = 9500;
  beforeAll(async () => {
    c = new TestCluster(['n1']);
    await c.addPod({ name: 'a', node: 'n1', index: 1, meshed: true });
    await c.addPod({ name: 'b', node: 'n1', index: 2, meshed: true, servers: { 8080: 'echo' } });
    const endpoints = ['a', 'b'].map((n) => c.pod(n).endpoint({ appSockets: 'auto' }));
    await c.startWorker('n1', c.state('n1', { endpoints }), ['--app-sockets-auto', 'on']);
    agent = await c.pod('a').agent();
  });
  afterAll(async () => {
    agent?.close();
    await c?.cleanup();
  });

  it('the worker reports that "auto" app sockets are on, and why', () => {
    expect(c.worker('n1').log).toMatch(/app sockets: non-blocking ones join/);
  });

  it('a non-blocking client (Node) and a non-blocking server (epoll) are accelerated on every hop; the accepted one after its probation', async () => {
    const { result, d } = await measure(c.worker('n1'), () => agent.xfer({ host: c.pod('b').ip4, port: 8080, bytes: 4 << 20, chunk: 256 << 10, pauseMs: 30, halfClose: false }));
    expect(result.recvSha).toBe(result.sentSha);
    expect([d.paired_outbound, d.paired_mesh, d.paired_inbound]).toEqual([1, 1, 1]);
    expect(d.app_blocking).toBe(0);
    expect(d.app_probation).toBe(1);
    expect(d.resumed).toBeGreaterThanOrEqual(1);
    expect(d.bytes_redirected).toBeGreaterThan(4 << 20);
  });

  it('a blocking client (connect() on a blocking fd) never joins; its sidecar hops still do', async () => {
    const a = c.pod('a');
    const { result, d } = await measure(c.worker('n1'), async () => role(a, 1000, ['send', '--host', c.pod('b').ip4, '--port', '8080', '--bytes', '200000']).done);
    expect(result).toMatchObject({ sent: 200000, error: null });
    expect(d.app_blocking).toBe(1);
    expect(d.paired_outbound).toBe(0);
    expect(d.paired_mesh).toBe(1);
  });

  it('a blocking accepted socket leaves the sockhash before any byte was redirected to it; the bytes arrive over TCP', async () => {
    const b = c.pod('b');
    const p = port++;
    const { result, d } = await measure(c.worker('n1'), async () => {
      const server = role(b, 1000, ['serve', '--port', String(p)]);
      await server.ready;
      const client = role(b, PROXY_UID, ['send', '--src', '127.0.0.6', '--host', b.ip4, '--port', String(p), '--bytes', '300000', '--burst', '50000', '--pause-ms', '20', '--retry-eagain']);
      return [await client.done, await server.done];
    });
    expect(result[1]).toMatchObject({ bytes: 300000, error: null });
    expect(result[1]!.sha).toBe(result[0]!.sha);
    expect(d.paired_inbound).toBe(1);
    expect(d.app_probation).toBe(1);
    expect(d.evicted).toBe(1);
    expect(d.resumed).toBe(0);
  });

  it('a non-blocking accepted socket (select loop) resumes from its probation and gets redirected bytes, in order', async () => {
    const b = c.pod('b');
    const p = port++;
    const { result, d } = await measure(c.worker('n1'), async () => {
      const server = role(b, 1000, ['nb_reader', '--port', String(p)]);
      await server.ready;
      const client = role(b, PROXY_UID, ['send', '--src', '127.0.0.6', '--host', b.ip4, '--port', String(p), '--bytes', '2000000', '--burst', '100000', '--pause-ms', '20', '--retry-eagain']);
      return [await client.done, await server.done];
    });
    expect(result[1]).toMatchObject({ bytes: 2000000, error: null });
    expect(result[1]!.sha).toBe(result[0]!.sha);
    expect(d.app_probation).toBe(1);
    expect(d.evicted).toBe(0);
    expect(d.resumed).toBeGreaterThanOrEqual(1);
    expect(d.bytes_redirected).toBeGreaterThan(0);
  });
});
