/**
 * The local demo: two simulated nodes, meshed pods in network namespaces
 * with real istio-iptables rules and sidecars, one meshlane worker per node
 * with real BPF programs, and real traffic. Prints which hops were
 * accelerated, the counters, and plain vs accelerated latency side by side.
 * Cleans up everything it created, also on failure or Ctrl-C.
 */
import { join } from 'node:path';
import { TOOLS, TestCluster, type Pod } from '../harness/cluster.js';
import { delta } from '../harness/counters.js';

const say = (s = '') => process.stdout.write(`${s}\n`);

async function rr(pod: Pod, host: string, size: number): Promise<{ p50_us: number; p99_us: number }> {
  const r = await pod.run([join(TOOLS, 'pingpong'), '--json', '--mode', 'rr', '--size', String(size), '--count', '3000', '--warmup', '300', '--host', host, '--port', '8080']);
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as { p50_us: number; p99_us: number };
}

async function main(): Promise<void> {
  const c = new TestCluster(['node-1', 'node-2']);
  process.once('SIGINT', () => void c.cleanup().then(() => process.exit(130)));
  try {
    say('meshlane datapath demo: 2 simulated nodes, pods as network namespaces, real BPF\n');
    const client = await c.addPod({ name: 'productpage', node: 'node-1', index: 1, meshed: true });
    const server = await c.addPod({ name: 'reviews', node: 'node-1', index: 2, meshed: true, servers: { 8080: 'echo' } });
    const remote = await c.addPod({ name: 'ratings', node: 'node-2', index: 3, meshed: true, servers: { 8080: 'echo' } });
    const legacy = await c.addPod({ name: 'legacy', node: 'node-1', index: 4, meshed: false, servers: { 8080: 'echo' } });
    for (const p of [client, server, remote, legacy]) {
      say(`  pod ${p.name.padEnd(12)} ${p.spec.node}  ${p.ip4.padEnd(11)} ${p.spec.meshed ? 'sidecar (uid 1337, REDIRECT 15001/15006)' : 'no sidecar'}`);
    }
    let gen = 1;
    const w1 = await c.startWorker('node-1');
    await c.startWorker('node-2');
    say('\n  workers loaded and attached the BPF programs for node-1 and node-2\n');

    const agent = await client.agent();
    for (const [label, target] of [
      ['productpage -> reviews  (same node, both meshed)', server],
      ['productpage -> ratings  (other node)', remote],
      ['productpage -> legacy   (same node, no sidecar)', legacy],
    ] as const) {
      const before = w1.counters();
      const r = await agent.xfer({ host: target.ip4, port: 8080, bytes: 4 << 20, halfClose: false });
      await new Promise((res) => setTimeout(res, 50));
      const d = delta(before, w1.counters());
      const ok = r.recvSha === r.sentSha ? 'sha256 ok' : 'SHA256 MISMATCH';
      say(`  ${label}: 4 MiB echoed, ${ok}`);
      say(`      accelerated hops: app->sidecar ${d.paired_outbound}, sidecar->sidecar ${d.paired_mesh}, sidecar->app ${d.paired_inbound}; redirected ${(d.bytes_redirected / 2 ** 20).toFixed(1)} MiB`);
    }
    agent.close();

    say('\n  round trip productpage -> reviews through both sidecars, 3000 requests each, plain vs meshlane:\n');
    say('  | size    | plain p50 / p99 (us) | meshlane p50 / p99 (us) | p50 speedup |');
    say('  |---------|----------------------|-------------------------|-------------|');
    for (const size of [1, 1024, 16384]) {
      await w1.apply(c.state('node-1', { enabled: false, generation: ++gen }));
      const plain = await rr(client, server.ip4, size);
      await w1.apply(c.state('node-1', { enabled: true, generation: ++gen }));
      const fast = await rr(client, server.ip4, size);
      say(`  | ${`${size} B`.padEnd(7)} | ${`${plain.p50_us.toFixed(1)} / ${plain.p99_us.toFixed(1)}`.padEnd(20)} | ${`${fast.p50_us.toFixed(1)} / ${fast.p99_us.toFixed(1)}`.padEnd(23)} | ${`${(plain.p50_us / fast.p50_us).toFixed(2)}x`.padEnd(11)} |`);
    }

    const k = w1.counters();
    say('\n  node-1 counters (meshlane-worker status):');
    for (const name of ['paired_outbound', 'paired_mesh', 'paired_inbound', 'not_candidate', 'switch_off', 'msg_redirected', 'bytes_redirected', 'held'] as const) {
      say(`    ${name.padEnd(18)} ${k[name]}`);
    }
    say('\n  cleaning up: workers uninstalled, namespaces and cgroups removed');
  } finally {
    await c.cleanup();
  }
}

main().catch((err: Error) => {
  process.stderr.write(`demo failed: ${err.message}\n`);
  process.exit(1);
});
