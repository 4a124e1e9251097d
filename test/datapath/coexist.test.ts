/**
 * Another sockops program on meshlane's cgroup (as Cilium, Calico or an RTT
 * exporter attach one, through bpf_links that coexist): meshlane keeps the
 * other program's callback flags, and stays correct, its side tables clean,
 * when the other program clears meshlane's flags instead.
 */
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Datapath, libbpf } from '@meshlane/node-worker';
import { PIN_ROOT, TOOLS, TestCluster } from '../harness/cluster.js';
import { delta, measure } from '../harness/counters.js';
import { waitFor } from '../harness/wait.js';

const BPF_CGROUP_SOCK_OPS = 3;

/** Loads one program of other-sockops.bpf.o and attaches it to a cgroup with a bpf_link; detach() undoes both. */
function attachOther(cgroup: string, program: 'other_rtt' | 'other_clear') {
  const obj = libbpf.openObject(join(TOOLS, 'other-sockops.bpf.o'));
  libbpf.loadObject(obj);
  const cg = openSync(cgroup, 'r');
  let link: number;
  try {
    link = libbpf.linkCreate(libbpf.programFd(obj, program), cg, BPF_CGROUP_SOCK_OPS);
  } finally {
    closeSync(cg);
  }
  const counts = libbpf.maps(obj).find((m) => libbpf.mapName(m) === 'other_counts')!;
  return {
    count(slot: number): number {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(slot, 0);
      const v = Buffer.alloc(8);
      libbpf.lookup(libbpf.mapFd(counts), key, v);
      return Number(v.readBigUInt64LE(0));
    },
    detach() {
      libbpf.linkDetach(link);
      libbpf.closeFd(link);
      libbpf.closeObject(obj);
    },
  };
}

describe('datapath - another sockops program on the same cgroup', () => {
  let c: TestCluster | undefined;
  let other: ReturnType<typeof attachOther> | undefined;
  afterEach(async () => {
    other?.detach();
    other = undefined;
    await c?.cleanup();
    c = undefined;
  });

  async function cluster(): Promise<TestCluster> {
    c = new TestCluster(['n1', 'n2']);
    await c.addPod({ name: 'a', node: 'n1', index: 1, meshed: true });
    await c.addPod({ name: 'b', node: 'n1', index: 2, meshed: true, servers: { 8080: 'echo' } });
    await c.addPod({ name: 'e', node: 'n2', index: 3, meshed: true, servers: { 8080: 'echo' } });
    return c;
  }

  it("keeps the other program's callback flags: both work", async () => {
    const cl = await cluster();
    // Attached first, so it runs first: meshlane sets its flag after it.
    other = attachOther(cl.nodeCgroup('n1'), 'other_rtt');
    const w = await cl.startWorker('n1');
    const agent = await cl.pod('a').agent();
    try {
      const { result, d } = await measure(w, () => agent.many({ host: cl.pod('b').ip4, port: 8080, bytes: 256 * 1024, count: 20 }));
      expect(result.errors).toEqual([]);
      expect(result.mismatches).toBe(0);
      expect(d.paired_mesh).toBe(20);
      await waitFor('the closes', () => other!.count(1) + other!.count(2) >= 20, 5000);
      // Every close the other program saw still carried its RTT flag.
      expect(other.count(2)).toBe(0);
      expect(other.count(1)).toBeGreaterThanOrEqual(20);
    } finally {
      agent.close();
    }
  });

  it('stays correct when the other program clears its flags, and the sweep empties the side tables', async () => {
    const cl = await cluster();
    const w = await cl.startWorker('n1', cl.state('n1'), ['--sweep-interval', '2']);
    // Attached after meshlane, so it runs after it and takes its close callback away.
    other = attachOther(cl.nodeCgroup('n1'), 'other_clear');
    const agent = await cl.pod('a').agent();
    try {
      const before = w.counters();
      const r = await agent.many({ host: cl.pod('b').ip4, port: 8080, bytes: 256 * 1024, count: 20 });
      expect(r.errors).toEqual([]);
      expect(r.mismatches).toBe(0);
      const d = delta(before, w.counters());
      expect(d.paired_mesh).toBe(20);
      expect(d.bytes_redirected).toBeGreaterThan(20 * 256 * 1024);
      const far = await agent.xfer({ host: cl.pod('e').ip4, port: 8080, bytes: 64 * 1024, halfClose: false });
      expect(far.recvSha).toBe(far.sentSha);
      // No close callback reached meshlane.
      expect(delta(before, w.counters()).closed).toBe(0);
      const dp = Datapath.openPinned(PIN_ROOT, w.pinNode);
      try {
        // What a socket that vanished without its close callback leaves when
        // its accept never came (a pending client) or it never wrote (a link).
        const gone = Buffer.alloc(8, 0xee);
        const pendingKey = Buffer.alloc(8, 0x5a);
        const pendingValue = Buffer.alloc(64);
        gone.copy(pendingValue, 0);
        dp.maps.ml_pending.update(pendingKey, pendingValue);
        dp.maps.ml_links.update(gone, Buffer.alloc(16, 1));
        const left = () => ({ pending: dp.maps.ml_pending.keys().length, links: dp.maps.ml_links.keys().length, socks: dp.maps.ml_socks.keys().length });
        // (A socket of the traffic above may still be leaving the sockhash.)
        expect(left()).toMatchObject({ pending: 1, links: 1 });
        // The sweep finds their sockets gone from the sockhash and deletes them.
        await waitFor('side tables empty', () => JSON.stringify(left()) === JSON.stringify({ pending: 0, links: 0, socks: 0 }), 10_000);
      } finally {
        dp.close();
      }
    } finally {
      agent.close();
    }
  });
});
