/**
 * One process of simulated workers for bench:e2e-cluster: a real
 * NodeFollower per node (its own NATS connection, the node's own account),
 * a StateApplier that reports, for every applied state, each pod's
 * accelerate flag with the monotonic time (CLOCK_MONOTONIC through
 * process.hrtime, comparable across processes of one machine).
 *
 * argv: NATS_URL node[:user:password] ...   stdout: one JSON line per report.
 */
import { connect } from '@nats-io/transport-node';
import { pino } from 'pino';
import type { NodeState } from '@meshlane/proto';
import { NodeFollower, type StateApplier } from '@meshlane/node-worker';

const [url, ...specs] = process.argv.slice(2);
const log = pino({ level: process.env.MESHLANE_TEST_LOG ?? 'silent' });
const followers: NodeFollower[] = [];

class Reporter implements StateApplier {
  private last = new Map<string, boolean>();
  constructor(private readonly node: string) {}
  apply(state: NodeState) {
    const t = Number(process.hrtime.bigint()) / 1e6;
    const changed: Array<[string, boolean]> = [];
    for (const e of state.endpoints) {
      if (this.last.get(e.pod) !== e.accelerate) changed.push([e.pod, e.accelerate]);
      this.last.set(e.pod, e.accelerate);
    }
    process.stdout.write(`${JSON.stringify({ node: this.node, generation: state.generation, endpoints: state.endpoints.length, t, changed })}\n`);
    return { changed: {} };
  }
}

async function main(): Promise<void> {
  for (const spec of specs) {
    const [node, user, pass] = spec.split(':');
    const nc = await connect({ servers: url, name: `bench-worker-${node}`, maxReconnectAttempts: -1, ...(user ? { user, pass } : {}) });
    const f = new NodeFollower({ nc, node: node!, reconciler: new Reporter(node!), logger: log });
    f.start();
    followers.push(f);
  }
  process.stdout.write(`${JSON.stringify({ ready: specs.length })}\n`);
}

process.once('SIGTERM', () => {
  void Promise.all(followers.map((f) => f.stop())).finally(() => process.exit(0));
});
main().catch((err: Error) => {
  process.stderr.write(`${err.stack ?? err.message}\n`);
  process.exit(1);
});
