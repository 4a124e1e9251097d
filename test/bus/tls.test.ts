/**
 * bus over TLS, as deployed: a real nats-server with a `tls {}` block (a
 * throwaway CA and server certificate made with openssl) and the accounts
 * of proto/src/accounts.ts. A plain-text client is refused; the control
 * plane (setupBus, Reconciler, BusPublisher) and a real NodeFollower, each
 * with its own account's credentials and `tls: { caFile }`, deliver a state
 * end to end; a client that trusts another CA is refused.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { NatsConnection } from '@nats-io/transport-node';
import { busAccounts, renderAccounts, userName, type NodeState } from '@meshlane/proto';
import { NodeFollower } from '@meshlane/node-worker';
import { BusPublisher } from '../../controlplane/src/bus/publisher.js';
import { DEFAULT_LIMITS, setupBus } from '../../controlplane/src/bus/setup.js';
import { ClusterModel } from '../../controlplane/src/model/model.js';
import { Reconciler } from '../../controlplane/src/reconcile/reconciler.js';
import { NatsServer } from '../harness/nats.js';
import { podClass } from '../harness/podclass.js';
import { waitFor } from '../harness/wait.js';
import { makeCa, makeCerts, plainText } from '../deploy/pki.js';

const log = pino({ level: process.env.MESHLANE_TEST_LOG ?? 'silent' });
const WAIT = 8000;
/** A node name with a dot: its NATS token and account name differ from it. */
const NODE = 'node-a.example';

const pw = () => randomBytes(16).toString('hex');
const cred = {
  controlplane: { user: userName({ role: 'controlplane' }), password: pw() },
  auditor: { user: userName({ role: 'auditor' }), password: pw() },
  node: { user: userName({ role: 'worker', node: NODE }), password: pw() },
};

/** Rejects after `ms`: a connect that hangs fails the test instead of the suite. */
async function within<T>(p: Promise<T>, what: string, ms = WAIT): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(t);
  }
}

describe('bus over TLS (real nats-server, accounts, openssl certificates)', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'mlt-tls-'));
  let nats: NatsServer | undefined;
  const conns: NatsConnection[] = [];
  const followers: NodeFollower[] = [];
  let pub: BusPublisher | undefined;

  afterEach(async () => {
    await pub?.flush().catch(() => {});
    for (const f of followers.splice(0)) await within(f.stop(), 'follower stop').catch(() => {});
    for (const nc of conns.splice(0)) await within(nc.close(), 'close').catch(() => {});
    await nats?.stop();
    nats = undefined;
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('refuses plain text and a foreign CA; the control plane and a worker deliver a state over TLS', async () => {
    const pki = makeCerts(join(tmp, 'server'), ['IP:127.0.0.1', 'DNS:localhost']);
    const other = makeCa(join(tmp, 'other'), 'someone-else');
    const accounts = busAccounts({ controlplane: cred.controlplane, auditor: cred.auditor, nodes: [{ node: NODE, credential: cred.node }] });
    nats = await NatsServer.start({
      config: [`tls {`, `  cert_file: ${JSON.stringify(pki.cert)}`, `  key_file: ${JSON.stringify(pki.key)}`, `  ca_file: ${JSON.stringify(pki.ca)}`, `  timeout: 2`, `}`, renderAccounts(accounts)].join('\n'),
    });
    const server = nats;
    const connect = async (c: { user: string; password: string }, caFile = pki.ca): Promise<NatsConnection> => {
      const nc = await within(server.connect({ user: c.user, pass: c.password, tls: { caFile }, timeout: 5000, reconnect: false }), `connect as ${c.user}`);
      conns.push(nc);
      return nc;
    };

    // Plain text: the server asks for TLS in its INFO and hangs up on protocol in the clear.
    const plain = await plainText(server.port, cred.node.user, cred.node.password);
    expect(plain.info).toMatch(/^INFO .*"tls_required":true/);
    expect(plain.closed).toBe(true);
    expect(plain.after).not.toMatch(/PONG|\+OK/);

    // A client that trusts another CA does not get past the handshake, whatever its password.
    const foreign = await within(
      server.connect({ user: cred.node.user, pass: cred.node.password, tls: { caFile: other.ca }, timeout: 5000, reconnect: false }).then(
        (nc) => {
          conns.push(nc);
          return undefined;
        },
        (err: unknown) => err,
      ),
      'connect with a foreign CA',
    );
    expect(foreign, 'a connection trusting another CA was accepted').toBeInstanceOf(Error);
    expect(String((foreign as Error).message) + String((foreign as Error).cause ?? '')).toMatch(/certificate/i);

    // The control plane's side, in its own account (the one with JetStream).
    const cp = await connect(cred.controlplane);
    expect(cp.info?.tls_required).toBe(true);
    const kv = await within(setupBus(cp, DEFAULT_LIMITS), 'setupBus');
    const model = new ClusterModel({ syncGate: false });
    const rec = new Reconciler(model, { switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 << 24 }, autoFlush: false });
    const publisher = new BusPublisher(cp, kv, { epoch: 1, source: 'controlplane/test', logger: log, snapshotIntervalMs: 20 });
    pub = publisher;
    const published: Array<Promise<void>> = [];
    rec.onUpdate((u) => published.push(publisher.publish(u)));

    // The worker's side: the real follower on the node's own account.
    const applied: NodeState[] = [];
    const wnc = await connect(cred.node);
    const follower = new NodeFollower({ nc: wnc, node: NODE, reconciler: { apply: (s) => (applied.push(s), { changed: {} }) }, logger: log, pollMs: 200, maxBackoffMs: 400, requestTimeoutMs: 1000 });
    followers.push(follower);
    follower.start();

    const step = async (nodes: string[]) => {
      rec.touch(nodes);
      rec.flush();
      await within(Promise.all(published.splice(0)), 'publish');
      await within(publisher.flush(), 'snapshot');
    };
    await step(model.upsertPod(podClass('x', NODE, 1)));
    await step(model.upsertPod(podClass('y', NODE, 2)));
    await waitFor('both pods applied on the node over TLS', () => applied.at(-1)?.endpoints.length === 2, WAIT);
    const last = applied.at(-1)!;
    expect(last.node).toBe(NODE);
    expect(last.generation).toBe(2);
    expect(last.endpoints.map((e) => e.ips).flat().sort()).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(follower.synced).toBe(true);
    expect(follower.lastError).toBeUndefined();
  });
});
