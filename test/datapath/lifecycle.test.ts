/**
 * The worker's life around live traffic: connections that predate it,
 * restarts (even SIGKILL) that re-adopt the pinned datapath, uninstall that
 * hands every connection back to TCP, and desired states that are refused
 * whole when any field is wrong.
 */
import { existsSync, unlinkSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Datapath, libbpf } from '@meshlane/node-worker';
import { PIN_ROOT, ROOT, TestCluster, WORKER_CLI, type Agent } from '../harness/cluster.js';
import { sh } from '../harness/exec.js';
import { freePort } from '../harness/nats.js';
import { delta, until } from '../harness/counters.js';

const MB = 1024 * 1024;

describe('datapath - worker lifecycle', () => {
  let c: TestCluster;
  let a: Agent;
  let bulk: Agent;
  beforeAll(async () => {
    c = new TestCluster(['n1']);
    await c.addPod({ name: 'a', node: 'n1', index: 1, meshed: true });
    await c.addPod({ name: 'b', node: 'n1', index: 2, meshed: true, servers: { 8080: 'echo' } });
    a = await c.pod('a').agent();
    bulk = await c.pod('a').agent();
  });
  afterAll(async () => {
    a?.close();
    bulk?.close();
    await c?.cleanup();
  });

  /** A slow 24 MB echo (about 3 s) plus 50 concurrent ones, all byte-checked. */
  function load() {
    const host = c.pod('b').ip4;
    return Promise.all([
      bulk.xfer({ host, port: 8080, bytes: 24 * MB, chunk: 16 * 1024, pauseMs: 2, halfClose: false }),
      a.many({ host, port: 8080, bytes: 2 * MB, count: 50 }),
    ]);
  }

  it('connections opened before the worker started stay on TCP and intact', async () => {
    const running = load();
    await new Promise((r) => setTimeout(r, 300));
    const w = await c.startWorker('n1');
    const [one, many] = await running;
    expect(one.error).toBeUndefined();
    expect(one.recvSha).toBe(one.sentSha);
    expect(many.errors).toEqual([]);
    expect(many.mismatches).toBe(0);
    const k = w.counters();
    // Every accept and connect of the pre-existing streams happened before attach.
    expect(k.paired_mesh).toBe(0);
  });

  it('a worker killed and restarted under load loses no byte and re-adopts its pins', async () => {
    const w = c.worker('n1');
    const before = w.counters();
    const running = load();
    await new Promise((r) => setTimeout(r, 500));
    await w.stop('SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    await w.start();
    expect(w.log).toMatch(/re-adopted pinned datapath/);
    const [one, many] = await running;
    expect(one.error).toBeUndefined();
    expect(one.recvSha).toBe(one.sentSha);
    expect(many.errors).toEqual([]);
    expect(many.mismatches).toBe(0);
    const d = delta(before, w.counters());
    // The streams were accelerated all along, and the counters kept counting.
    expect(d.paired_mesh).toBe(51);
    expect(d.bytes_redirected).toBeGreaterThan(24 * MB);
    // And new connections after the restart are accelerated too.
    const after = await a.xfer({ host: c.pod('b').ip4, port: 8080, bytes: MB, halfClose: false });
    expect(after.recvSha).toBe(after.sentSha);
    expect(w.counters().paired_mesh - before.paired_mesh).toBe(52);
  });

  it('re-applying the same state changes nothing', async () => {
    const w = c.worker('n1');
    const from = w.log.length;
    await w.apply(c.state('n1', { generation: 1 }));
    const line = w.log.slice(from).split('\n').find((l) => l.includes('desired state applied'));
    expect(line).toBeDefined();
    expect(JSON.parse(line!).changed).toEqual({});
  });

  it('a bad state file is refused whole, naming the field, and the maps keep the last good state', async () => {
    const w = c.worker('n1');
    const dp = Datapath.openPinned(PIN_ROOT, w.pinNode);
    const before = dp.maps.ml_endpoints.entries().map(([k, v]) => k.toString('hex') + v.toString('hex')).sort();
    const good = c.state('n1', { generation: 7 });
    const bad = JSON.parse(JSON.stringify(good));
    bad.endpoints[0].proxyUid = 1338; // a valid change ...
    bad.endpoints[1].outbound.excludePorts = [80, 70000]; // ... next to a bad one
    const from = w.log.length;
    await w.apply(bad);
    expect(w.log.slice(from)).toMatch(/\$\.endpoints\[1\]\.outbound\.excludePorts\[1\]: must be an integer from 1 to 65535/);
    const after = dp.maps.ml_endpoints.entries().map(([k, v]) => k.toString('hex') + v.toString('hex')).sort();
    dp.close();
    expect(after).toEqual(before);
    // Traffic is still accelerated by the last good state.
    const k0 = w.counters();
    const r = await a.xfer({ host: c.pod('b').ip4, port: 8080, bytes: MB, halfClose: false });
    expect(r.recvSha).toBe(r.sentSha);
    expect(w.counters().paired_mesh - k0.paired_mesh).toBe(1);
  });

  it('status reports the programs, map occupancy and counters', () => {
    const w = c.worker('n1');
    const out = JSON.parse(sh(process.execPath, [WORKER_CLI, 'status', '--json', '--node', w.pinNode, '--pin-root', PIN_ROOT])) as {
      links: { name: string; progId: number }[];
      maps: Record<string, { entries: number | null; max: number }>;
      counters: Record<string, number>;
      config: { generation: number; enabled: boolean };
    };
    expect(out.links.map((l) => l.name).sort()).toEqual(['sk_msg', 'sockops']);
    expect(out.links.every((l) => l.progId > 0)).toBe(true);
    expect(out.maps.ml_endpoints?.entries).toBe(4); // 2 pods x 2 families
    expect(out.counters.paired_mesh).toBeGreaterThan(0);
    expect(out.config).toMatchObject({ enabled: true, generation: 1 });
  });

  it('serves Prometheus metrics, /healthz and /readyz', async () => {
    const w = c.worker('n1');
    // Ready means "a desired state has been applied": the file the previous
    // test left is refused, so give it a good one again.
    await w.apply(c.state('n1', { generation: 8 }));
    await w.stop();
    w.metricsPort = await freePort();
    await w.start();
    const get = async (path: string) => {
      const r = await fetch(`http://127.0.0.1:${w.metricsPort}${path}`);
      return { status: r.status, body: await r.text() };
    };
    expect((await get('/healthz')).status).toBe(200);
    expect((await get('/readyz')).status).toBe(200);
    const m = await get('/metrics');
    expect(m.status).toBe(200);
    const paired = /meshlane_datapath_events_total\{reason="paired_mesh"\} (\d+)/.exec(m.body);
    expect(Number(paired?.[1])).toBeGreaterThan(0);
    expect(m.body).toMatch(/meshlane_map_entries\{map="ml_endpoints"\} 4/);
    expect(m.body).toMatch(/meshlane_applied_generation \d+/);
  });

  it('an upgrade replaces both programs in place under load: bytes exact, connections kept, new connections on the new code', async () => {
    const w = c.worker('n1');
    const progIds = () => (w.statusJson() as { links: Array<{ name: string; progId: number }> }).links.map((l) => `${l.name}:${l.progId}`).sort();
    const oldProgs = progIds();
    const before = w.counters();
    const running = load();
    await new Promise((r) => setTimeout(r, 500));
    // The next version: the same maps (layout), other code.
    await w.stop('SIGTERM');
    w.bpfDir = join(ROOT, 'bpf/out/upgrade-test');
    try {
      await w.start();
      expect(w.log).toMatch(/programs replaced in place by this version/);
      const [one, many] = await running;
      expect(one.error).toBeUndefined();
      expect(one.recvSha).toBe(one.sentSha);
      expect(many.errors).toEqual([]);
      expect(many.mismatches).toBe(0);
      const newProgs = progIds();
      expect(newProgs).toHaveLength(2);
      for (const p of newProgs) expect(oldProgs).not.toContain(p);
      const after = await a.xfer({ host: c.pod('b').ip4, port: 8080, bytes: MB, halfClose: false });
      expect(after.recvSha).toBe(after.sentSha);
      expect(w.counters().paired_mesh - before.paired_mesh).toBe(52);
      // Started again on the same version: nothing to replace.
      await w.stop('SIGTERM');
      await w.start();
      expect(w.log).not.toMatch(/programs replaced/);
      expect(progIds()).toEqual(newProgs);
    } finally {
      // Back to this build for the tests after (an upgrade back, also in place).
      await w.stop('SIGTERM');
      w.bpfDir = undefined;
      await w.start();
    }
  });

  it('pinned maps of another layout are switched off and re-created, never a crash loop; live connections finish over TCP', async () => {
    const w = c.worker('n1');
    const running = load();
    await new Promise((r) => setTimeout(r, 500));
    await w.stop('SIGKILL');
    // What an older version's pins look like to this one: another layout version in ml_config.
    const dp = Datapath.openPinned(PIN_ROOT, w.pinNode);
    const cfg = dp.maps.ml_config.lookup(Buffer.alloc(4))!;
    const oldMapId = dp.maps.ml_endpoints.info.id;
    cfg.writeUInt32LE(1, 4);
    dp.maps.ml_config.update(Buffer.alloc(4), cfg);
    dp.close();
    await w.start();
    expect(w.log).toMatch(/pinned maps had another layout: switched off, detached and re-created/);
    expect(w.log).toMatch(/layout version: 1 changed to 3/);
    const [one, many] = await running;
    expect(one.error).toBeUndefined();
    expect(one.recvSha).toBe(one.sentSha);
    expect(many.errors).toEqual([]);
    expect(many.mismatches).toBe(0);
    const now = Datapath.openPinned(PIN_ROOT, w.pinNode);
    try {
      expect(now.maps.ml_endpoints.info.id).not.toBe(oldMapId);
    } finally {
      now.close();
    }
    // The worker runs on and accelerates new connections.
    const before = w.counters();
    const after = await a.xfer({ host: c.pod('b').ip4, port: 8080, bytes: MB, halfClose: false });
    expect(after.recvSha).toBe(after.sentSha);
    expect(w.counters().paired_mesh - before.paired_mesh).toBe(1);
  });

  it('a half-finished install (sk_msg attached, sockops not) is completed at the next start', async () => {
    const w = c.worker('n1');
    await w.stop('SIGTERM');
    // Drop the sockops link as if the worker had died between the two attaches.
    const fd = libbpf.objGet(`${PIN_ROOT}/${w.pinNode}/links/sockops`);
    libbpf.linkDetach(fd);
    libbpf.closeFd(fd);
    unlinkSync(`${PIN_ROOT}/${w.pinNode}/links/sockops`);
    await w.start();
    expect(w.log).toMatch(/a half-finished earlier install was completed/);
    const before = w.counters();
    const after = await a.xfer({ host: c.pod('b').ip4, port: 8080, bytes: MB, halfClose: false });
    expect(after.recvSha).toBe(after.sentSha);
    expect(w.counters().paired_mesh - before.paired_mesh).toBe(1);
    expect((w.statusJson() as { links: unknown[] }).links).toHaveLength(2);
  });

  it('a stopping worker detaches everything only when its DaemonSet is being deleted (helm uninstall), not on a rolling update', async () => {
    // The one API call involved, GET apps/v1 daemonset, as the apiserver answers it.
    let deleting: 'no' | 'deletionTimestamp' | 'gone' = 'no';
    const api = createServer((req, res) => {
      if (req.url !== '/apis/apps/v1/namespaces/istio-system/daemonsets/meshlane-worker') {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"kind":"Status","code":404}');
        return;
      }
      if (deleting === 'gone') {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}');
        return;
      }
      const metadata = { name: 'meshlane-worker', namespace: 'istio-system', ...(deleting === 'deletionTimestamp' ? { deletionTimestamp: new Date().toISOString() } : {}) };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'DaemonSet', apiVersion: 'apps/v1', metadata }));
    });
    await new Promise<void>((r) => api.listen(0, '127.0.0.1', () => r()));
    const w = c.worker('n1');
    const url = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
    try {
      await w.stop('SIGTERM');
      w.extraArgs = ['--kube-api', url, '--daemonset', 'istio-system/meshlane-worker', '--max-pods', '110'];
      await w.start();
      await w.stop('SIGTERM');
      expect(w.log).toMatch(/programs and maps stay attached/);
      expect(Datapath.installed(PIN_ROOT, w.pinNode)).toBe(true);
      for (const how of ['deletionTimestamp', 'gone'] as const) {
        await w.start();
        const running = load();
        await new Promise((r) => setTimeout(r, 500));
        deleting = how;
        await w.stop('SIGTERM');
        expect(w.log).toMatch(/my DaemonSet is being deleted: uninstalling/);
        expect(Datapath.installed(PIN_ROOT, w.pinNode)).toBe(false);
        expect(existsSync(`${PIN_ROOT}/${w.pinNode}`)).toBe(false);
        const [one, many] = await running;
        expect(one.error).toBeUndefined();
        expect(one.recvSha).toBe(one.sentSha);
        expect(many.errors).toEqual([]);
        expect(many.mismatches).toBe(0);
        deleting = 'no';
      }
    } finally {
      w.extraArgs = [];
      api.close();
      await w.start();
    }
  });

  it('serves /healthz before NATS is reachable (and /readyz says not ready), and keeps trying to connect', async () => {
    const w = c.worker('n1');
    await w.stop('SIGTERM');
    const metrics = await freePort();
    const dead = await freePort(); // nothing listens there
    const { spawn } = await import('node:child_process');
    const p = spawn(process.execPath, [WORKER_CLI, 'run', '--node', w.pinNode, '--cgroup', c.nodeCgroup('n1'), '--nats', `nats://127.0.0.1:${dead}`, '--pin-root', PIN_ROOT, '--max-pods', '110', '--metrics-addr', `127.0.0.1:${metrics}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    p.stdout.on('data', (d: Buffer) => (log += d.toString()));
    p.stderr.on('data', (d: Buffer) => (log += d.toString()));
    try {
      const get = async (path: string) => {
        try {
          return (await fetch(`http://127.0.0.1:${metrics}${path}`)).status;
        } catch {
          return 0;
        }
      };
      const end = Date.now() + 20_000;
      while ((await get('/healthz')) !== 200) {
        if (p.exitCode !== null || Date.now() > end) throw new Error(`no /healthz while NATS is down:\n${log}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await get('/readyz')).toBe(503);
      expect(log).toMatch(/connecting to NATS/);
      await new Promise((r) => setTimeout(r, 1500));
      expect(p.exitCode).toBeNull(); // still waiting, not crashed
      expect(await get('/healthz')).toBe(200);
    } finally {
      p.kill('SIGTERM');
      await new Promise((r) => p.once('exit', r));
      await w.start();
    }
  });

  it('uninstall under load returns every connection to the normal path intact', async () => {
    const w = c.worker('n1');
    await w.stop();
    const before = w.counters();
    const running = load();
    await new Promise((r) => setTimeout(r, 500));
    await until(w, (k) => k.paired_mesh - before.paired_mesh >= 51);
    w.uninstall();
    expect(existsSync(`${PIN_ROOT}/${w.pinNode}`)).toBe(false);
    const [one, many] = await running;
    expect(one.error).toBeUndefined();
    expect(one.recvSha).toBe(one.sentSha);
    expect(many.errors).toEqual([]);
    expect(many.mismatches).toBe(0);
    // Nothing is attached any more: new connections work over plain TCP.
    const r = await a.xfer({ host: c.pod('b').ip4, port: 8080, bytes: MB });
    expect(r.recvSha).toBe(r.sentSha);
  });
});
