/**
 * The edge cases a review found by reading the datapath, each run the
 * same way on plain TCP (the node's kill switch off) and through meshlane,
 * with plain blocking sockets (test/tools/edge.py) whose every result
 * (bytes, sha256, the errno that ended it) must be identical; the counters
 * prove the meshlane run really went through the fast lane, or was kept
 * off it for the reason the case is about.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from '../harness/cluster.js';
import { delta, type Counters } from '../harness/counters.js';
import { PROXY_UID, role, type Result } from '../harness/edge.js';

/** Kernel-matrix guests (qemu TCG) run about 20x slower: stretch the waits. */
const SCALE = Math.max(1, Number(process.env.MESHLANE_TEST_TIME_SCALE ?? '1') || 1);

describe('datapath - edge cases, plain vs meshlane', () => {
  let c: TestCluster;
  let state: (over?: Parameters<TestCluster['state']>[1]) => ReturnType<TestCluster['state']>;
  let port = 9000;

  beforeAll(async () => {
    c = new TestCluster(['n1']);
    await c.addPod({ name: 'a', node: 'n1', index: 1, meshed: true, excludeOutboundPorts: [9100] });
    await c.addPod({ name: 'b', node: 'n1', index: 2, meshed: true, servers: { 8080: 'echo', 9100: 'echo' } });
    await c.addPod({ name: 'c', node: 'n1', index: 3, meshed: true });
    await c.addPod({ name: 'g', node: 'n1', index: 4, meshed: false });
    state = (over = {}) => c.state('n1', over);
    await c.startWorker('n1');
  });
  afterAll(async () => {
    await c?.cleanup();
  });

  const counters = (): Counters => c.worker('n1').counters();
  let generation = 10;
  async function mode(accelerated: boolean, over: Parameters<TestCluster['state']>[1] = {}): Promise<void> {
    await c.worker('n1').apply(state({ generation: ++generation, enabled: accelerated, ...over }));
  }

  /**
   * One case on both paths: `run` gets a fresh port and returns its
   * results; they must be equal field by field.
   */
  async function bothWays(run: (port: number) => Promise<Result[]>, over: Parameters<TestCluster['state']>[1] = {}): Promise<{ plain: Result[]; meshlane: Result[]; d: Counters }> {
    await mode(false, over);
    const plain = await run(port++);
    await mode(true, over);
    const before = counters();
    const meshlane = await run(port++);
    await new Promise((r) => setTimeout(r, 100));
    return { plain, meshlane, d: delta(before, counters()) };
  }

  /** The sidecar of pod b (uid 1337, from 127.0.0.6) to its app: the inbound hop's shape. */
  const sidecarToApp = (p: number, serverArgs: string[], clientArgs: string[]) => async (): Promise<Result[]> => {
    const b = c.pod('b');
    const server = role(b, 1000, ['serve', '--port', String(p), ...serverArgs]);
    await server.ready;
    const client = role(b, PROXY_UID, ['send', '--src', '127.0.0.6', '--host', b.ip4, '--port', String(p), ...clientArgs]);
    return [await client.done, await server.done];
  };

  it('bytes redirected into a peer that half-closes and then goes FIN_WAIT2 -> TIME_WAIT are all still read', async () => {
    const r = await bothWays((p) => sidecarToApp(p, ['--shut-wr-after-ms', '50', '--hold-ms', '600'], ['--bytes', '100000', '--then', 'eof-close', '--wait-ms', '50'])());
    expect(JSON.stringify(r.meshlane)).toBe(JSON.stringify(r.plain));
    expect(r.meshlane[1]).toMatchObject({ bytes: 100000, error: null });
    expect(r.meshlane[1]!.sha).toBe(r.meshlane[0]!.sha);
    expect(r.d.bytes_redirected).toBeGreaterThanOrEqual(100000);
  });

  it('bytes redirected into a peer that then receives an RST are read as plain TCP reads them', async () => {
    // 50 kB fit in the reader's initial TCP window, so plain TCP has
    // delivered them all before the RST whatever the machine's speed
    // (beyond the window, unsent bytes die with an abortive close, and how
    // many depends on timing: 64 kB of 100 kB in a qemu guest).
    const r = await bothWays((p) => sidecarToApp(p, ['--hold-ms', String(500 * SCALE)], ['--bytes', '50000', '--then', 'rst', '--wait-ms', String(200 * SCALE)])());
    expect(JSON.stringify(r.meshlane)).toBe(JSON.stringify(r.plain));
    expect(r.d.bytes_redirected).toBeGreaterThanOrEqual(50000);
  });

  it('connect(AF_UNSPEC) and connect elsewhere: the old peer reaches nothing, its write fails as on TCP', async () => {
    const b = c.pod('b');
    const r = await bothWays(async (p) => {
      const old = role(b, 1000, ['serve_then_write', '--port', String(p), '--hold-ms', '300']);
      const next = role(b, 1000, ['echo_once', '--port', String(p + 1000)]);
      await Promise.all([old.ready, next.ready]);
      const client = role(b, PROXY_UID, ['reconnect', '--src', '127.0.0.6', '--host', b.ip4, '--port', String(p), '--port2', String(p + 1000), '--wait-ms', '100']);
      return [await client.done, await old.done, await next.done];
    });
    expect(JSON.stringify(r.meshlane)).toBe(JSON.stringify(r.plain));
    expect(r.meshlane[0]).toMatchObject({ first: 'ok1', second: 'ok2:hello2' });
    expect(r.d.reconnected).toBeGreaterThanOrEqual(1);
  });

  // The reader is opted in ("always"): a blocking reader in the sockhash
  // may see the kernel's spurious EAGAIN, which it retries here (the
  // compat suite shows that hazard itself); what this case is about is
  // that no byte is stranded or reordered by a resume.
  it('a blocking MSG_WAITALL reader behind flow control gets every byte in order (a held direction never resumes to a blocking reader)', async () => {
    const r = await bothWays((p) => sidecarToApp(p, ['--waitall', '--retry-eagain', '--chunk', '65536', '--delay-ms', '1'], ['--bytes', '6000000', '--burst', '1000000', '--pause-ms', '300', '--retry-eagain'])(), { maxQueuedBytes: 256 << 10 });
    expect(JSON.stringify(r.meshlane)).toBe(JSON.stringify(r.plain));
    expect(r.meshlane[1]).toMatchObject({ bytes: 6000000, error: null });
    expect(r.meshlane[1]!.sha).toBe(r.meshlane[0]!.sha);
    expect(r.d.held).toBeGreaterThanOrEqual(1);
    expect(r.d.resumed).toBe(0);
  });

  it('a socket of the proxy uid in a pod that is not an endpoint (a gateway) never joins', async () => {
    const b = c.pod('b');
    const g = c.pod('g');
    const r = await bothWays(async (p) => {
      const server = role(b, 1000, ['serve', '--port', String(p)]);
      await server.ready;
      const client = role(g, PROXY_UID, ['send', '--host', b.ip4, '--port', String(p), '--bytes', '5000']);
      return [await client.done, await server.done];
    });
    expect(JSON.stringify(r.meshlane)).toBe(JSON.stringify(r.plain));
    expect(r.d.not_candidate).toBeGreaterThanOrEqual(1);
    expect(r.d.candidate).toBe(1); // only b's sidecar dialling its app: the hop that is one
  });

  it("an IP whose entry belongs to another pod's cgroup (a reused IP while the bus lags) governs nothing", async () => {
    const cp = c.pod('c');
    const stale = { ...cp.endpoint(), pod: 'default/deleted', uid: '00000000-0000-4000-8000-00000000dead' };
    const endpoints = [c.pod('a').endpoint(), c.pod('b').endpoint(), stale];
    const agent = await cp.agent();
    try {
      const r = await bothWays(async () => [(await agent.xfer({ host: c.pod('b').ip4, port: 8080, bytes: 10000 })) as unknown as Result].map((x) => ({ recvBytes: x.recvBytes, same: x.recvSha === x.sentSha })), { endpoints });
      expect(JSON.stringify(r.meshlane)).toBe(JSON.stringify(r.plain));
      expect(r.d.not_pod).toBeGreaterThanOrEqual(1);
      expect(r.d.paired_outbound).toBe(0);
      // b's own sidecar still pairs with b's app: b is bound to its own cgroup.
      expect(r.d.paired_inbound).toBe(1);
    } finally {
      agent.close();
    }
  });

  it('an app socket to an excluded outbound port never enters the sockhash', async () => {
    const agent = await c.pod('a').agent();
    try {
      const r = await bothWays(async () => {
        const x = await agent.xfer({ host: c.pod('b').ip4, port: 9100, bytes: 10000 });
        return [{ recvBytes: x.recvBytes, same: x.recvSha === x.sentSha }];
      });
      expect(JSON.stringify(r.meshlane)).toBe(JSON.stringify(r.plain));
      expect(r.meshlane[0]).toMatchObject({ recvBytes: 10000, same: true });
      expect(r.d.refused_port).toBeGreaterThanOrEqual(1);
      // The only candidate is b's side (its sidecar dialling b's app), never a's app socket.
      expect(r.d.paired_outbound).toBe(0);
    } finally {
      agent.close();
    }
  });

  it('a candidate refused at its accept leaves the sockhash', async () => {
    const b = c.pod('b');
    const r = await bothWays(async (p) => {
      // The "app" runs as the proxy uid: no hop has that shape.
      const server = role(b, PROXY_UID, ['serve', '--port', String(p)]);
      await server.ready;
      const client = role(b, PROXY_UID, ['send', '--src', '127.0.0.6', '--host', b.ip4, '--port', String(p), '--bytes', '5000']);
      return [await client.done, await server.done];
    });
    expect(JSON.stringify(r.meshlane)).toBe(JSON.stringify(r.plain));
    expect(r.d.candidate).toBe(1);
    expect(r.d.refused_shape).toBe(1);
    expect(r.d.evicted).toBe(1);
  });

  for (const change of ['opt-out', 'app sockets never'] as const) {
    it(`a per-endpoint ${change} reaches an established connection: the rest goes over TCP, byte-exact`, async () => {
      await mode(true);
      const agent = await c.pod('a').agent();
      try {
        const before = counters();
        // 64 chunks 20 ms apart (x SCALE): the state changes mid-stream.
        const x = agent.xfer({ host: c.pod('b').ip4, port: 8080, bytes: 4 << 20, chunk: 64 << 10, pauseMs: 20 * SCALE });
        await new Promise((r) => setTimeout(r, 400 * SCALE));
        const a = c.pod('a').endpoint(change === 'opt-out' ? { accelerate: false } : { appSockets: 'never' });
        await c.worker('n1').apply(state({ generation: ++generation, endpoints: [a, c.pod('b').endpoint(), c.pod('c').endpoint()] }));
        const r = await x;
        const d = delta(before, counters());
        expect(r.error).toBeUndefined();
        expect(r.recvSha).toBe(r.sentSha);
        expect(d.policy_off).toBeGreaterThanOrEqual(1);
        expect(d.bytes_redirected).toBeGreaterThan(0);
        expect(d.bytes_tcp).toBeGreaterThan(0);
      } finally {
        agent.close();
      }
    });
  }
});
