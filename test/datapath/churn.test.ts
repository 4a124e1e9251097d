/**
 * Churn: thousands of short connections through all three hops from a pod
 * whose ephemeral port range is small enough that every port is reused
 * many times (clients close first and leave TIME_WAIT behind; tcp_tw_reuse
 * and REDIRECT's source-port rewrite on a clash do the rest). Every byte
 * of every connection is checked, and afterwards every map that holds
 * per-connection state is empty again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, type Agent } from '../harness/cluster.js';
import { sh } from '../harness/exec.js';

const ROUNDS = 30;
const PER_ROUND = 100;

describe('datapath - churn with port reuse and TIME_WAIT', () => {
  let c: TestCluster;
  let a: Agent;
  beforeAll(async () => {
    c = new TestCluster(['n1']);
    await c.addPod({ name: 'a', node: 'n1', index: 1, meshed: true });
    await c.addPod({ name: 'b', node: 'n1', index: 2, meshed: true, servers: { 8080: 'echo' } });
    // 2000 ports for 6000 connects (the app's and its sidecar's upstream
    // one per request): each port is reused about three times, more than a
    // second apart (tcp_tw_reuse's rule for a port in TIME_WAIT).
    sh('ip', ['netns', 'exec', c.pod('a').netns, 'sysctl', '-qw', 'net.ipv4.ip_local_port_range=40000 41999', 'net.ipv4.tcp_tw_reuse=1']);
    await c.startWorker('n1');
    a = await c.pod('a').agent();
  });
  afterAll(async () => {
    a?.close();
    await c?.cleanup();
  });

  const occupancy = () => (c.worker('n1').statusJson() as { maps: Record<string, { entries: number | null }> }).maps;

  it(`${ROUNDS * PER_ROUND} short connections: every byte exact, no pair crossed, maps empty after`, async () => {
    const before = c.worker('n1').counters();
    let errors: string[] = [];
    let mismatches = 0;
    let bytes = 0;
    for (let i = 0; i < ROUNDS; i++) {
      const pace = new Promise((r) => setTimeout(r, 150));
      const r = await a.many({ host: c.pod('b').ip4, port: 8080, bytes: 2000 + i, count: PER_ROUND });
      errors = errors.concat(r.errors);
      mismatches += r.mismatches;
      bytes += r.bytes;
      await pace;
    }
    expect(errors).toEqual([]);
    expect(mismatches).toBe(0);
    expect(bytes).toBe(PER_ROUND * Array.from({ length: ROUNDS }, (_, i) => 2000 + i).reduce((x, y) => x + y, 0));
    const after = c.worker('n1').counters();
    const n = ROUNDS * PER_ROUND;
    expect(after.paired_outbound - before.paired_outbound).toBe(n);
    expect(after.paired_mesh - before.paired_mesh).toBe(n);
    expect(after.paired_inbound - before.paired_inbound).toBe(n);
    expect(after.ambiguous - before.ambiguous).toBe(0);
    // Close callbacks are asynchronous to the apps; the side tables and the
    // sockhash drain as the last sockets close.
    const end = Date.now() + 10_000;
    let maps = occupancy();
    while (Date.now() < end && (maps.ml_pending?.entries || maps.ml_links?.entries || maps.ml_socks?.entries)) {
      await new Promise((r) => setTimeout(r, 100));
      maps = occupancy();
    }
    expect({ pending: maps.ml_pending?.entries, links: maps.ml_links?.entries, socks: maps.ml_socks?.entries }).toEqual({ pending: 0, links: 0, socks: 0 });
  });
});
