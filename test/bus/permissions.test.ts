/**
 * The per-node NATS authorization of proto/src/permissions.ts against a real
 * nats-server (2.9.10, JetStream) and the real clients (@nats-io 3.4): what
 * each principal can do, and that everything else is refused by the server.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nkeyAuthenticator, nkeys, type NatsConnection, type Msg } from '@nats-io/transport-node';
import { AckPolicy, jetstream, jetstreamManager, type JetStreamClient } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { DELTA_STREAM, AUDIT_STREAM, SNAPSHOT_BUCKET, subjects } from '@meshlane/proto';
import { NatsServer } from '../harness/nats.js';
import {
  SNAPSHOT_STREAM,
  busUsers,
  deltaConsumerName,
  inboxPrefix,
  renderAuthorization,
  renderServerConfig,
  workerPermissions,
  type DeltaAccess,
  type Principal,
} from '../../proto/src/permissions.js';

const WAIT = 3000;
const enc = new TextEncoder();
const dec = new TextDecoder();

function pw(): string {
  return randomBytes(18).toString('base64url');
}

/** Resolves with the error or times out: never hangs. */
async function within<T>(p: Promise<T>, ms = WAIT, what = 'operation'): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`${what}: no answer in ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(t);
  }
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await within(p);
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  }
  throw new Error('expected a rejection, got success');
}

/** A denied subscription is closed by the client with a PermissionViolationError. */
async function expectSubscribeDenied(nc: NatsConnection, subject: string): Promise<void> {
  const sub = nc.subscribe(subject);
  const closed = await within(sub.closed, WAIT, `subscription to ${subject}`);
  expect(closed, subject).toBeInstanceOf(Error);
  expect(String(closed)).toMatch(/Permissions Violation for Subscription/);
}

/** A denied core publish: the server answers -ERR naming the subject (seen in status), nothing is delivered. */
async function expectPublishDenied(nc: NatsConnection, subject: string, observer?: NatsConnection): Promise<void> {
  const seen: string[] = [];
  const osub = observer?.subscribe(subject, {
    callback: (e, m) => {
      seen.push(e ? `error: ${e.message}` : m.subject);
    },
  });
  if (observer) await observer.flush();
  const status = nc.status();
  const denied = (async () => {
    for await (const s of status) {
      if (s.type === 'error' && String(s.error).includes(`Permissions Violation for Publish to "${subject}"`)) return true;
    }
    return false;
  })();
  nc.publish(subject, enc.encode('{}'));
  await nc.flush();
  // The status iterator ends when the connection closes (afterEach).
  expect(await within(denied, WAIT, `publish to ${subject}`)).toBe(true);
  if (observer) {
    await observer.flush();
    await new Promise((r) => setTimeout(r, 100));
    osub?.unsubscribe();
    expect(seen, `observer saw ${subject}`).toEqual([]);
  }
}

/** A request the server refused: nats.js rejects it with the PermissionViolationError (or a RequestError caused by it). */
function expectDenied(e: Error): void {
  const pv = e.name === 'PermissionViolationError' ? e : e.cause;
  expect(pv, String(e)).toBeInstanceOf(Error);
  expect((pv as Error).name, String(e)).toBe('PermissionViolationError');
  expect((pv as Error).message).toMatch(/Permissions Violation for Publish/);
}

describe('NATS per-node permissions (real nats-server)', () => {
  let server: NatsServer;
  const conns: NatsConnection[] = [];
  const cred = {
    controlplane: { user: 'controlplane', password: pw() },
    auditor: { user: 'auditor', password: pw() },
    nodeA: { user: 'node-node-a', password: pw() },
  };
  const nodeBKeys = nkeys.createUser();
  const nodeBSeed = nodeBKeys.getSeed();

  async function as(p: Principal): Promise<NatsConnection> {
    const base = { inboxPrefix: inboxPrefix(p), timeout: WAIT, reconnect: false };
    let nc: NatsConnection;
    if (p.role === 'controlplane') nc = await server.connect({ ...base, ...cred.controlplane, pass: cred.controlplane.password });
    else if (p.role === 'auditor') nc = await server.connect({ ...base, user: cred.auditor.user, pass: cred.auditor.password });
    else if (p.node === 'node-a') nc = await server.connect({ ...base, user: cred.nodeA.user, pass: cred.nodeA.password });
    else nc = await server.connect({ ...base, authenticator: nkeyAuthenticator(nodeBSeed) });
    conns.push(nc);
    return nc;
  }

  function js(nc: NatsConnection, p: Principal): JetStreamClient {
    return jetstream(nc, { timeout: WAIT, watcherPrefix: inboxPrefix(p) });
  }

  let cp: NatsConnection;

  async function setup(deltaAccess: DeltaAccess): Promise<void> {
    const users = busUsers({
      deltaAccess,
      controlplane: cred.controlplane,
      auditor: cred.auditor,
      nodes: [
        { node: 'node-a', credential: cred.nodeA },
        { node: 'node-b', credential: { nkey: nodeBKeys.getPublicKey() } },
      ],
    });
    server = await NatsServer.start({ config: renderAuthorization(users) });
    // The control plane sets the bus up: bucket, streams, one snapshot and one delta per node.
    cp = await as({ role: 'controlplane' });
    const cpjs = js(cp, { role: 'controlplane' });
    const jsm = await jetstreamManager(cp, { timeout: WAIT });
    await jsm.streams.add({ name: DELTA_STREAM, subjects: [subjects.allDeltas], allow_direct: true });
    await jsm.streams.add({ name: AUDIT_STREAM, subjects: [subjects.allAudit], allow_direct: true });
    const kv = await new Kvm(cpjs).create(SNAPSHOT_BUCKET, { history: 1 });
    for (const n of ['node-a', 'node-b']) {
      await kv.put(subjects.snapshotKey(n), JSON.stringify({ kind: 'Snapshot', node: n }));
      await cpjs.publish(subjects.delta(n), JSON.stringify({ kind: 'NodeStateDelta', node: n, from: 1, to: 2 }));
    }
  }

  async function teardown(): Promise<void> {
    await Promise.allSettled(conns.splice(0).map((c) => c.close()));
    await server?.stop();
  }

  beforeEach(() => setup('ordered'));
  afterEach(teardown);

  it('with durable delta access, scopes every consumer subject to the node', async () => {
    await teardown();
    await setup('durable');
    const cpm = await jetstreamManager(cp, { timeout: WAIT });
    for (const n of ['node-a', 'node-b']) {
      await cpm.consumers.add(DELTA_STREAM, { durable_name: deltaConsumerName(n), filter_subject: subjects.delta(n), ack_policy: AckPolicy.Explicit });
    }
    const me: Principal = { role: 'worker', node: 'node-a' };
    const nc = await as(me);
    const wjs = js(nc, me);
    const c = await within(wjs.consumers.get(DELTA_STREAM, deltaConsumerName('node-a')));
    const m = await within(c.next({ expires: 2000 }));
    expect(m?.subject).toBe(subjects.delta('node-a'));
    expect(await within(m!.ackAck())).toBe(true);
    expect((await within(c.info())).ack_floor.stream_seq).toBe(1);
    expectDenied(await rejection(wjs.consumers.get(DELTA_STREAM, deltaConsumerName('node-b'))));
    expectDenied(await rejection(nc.request(`$JS.API.CONSUMER.MSG.NEXT.${DELTA_STREAM}.${deltaConsumerName('node-b')}`, JSON.stringify({ batch: 1 }))));
    // No consumer creation at all: neither the ordered consumer nor a push consumer aimed elsewhere.
    expectDenied(await rejection(wjs.consumers.get(DELTA_STREAM, { filter_subjects: subjects.delta('node-a') })));
    expectDenied(await rejection(nc.request(`$JS.API.CONSUMER.CREATE.${DELTA_STREAM}.push1.${subjects.delta('node-a')}`, JSON.stringify({ stream_name: DELTA_STREAM, config: { name: 'push1', filter_subject: subjects.delta('node-a'), deliver_subject: subjects.status('node-b') } }))));
    // The snapshot rules are the same.
    const kv = await new Kvm(wjs).open(SNAPSHOT_BUCKET, { allow_direct: true });
    expect((await within(kv.get('node-a')))?.string()).toContain('node-a');
    expectDenied(await rejection(kv.get('node-b')));
  });

  it('lets node-a read its own snapshot and consume its own deltas, and nothing of node-b', async () => {
    const me: Principal = { role: 'worker', node: 'node-a' };
    const nc = await as(me);
    const wjs = js(nc, me);
    const kv = await new Kvm(wjs).open(SNAPSHOT_BUCKET, { allow_direct: true });

    const own = await within(kv.get(subjects.snapshotKey('node-a')));
    expect(own && JSON.parse(own.string())).toEqual({ kind: 'Snapshot', node: 'node-a' });
    expectDenied(await rejection(kv.get(subjects.snapshotKey('node-b'))));
    // The non-direct get carries the key in the payload: denied outright.
    expectDenied(await rejection(nc.request(`$JS.API.STREAM.MSG.GET.${SNAPSHOT_STREAM}`, JSON.stringify({ last_by_subj: '$KV.meshlane-snapshots.node-a' }))));
    // A bucket opened without allow_direct falls back to that: so a worker must open it with allow_direct.
    const indirect = await new Kvm(wjs).open(SNAPSHOT_BUCKET);
    expectDenied(await rejection(indirect.get(subjects.snapshotKey('node-a'))));

    // Its own deltas through an ordered pull consumer filtered to its subject.
    const c = await within(wjs.consumers.get(DELTA_STREAM, { filter_subjects: subjects.delta('node-a') }));
    const m = await within(c.next({ expires: 2000 }));
    expect(m?.subject).toBe(subjects.delta('node-a'));
    expect(m && JSON.parse(dec.decode(m.data))).toMatchObject({ node: 'node-a' });
    expect(await within(c.next({ expires: 1000 }))).toBeNull(); // node-b's delta never shows up

    // node-b's deltas: any filter but its own is refused before it reaches JetStream.
    expectDenied(await rejection(wjs.consumers.get(DELTA_STREAM, { filter_subjects: subjects.delta('node-b') })));
    expectDenied(await rejection(wjs.consumers.get(DELTA_STREAM, { filter_subjects: subjects.allDeltas })));
    expectDenied(await rejection(wjs.consumers.get(DELTA_STREAM)));
    const jsm = await jetstreamManager(nc, { timeout: WAIT });
    expectDenied(await rejection(jsm.consumers.add(DELTA_STREAM, { durable_name: 'steal', filter_subject: subjects.delta('node-b') })));
    // 2.10-style multi-filter creates carry no filter in the subject: refused.
    expectDenied(await rejection(nc.request(`$JS.API.CONSUMER.CREATE.${DELTA_STREAM}.steal`, JSON.stringify({ stream_name: DELTA_STREAM, config: { name: 'steal', filter_subjects: [subjects.delta('node-a'), subjects.delta('node-b')] } }))));
    expectDenied(await rejection(nc.request(`$JS.API.CONSUMER.CREATE.${DELTA_STREAM}`, JSON.stringify({ stream_name: DELTA_STREAM, config: { filter_subject: subjects.delta('node-b') } }))));
    expectDenied(await rejection(jsm.consumers.list(DELTA_STREAM).next()));
    // The allowed subject with another node's filter in the body: JetStream itself refuses the mismatch.
    const r: Msg = await within(
      nc.request(
        `$JS.API.CONSUMER.CREATE.${DELTA_STREAM}.steal.${subjects.delta('node-a')}`,
        JSON.stringify({ stream_name: DELTA_STREAM, config: { name: 'steal', filter_subject: subjects.delta('node-b'), ack_policy: 'none' } }),
      ),
    );
    expect(JSON.parse(dec.decode(r.data))).toMatchObject({ error: { code: 400 } });
    // Known limit of `ordered` access (see DeltaAccess): the rest of the config is the worker's, so a
    // push consumer on its own deltas can deliver them onto another node's status subject.
    // Asserted so that a server that starts refusing it is noticed; `durable` access closes it.
    const watch = await as({ role: 'auditor' });
    const misdelivered: string[] = [];
    watch.subscribe(subjects.status('node-b'), { callback: (_e, m2) => {
        misdelivered.push(dec.decode(m2.data));
      } });
    await watch.flush();
    const push: Msg = await within(
      nc.request(
        `$JS.API.CONSUMER.CREATE.${DELTA_STREAM}.push1.${subjects.delta('node-a')}`,
        JSON.stringify({ stream_name: DELTA_STREAM, config: { name: 'push1', filter_subject: subjects.delta('node-a'), ack_policy: 'none', deliver_subject: subjects.status('node-b') } }),
      ),
    );
    expect(JSON.parse(dec.decode(push.data))).toMatchObject({ name: 'push1', config: { deliver_subject: subjects.status('node-b') } });
    const until = Date.now() + WAIT;
    while (misdelivered.length < 1 && Date.now() < until) await new Promise((r2) => setTimeout(r2, 20));
    expect(misdelivered.map((d) => JSON.parse(d))).toEqual([{ kind: 'NodeStateDelta', node: 'node-a', from: 1, to: 2 }]);
    // Nor other streams, nor managing streams.
    expectDenied(await rejection(jsm.streams.info(AUDIT_STREAM)));
    expectDenied(await rejection(jsm.streams.delete(DELTA_STREAM)));
    expectDenied(await rejection(jsm.streams.purge(DELTA_STREAM)));
  });

  it('keeps node-a off node-b subjects, other inboxes and the delta subjects', async () => {
    const nc = await as({ role: 'worker', node: 'node-a' });
    const watch = await as({ role: 'auditor' });
    for (const s of [subjects.delta('node-b'), subjects.status('node-b'), subjects.audit('node-b', 'applied'), subjects.delta('node-a'), subjects.everything, '$KV.meshlane-snapshots.>', '_INBOX.>', `${inboxPrefix({ role: 'worker', node: 'node-b' })}.>`, `${inboxPrefix({ role: 'controlplane' })}.>`, '>']) {
      await expectSubscribeDenied(nc, s);
    }
    for (const s of [subjects.status('node-b'), subjects.audit('node-b', 'rejected'), subjects.delta('node-a'), subjects.delta('node-b'), '$KV.meshlane-snapshots.node-a']) {
      await expectPublishDenied(nc, s, watch);
    }
    // What it may publish: its own status and audit events, which the control plane receives.
    const got: string[] = [];
    cp.subscribe(subjects.allStatus, { callback: (_e, m) => {
        got.push(m.subject);
      } });
    cp.subscribe(subjects.allAudit, { callback: (_e, m) => {
        got.push(m.subject);
      } });
    await cp.flush();
    nc.publish(subjects.status('node-a'), '{}');
    nc.publish(subjects.audit('node-a', 'applied'), '{}');
    await nc.flush();
    const end = Date.now() + WAIT;
    while (got.length < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(got.sort()).toEqual([subjects.audit('node-a', 'applied'), subjects.status('node-a')].sort());
  });

  it('lets node-b (nkey user) read its own snapshot but not node-a', async () => {
    const me: Principal = { role: 'worker', node: 'node-b' };
    const nc = await as(me);
    const kv = await new Kvm(js(nc, me)).open(SNAPSHOT_BUCKET, { allow_direct: true });
    expect((await within(kv.get('node-b')))?.string()).toContain('node-b');
    expectDenied(await rejection(kv.get('node-a')));
  });

  it('lets the auditor read everything and publish nothing', async () => {
    const me: Principal = { role: 'auditor' };
    const nc = await as(me);
    const seen: string[] = [];
    nc.subscribe(subjects.everything, { callback: (_e, m) => {
        seen.push(m.subject);
      } });
    nc.subscribe('$KV.meshlane-snapshots.>', { callback: (_e, m) => {
        seen.push(m.subject);
      } });
    await nc.flush();
    const a = await as({ role: 'worker', node: 'node-a' });
    a.publish(subjects.status('node-a'), '{}');
    await a.flush();
    const cpjs = js(cp, { role: 'controlplane' });
    await cpjs.publish(subjects.delta('node-b'), '{}');
    await (await new Kvm(cpjs).open(SNAPSHOT_BUCKET)).put('node-b', '{"v":2}');
    const end = Date.now() + WAIT;
    while (seen.length < 3 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(seen.sort()).toEqual([subjects.delta('node-b'), subjects.status('node-a'), '$KV.meshlane-snapshots.node-b'].sort());

    // Reads: every snapshot, the key list (stream info with a subjects filter), delta history by sequence.
    const ajs = js(nc, me);
    const kv = await new Kvm(ajs).open(SNAPSHOT_BUCKET, { allow_direct: true });
    expect((await within(kv.get('node-a')))?.string()).toContain('node-a');
    expect((await within(kv.get('node-b')))?.string()).toBe('{"v":2}');
    const jsm = await jetstreamManager(nc, { timeout: WAIT });
    const si = await within(jsm.streams.info(SNAPSHOT_STREAM, { subjects_filter: '$KV.meshlane-snapshots.>' }));
    expect(Object.keys(si.state.subjects ?? {}).sort()).toEqual(['$KV.meshlane-snapshots.node-a', '$KV.meshlane-snapshots.node-b']);
    const first = await within(jsm.direct.getMessage(DELTA_STREAM, { seq: 1 }));
    expect(first?.subject).toBe(subjects.delta('node-a'));

    // Writes of every kind are refused.
    const watch = await as({ role: 'auditor' });
    for (const s of [subjects.delta('node-a'), subjects.status('node-a'), subjects.audit('node-a', 'applied'), '$KV.meshlane-snapshots.node-a']) {
      await expectPublishDenied(nc, s, watch);
    }
    expectDenied(await rejection(kv.put('node-a', '{}')));
    expectDenied(await rejection(ajs.consumers.get(DELTA_STREAM, { filter_subjects: subjects.delta('node-a') })));
    expectDenied(await rejection(jsm.streams.add({ name: 'EVIL', subjects: ['evil.>'] })));
    expectDenied(await rejection(jsm.streams.purge(DELTA_STREAM)));
    await expectSubscribeDenied(nc, `${inboxPrefix({ role: 'controlplane' })}.>`);
    await expectSubscribeDenied(nc, '_INBOX.>');
  });

  it('lets the control plane do its job, and only on meshlane streams', async () => {
    const me: Principal = { role: 'controlplane' };
    const cpjs = js(cp, me);
    const statuses: string[] = [];
    cp.subscribe(subjects.allStatus, { callback: (_e, m) => {
        statuses.push(m.subject);
      } });
    await cp.flush();
    const b = await as({ role: 'worker', node: 'node-b' });
    b.publish(subjects.status('node-b'), '{}');
    await b.flush();
    const end = Date.now() + WAIT;
    while (statuses.length < 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(statuses).toEqual([subjects.status('node-b')]);

    const kv = await new Kvm(cpjs).open(SNAPSHOT_BUCKET);
    await kv.put('node-c', '{}');
    expect((await within(kv.get('node-c')))?.string()).toBe('{}');
    const keys: string[] = [];
    for await (const k of await kv.keys()) keys.push(k);
    expect(keys.sort()).toEqual(['node-a', 'node-b', 'node-c']);
    const ack = await cpjs.publish(subjects.delta('node-c'), '{}');
    expect(ack.stream).toBe(DELTA_STREAM);
    const jsm = await jetstreamManager(cp, { timeout: WAIT });
    expect((await jsm.streams.info(DELTA_STREAM)).state.messages).toBe(3);
    await jsm.streams.update(DELTA_STREAM, { max_age: 3600 * 1e9 });
    // Not someone else's streams, not the whole API.
    expectDenied(await rejection(jsm.streams.add({ name: 'OTHER', subjects: ['other.>'] })));
    expectDenied(await rejection(jsm.streams.delete(DELTA_STREAM)));
    await expectPublishDenied(cp, subjects.status('node-a'), await as({ role: 'auditor' }));
    await expectSubscribeDenied(cp, subjects.delta('node-a'));
  });

  it('renders a complete config nats-server accepts, TLS and cluster included', () => {
    const users = busUsers({ controlplane: cred.controlplane, auditor: cred.auditor, nodes: [{ node: 'node-a.example', credential: cred.nodeA }] });
    const text = renderServerConfig({
      serverName: '$POD_NAME',
      httpPort: 8222,
      jetstream: { storeDir: '/data/jetstream', maxMemory: '256MB', maxFile: '10GB' },
      cluster: { name: 'meshlane', listen: '0.0.0.0:6222', routes: ['nats://nats-0.nats:6222', 'nats://nats-1.nats:6222'] },
      tls: { cert: join(server.dir, 'tls.crt'), key: join(server.dir, 'tls.key'), ca: join(server.dir, 'ca.crt') },
      users,
    });
    expect(text).toContain('"$JS.API.DIRECT.GET.KV_meshlane-snapshots.$KV.meshlane-snapshots.node-a_example"');
    const conf = join(server.dir, 'full.conf');
    writeFileSync(conf, text);
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=nats', '-keyout', join(server.dir, 'tls.key'), '-out', join(server.dir, 'tls.crt')], { stdio: 'ignore' });
    writeFileSync(join(server.dir, 'ca.crt'), execFileSync('cat', [join(server.dir, 'tls.crt')]));
    const out = execFileSync('nats-server', ['-t', '-c', conf], { env: { ...process.env, POD_NAME: 'nats-0' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(out + '').not.toMatch(/error/i);
    expect(() => workerPermissions('Node_A')).toThrow(/DNS-1123/);
  });
});
