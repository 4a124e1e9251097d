/**
 * includeOutboundIPRanges / excludeOutboundIPRanges as the kernel applies
 * them: the LPM tries keyed by pod address + destination, IPv4 and IPv6,
 * exclusion winning over inclusion whatever the prefix lengths. A refused
 * destination never lets the app socket into the sockhash.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, type Agent } from '../harness/cluster.js';
import { measure } from '../harness/counters.js';

describe('datapath - outbound IP ranges (LPM) in the kernel', () => {
  let c: TestCluster;
  let a: Agent;
  beforeAll(async () => {
    c = new TestCluster(['n1']);
    await c.addPod({ name: 'a', node: 'n1', index: 1, meshed: true });
    for (const [name, index] of [['b', 2], ['d', 3], ['e', 130]] as const) await c.addPod({ name, node: 'n1', index, meshed: true, servers: { 8080: 'echo' } });
    const ep = c.pod('a').endpoint({
      outbound: { excludePorts: [], includeCidrs: ['10.77.0.0/25', 'fd77::/121'], excludeCidrs: ['10.77.0.3/32', 'fd77::3/128'] },
    });
    await c.startWorker('n1', c.state('n1', { endpoints: [ep, ...['b', 'd', 'e'].map((n) => c.pod(n).endpoint())] }));
    a = await c.pod('a').agent();
  });
  afterAll(async () => {
    a?.close();
    await c?.cleanup();
  });

  const cases = [
    { to: 'b', family: 4, outbound: true, why: 'inside an included /25' },
    { to: 'd', family: 4, outbound: false, why: 'a /32 excluded inside the included /25' },
    { to: 'e', family: 4, outbound: false, why: 'outside every included range' },
    { to: 'b', family: 6, outbound: true, why: 'inside an included /121' },
    { to: 'd', family: 6, outbound: false, why: 'a /128 excluded inside the included /121' },
    { to: 'e', family: 6, outbound: false, why: 'outside every included range (::82)' },
  ] as const;
  for (const k of cases) {
    it(`a -> ${k.to} over IPv${k.family}: ${k.outbound ? 'accelerated' : 'refused'} (${k.why})`, async () => {
      const host = k.family === 4 ? c.pod(k.to).ip4 : c.pod(k.to).ip6;
      const { result, d } = await measure(c.worker('n1'), () => a.xfer({ host, port: 8080, bytes: 64 << 10, halfClose: false }));
      expect(result.recvSha).toBe(result.sentSha);
      expect(d.paired_outbound).toBe(k.outbound ? 1 : 0);
      expect(d.refused_cidr).toBe(k.outbound ? 0 : 1);
      // The mesh and inbound hops do not depend on a's ranges.
      expect(d.paired_mesh).toBe(1);
      expect(d.paired_inbound).toBe(1);
    });
  }
});
