/**
 * The safety rules of the design brief: acceleration may only short-circuit
 * bytes that would have reached the same peer socket anyway. Each case sends
 * real bytes (checked by sha256) and asserts from the counters which hops
 * were paired and which were refused, and why.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Datapath } from '@meshlane/node-worker';
import { PIN_ROOT, TOOLS, TestCluster, type Agent } from '../harness/cluster.js';
import { delta, measure } from '../harness/counters.js';

// Both ways of attaching the sk_msg program: the bpf_link (6.10+) and the
// classic attach to the sockhash that older kernels need. The rules must
// hold the same on either, so the whole suite runs for each.
describe.each([
  ['probed attach (bpf_link from 6.10 on)', 'auto'],
  ['classic sk_msg attach to the sockhash', 'map'],
])('datapath - safety rules, %s', (_what, attach) => {
  let c: TestCluster;
  const saved = process.env.MESHLANE_SK_MSG_ATTACH;
  const agents = new Map<string, Agent>();
  const agent = async (pod: string): Promise<Agent> => {
    let a = agents.get(pod);
    if (!a) agents.set(pod, (a = await c.pod(pod).agent()));
    return a;
  };

  beforeAll(async () => {
    process.env.MESHLANE_SK_MSG_ATTACH = attach;
    c = new TestCluster(['n1', 'n2']);
    await c.addPod({ name: 'a', node: 'n1', index: 1, meshed: true });
    await c.addPod({ name: 'b', node: 'n1', index: 2, meshed: true, excludeInboundPorts: [8081], servers: { 8080: 'echo', 8081: 'echo' } });
    await c.addPod({ name: 'x', node: 'n1', index: 3, meshed: true, excludeOutboundPorts: [8080, 8081] });
    await c.addPod({ name: 'optout', node: 'n1', index: 4, meshed: true, servers: { 8080: 'echo' } });
    await c.addPod({ name: 'plain', node: 'n1', index: 5, meshed: false, servers: { 8080: 'echo' } });
    await c.addPod({ name: 'e', node: 'n2', index: 6, meshed: true, servers: { 8080: 'echo' } });
    await c.startWorker('n1', baseState(1));
    await c.startWorker('n2');
  });
  afterAll(async () => {
    for (const a of agents.values()) a.close();
    agents.clear();
    await c?.cleanup();
    if (saved === undefined) delete process.env.MESHLANE_SK_MSG_ATTACH;
    else process.env.MESHLANE_SK_MSG_ATTACH = saved;
  });

  it('uses the attach it was asked for (auto: what the kernel probe found)', () => {
    const out = c.worker('n1').statusJson() as { links: Array<{ name: string; attach: string }>; kernel: { skMsgAttach: string } };
    expect(out.links.find((l) => l.name === 'sk_msg')?.attach).toBe(attach === 'map' ? 'map' : out.kernel.skMsgAttach);
  });

  function baseState(generation: number, opts: { enabled?: boolean } = {}) {
    const endpoints = ['a', 'b', 'x', 'optout'].map((p) => c.pod(p).endpoint(p === 'optout' ? { accelerate: false } : {}));
    return c.state('n1', { generation, endpoints, ...opts });
  }

  async function send(from: string, to: string, port = 8080, node = 'n1') {
    const a = await agent(from);
    const { result, d } = await measure(c.worker(node), () => a.xfer({ host: c.pod(to).ip4, port, bytes: 256 * 1024, halfClose: false }));
    expect(result.error).toBeUndefined();
    expect(result.recvSha).toBe(result.sentSha);
    return d;
  }

  it('sanity: the same node, meshed to meshed, is accelerated on every hop', async () => {
    const d = await send('a', 'b');
    expect([d.paired_outbound, d.paired_mesh, d.paired_inbound]).toEqual([1, 1, 1]);
  });

  it('an excluded inbound port: Envoy A reaches app B directly and that pair is refused', async () => {
    const d = await send('a', 'b', 8081);
    expect(d.paired_outbound).toBe(1); // app a -> its own sidecar is still fine
    expect(d.paired_mesh).toBe(0);
    expect(d.paired_inbound).toBe(0);
    // Refused by Envoy A's own side, before its socket could join.
    expect(d.refused_port).toBe(1);
    expect(d.refused_shape).toBe(0);
    expect(d.candidate).toBe(1); // app a's, paired with its sidecar
  });

  it('an excluded outbound port: app X reaches sidecar B without its own sidecar and is refused', async () => {
    const d = await send('x', 'b', 8080);
    expect(d.paired_outbound).toBe(0);
    expect(d.paired_mesh).toBe(0);
    // x's app socket never joins: its port is excluded before it could.
    expect(d.refused_port).toBe(1);
    expect(d.refused_shape).toBe(0);
    expect(d.paired_inbound).toBe(1); // B's own sidecar -> B's app
  });

  it('app -> remote app with no sidecar in between is never paired', async () => {
    // x does not capture 8081 outbound, b does not capture it inbound.
    const d = await send('x', 'b', 8081);
    expect([d.paired_outbound, d.paired_mesh, d.paired_inbound]).toEqual([0, 0, 0]);
    expect(d.refused_port).toBe(1);
    expect(d.candidate).toBe(0);
    expect(d.bytes_redirected).toBe(0);
  });

  it('an opted-out pod stays on the normal path as client and as server', async () => {
    let d = await send('optout', 'b');
    expect(d.paired_outbound).toBe(0);
    expect(d.paired_mesh).toBe(0);
    expect(d.opted_out).toBeGreaterThanOrEqual(2);
    d = await send('a', 'optout');
    expect(d.paired_outbound).toBe(1);
    expect(d.paired_mesh).toBe(0);
    expect(d.paired_inbound).toBe(0);
  });

  it('an unmeshed pod stays on the normal path as client and as server', async () => {
    let d = await send('plain', 'b');
    expect(d.paired_outbound).toBe(0);
    expect(d.paired_mesh).toBe(0);
    expect(d.not_candidate).toBeGreaterThanOrEqual(1);
    d = await send('a', 'plain');
    expect(d.paired_outbound).toBe(1);
    expect(d.paired_mesh).toBe(0);
    expect(d.paired_inbound).toBe(0);
  });

  it('pods on different simulated nodes are never paired, on either node', async () => {
    const before2 = c.worker('n2').counters();
    const d1 = await send('a', 'e');
    const after2 = c.worker('n2').counters();
    expect(d1.paired_outbound).toBe(1);
    expect(d1.paired_mesh).toBe(0);
    expect(after2.paired_mesh - before2.paired_mesh).toBe(0);
    expect(after2.paired_inbound - before2.paired_inbound).toBe(1); // e's own sidecar -> e's app
  });

  it('two connections that claim the same sequence numbers are ambiguous: neither is recorded', async () => {
    // TCP_REPAIR makes established sockets with chosen sequence numbers and
    // no handshake (no packet leaves): the collision a real peer could never
    // be told apart from. Run as root for CAP_NET_ADMIN (root is not the proxy uid).
    const w = c.worker('n1');
    const before = w.counters();
    const r = await c.pod('a').run([`${TOOLS}/repair-connect`, c.pod('a').ip4, c.pod('b').ip4, '80', '1000', '2000', '2'], 0);
    expect(r.code, r.stderr).toBe(0);
    const d = delta(before, w.counters());
    expect(d.candidate).toBe(1);
    expect(d.ambiguous).toBe(1);
    // The first claimant's entry is gone too: an accept with these numbers finds nothing.
    const dp = Datapath.openPinned(PIN_ROOT, w.pinNode);
    try {
      const key = Buffer.alloc(8);
      key.writeUInt32LE(1000, 0);
      key.writeUInt32LE(2000, 4);
      expect(dp.maps.ml_pending.lookup(key)).toBeUndefined();
    } finally {
      dp.close();
    }
  });

  it('the global kill switch pairs nothing new', async () => {
    const w = c.worker('n1');
    await w.apply(baseState(4, { enabled: false }));
    try {
      const d = await send('a', 'b');
      expect([d.paired_outbound, d.paired_mesh, d.paired_inbound]).toEqual([0, 0, 0]);
      expect(d.switch_off).toBeGreaterThanOrEqual(2);
      expect(d.bytes_redirected).toBe(0);
    } finally {
      await w.apply(baseState(5));
    }
  });
});
