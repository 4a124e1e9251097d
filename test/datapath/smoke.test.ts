import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from '../harness/cluster.js';

describe('datapath - smoke', () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = new TestCluster(['n1']);
    await c.addPod({ name: 'a', node: 'n1', index: 1, meshed: true });
    await c.addPod({ name: 'b', node: 'n1', index: 2, meshed: true, servers: { 8080: 'echo' } });
    await c.startWorker('n1');
  });
  afterAll(async () => c?.cleanup());

  it('redirects all three hops of a request', async () => {
    const agent = await c.pod('a').agent();
    const r = await agent.xfer({ host: c.pod('b').ip4, port: 8080, bytes: 1 << 20 });
    agent.close();
    const k = c.worker('n1').counters();
    console.log(r, k);
    expect(r.error).toBeUndefined();
    expect(r.recvSha).toBe(r.sentSha);
  });
});
