/**
 * IstiodXdsSource against the fake istiod, over real gRPC: syncz (SotW) and the
 * ambient workload feed (delta), ACK/NACK, warm-up refusals, reconnects.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { IstiodXdsSource, type IstiodXdsOptions } from '../../controlplane/src/xds/index.js';
import { decodeSyncz, isSynced, proxyIdOf, loadXdsProtos } from '../../controlplane/src/xds/index.js';
import type { ProxySync } from '../../controlplane/src/types.js';
import { FakeIstiod, type FakeIstiodOptions } from '../fakes/istiod.js';

interface LogLine {
  level: number;
  msg: string;
}

const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function waitFor<T>(what: string, fn: () => T | undefined | false, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function capturingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  return { logger, lines };
}

async function fake(opts: FakeIstiodOptions = {}): Promise<FakeIstiod> {
  const f = await FakeIstiod.start(opts);
  cleanups.push(() => f.close());
  return f;
}

interface Harness {
  source: IstiodXdsSource;
  proxies: Array<ReadonlyMap<string, ProxySync>>;
  ambient: Array<ReadonlySet<string>>;
  lines: LogLine[];
  last(): ReadonlyMap<string, ProxySync> | undefined;
  lastAmbient(): ReadonlySet<string> | undefined;
}

function client(f: FakeIstiod, extra: Partial<IstiodXdsOptions> = {}): Harness {
  const { logger, lines } = capturingLogger();
  const source = new IstiodXdsSource({
    address: f.address,
    plaintext: true,
    node: { namespace: 'istio-system', name: 'meshlane-controlplane-0', serviceAccount: 'meshlane', ip: '10.1.2.3' },
    logger,
    synczPollMs: 50,
    backoff: { initialMs: 20, maxMs: 100 },
    ...extra,
  });
  const h: Harness = {
    source,
    proxies: [],
    ambient: [],
    lines,
    last: () => h.proxies.at(-1),
    lastAmbient: () => h.ambient.at(-1),
  };
  source.onProxies((p) => h.proxies.push(new Map(p)));
  source.onAmbient((a) => h.ambient.push(new Set(a)));
  cleanups.push(() => source.stop());
  source.start();
  return h;
}

describe('istiod xDS source', () => {
  it('reports synced and unsynced proxies and presents itself like istioctl', async () => {
    const f = await fake();
    f.setProxy('sidecar~10.0.0.5~web-0.shop~shop.svc.cluster.local', { acked: true });
    f.setProxy('db-0.shop', { acked: false });
    const h = client(f);
    const p = await waitFor('proxies', () => h.last());
    expect([...p.values()].sort((a, b) => a.proxyId.localeCompare(b.proxyId))).toEqual([
      { proxyId: 'db-0.shop', synced: false },
      { proxyId: 'web-0.shop', synced: true },
    ]);
    expect(h.source.connected()).toBe(true);
    const c = f.clients[0];
    expect(c?.nodeId).toBe('sidecar~10.1.2.3~meshlane-controlplane-0.istio-system~istio-system.svc.cluster.local');
    expect(c?.metadata).toMatchObject({ GENERATOR: 'event', NAMESPACE: 'istio-system', SERVICE_ACCOUNT: 'meshlane' });
    expect(c?.metadata.PROXY_CONFIG).toBeUndefined();
    await waitFor('ACKs', () => f.acks >= 2);
    expect(f.nacks).toEqual([]);
  });

  it('sees a proxy become synced by polling, and reports only changes', async () => {
    const f = await fake();
    f.setProxy('api-0.shop', { acked: false });
    const h = client(f);
    await waitFor('unsynced', () => h.last()?.get('api-0.shop')?.synced === false);
    const polls = f.synczResponses;
    await waitFor('more polls', () => f.synczResponses >= polls + 3);
    expect(h.proxies).toHaveLength(1); // unchanged answers are not re-reported
    f.setProxy('api-0.shop', { acked: true });
    await waitFor('synced', () => h.last()?.get('api-0.shop')?.synced === true);
    f.removeProxy('api-0.shop');
    await waitFor('removed', () => h.last()?.size === 0);
  });

  it('takes pushes as well as polls, and the deprecated xds_config form', async () => {
    const f = await fake({ pushSynczOnChange: true, legacySyncz: true });
    f.setProxy('a.ns', { acked: true });
    const h = client(f, { synczPollMs: 60_000 });
    await waitFor('first', () => h.last()?.get('a.ns')?.synced === true);
    f.setProxy('b.ns', { acked: false });
    await waitFor('pushed', () => h.last()?.get('b.ns')?.synced === false);
  });

  it('waits out warm-up refusals (UNAVAILABLE) without logging errors', async () => {
    const f = await fake({ warmupRefusals: 4 });
    f.setProxy('web-0.shop', { acked: true });
    const h = client(f);
    await waitFor('connected after warm-up', () => h.last()?.get('web-0.shop'));
    expect(f.refusals).toBeGreaterThanOrEqual(4);
    expect(h.source.connected()).toBe(true);
    expect(h.lines.filter((l) => l.level >= 50)).toEqual([]);
    expect(h.lines.some((l) => l.msg.includes('unavailable'))).toBe(true);
  });

  it('reconnects after a disconnect and re-reports state', async () => {
    const f = await fake();
    f.setProxy('web-0.shop', { acked: true });
    f.setWorkload({ namespace: 'amb', name: 'z-0', ambient: true });
    const h = client(f);
    await waitFor('initial', () => h.last() && h.lastAmbient()?.has('amb/z-0'));
    const reported = h.proxies.length;
    f.setReady(false);
    f.disconnectAll();
    await waitFor('disconnected', () => !h.source.connected());
    f.setProxy('web-0.shop', { acked: false });
    f.removeWorkload('amb', 'z-0');
    f.setWorkload({ namespace: 'amb', name: 'z-1', ambient: true });
    await new Promise((r) => setTimeout(r, 150)); // a few refused attempts
    f.setReady(true);
    await waitFor('reconnected', () => h.source.connected());
    await waitFor('state after reconnect', () => h.last()?.get('web-0.shop')?.synced === false);
    expect(h.proxies.length).toBeGreaterThan(reported);
    // The new subscription's first answer is the full state: z-0 is gone without a removal.
    await waitFor('ambient replaced', () => {
      const a = h.lastAmbient();
      return a?.has('amb/z-1') && !a.has('amb/z-0');
    });
    expect(h.lines.filter((l) => l.level >= 50)).toEqual([]);
  });

  it('follows ambient workloads added and removed via delta xDS', async () => {
    const f = await fake();
    f.setWorkload({ namespace: 'amb', name: 'a', ambient: true });
    f.setWorkload({ namespace: 'side', name: 'sidecar' }); // sidecar pod: LEGACY_ISTIO_MTLS
    f.setWorkload({ namespace: 'side', name: 'hbone-sidecar', nativeTunnel: true }); // HBONE but native tunnel
    const h = client(f);
    await waitFor('initial ambient', () => h.lastAmbient()?.has('amb/a'));
    expect([...(h.lastAmbient() ?? [])]).toEqual(['amb/a']);
    f.setWorkload({ namespace: 'amb', name: 'b', ambient: true });
    await waitFor('b added', () => h.lastAmbient()?.has('amb/b'));
    f.removeWorkload('amb', 'a');
    await waitFor('a removed', () => !h.lastAmbient()?.has('amb/a'));
    f.setWorkload({ namespace: 'amb', name: 'b', ambient: false }); // left ambient
    await waitFor('b no longer ambient', () => h.lastAmbient()?.size === 0);
    await waitFor('delta ACKs', () => f.acks >= 4);
    expect(f.nacks).toEqual([]);
  });

  it('NACKs malformed resources and keeps going', async () => {
    const f = await fake();
    f.setProxy('web-0.shop', { acked: true });
    f.setWorkload({ namespace: 'amb', name: 'a', ambient: true });
    const h = client(f);
    await waitFor('initial', () => h.last() && h.lastAmbient()?.has('amb/a'));
    f.setMalformedWorkload('amb', 'broken');
    await waitFor('delta NACK', () => f.nacks.find((n) => n.stream === 'delta'));
    f.malformedSyncz = true;
    await waitFor('syncz NACK', () => f.nacks.find((n) => n.stream === 'sotw'));
    expect(f.nacks[0]?.message).toMatch(/Kubernetes\/\/Pod\/amb\/broken/);
    // Still connected and serving: valid data keeps flowing.
    f.setWorkload({ namespace: 'amb', name: 'c', ambient: true });
    await waitFor('after NACK', () => h.lastAmbient()?.has('amb/c'));
    expect(h.last()?.get('web-0.shop')?.synced).toBe(true);
    f.malformedSyncz = false;
    f.setProxy('new-0.shop', { acked: true });
    await waitFor('syncz after NACK', () => h.last()?.get('new-0.shop')?.synced === true);
    expect(h.source.connected()).toBe(true);
  });

  it('sends the bearer token, re-read on every reconnect', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshlane-xds-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const tokenFile = join(dir, 'istio-token');
    writeFileSync(tokenFile, 'old-token\n');
    const f = await fake({ token: 'new-token' });
    f.setProxy('web-0.shop', { acked: true });
    const h = client(f, { tokenFile });
    await waitFor('rejected', () => h.lines.find((l) => l.msg.includes('refused')));
    expect(h.source.connected()).toBe(false);
    writeFileSync(tokenFile, 'new-token\n'); // kubelet rotated the projected token
    await waitFor('accepted', () => h.last()?.get('web-0.shop'));
    expect(f.clients.at(-1)?.authorization).toBe('Bearer new-token');
  });

  it('speaks TLS verified against the istio root cert, with the token', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshlane-xds-tls-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const ssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'root-cert.pem', '-days', '1', '-subj', '/O=cluster.local');
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'istiod.key', '-out', 'istiod.csr', '-subj', '/O=istiod');
    writeFileSync(join(dir, 'san.ext'), 'subjectAltName=DNS:istiod.istio-system.svc\n');
    ssl('x509', '-req', '-in', 'istiod.csr', '-CA', 'root-cert.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'istiod.pem', '-days', '1', '-extfile', 'san.ext');
    writeFileSync(join(dir, 'istio-token'), 'tok');
    const f = await fake({ token: 'tok', tls: { cert: readFileSync(join(dir, 'istiod.pem')), key: readFileSync(join(dir, 'istiod.key')) } });
    f.setProxy('web-0.shop', { acked: true });
    const h = client(f, {
      plaintext: false,
      caFile: join(dir, 'root-cert.pem'),
      tokenFile: join(dir, 'istio-token'),
      tlsServerName: 'istiod.istio-system.svc',
    });
    await waitFor('proxies over TLS', () => h.last()?.get('web-0.shop')?.synced === true, 10_000);
  });

  it('keeps syncz when istiod has no delta xDS', async () => {
    const f = await fake({ deltaUnimplemented: true });
    f.setProxy('web-0.shop', { acked: true });
    const h = client(f);
    await waitFor('proxies', () => h.last()?.get('web-0.shop'));
    await waitFor('empty ambient', () => h.lastAmbient()?.size === 0);
    const n = f.synczResponses;
    await waitFor('still polling', () => f.synczResponses > n + 2);
    expect(h.source.connected()).toBe(true);
  });
});

describe('syncz decoding', () => {
  it('reduces node ids to proxy ids and tolerates NOT_SENT, not STALE', () => {
    expect(proxyIdOf('sidecar~10.0.0.5~web-0.shop~shop.svc.cluster.local')).toBe('web-0.shop');
    expect(proxyIdOf('web-0.shop')).toBe('web-0.shop');
    const L = 'type.googleapis.com/envoy.config.listener.v3.Listener';
    const C = 'type.googleapis.com/envoy.config.cluster.v3.Cluster';
    const E = 'type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig';
    expect(isSynced(new Map([[L, 'SYNCED'], [C, 'SYNCED'], [E, 'NOT_SENT']]))).toBe(true);
    expect(isSynced(new Map([[L, 'NOT_SENT'], [C, 'SYNCED']]))).toBe(false);
    expect(isSynced(new Map([[L, 'SYNCED'], [C, 'SYNCED'], [E, 'STALE']]))).toBe(false);
    const protos = loadXdsProtos();
    const full = protos.clientConfig.encode({
      node: { id: 'sidecar~10.0.0.5~web-0.shop~shop.svc.cluster.local' },
      generic_xds_configs: [
        { type_url: L, config_status: 'SYNCED' },
        { type_url: C, config_status: 'SYNCED' },
      ],
    });
    const r = decodeSyncz(
      [
        { type_url: 'type.googleapis.com/envoy.service.status.v3.ClientConfig', value: full },
        { type_url: 'type.googleapis.com/google.protobuf.Empty', value: Buffer.alloc(0) },
      ],
      protos.clientConfig,
    );
    expect([...r.proxies.values()]).toEqual([{ proxyId: 'web-0.shop', synced: true }]);
    expect(r.errors).toHaveLength(1);
  });
});
