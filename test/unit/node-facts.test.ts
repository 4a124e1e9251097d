/** node-worker - node facts it discovers: the kubepods cgroup of either cgroup driver, the node's pod capacity. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { discoverPodCgroup, nodeMaxPods } from '@meshlane/node-worker';
import { FakeKubeApiServer, nodeFixture } from '../fakes/kube-apiserver.js';

describe('node-worker - node facts', () => {
  const dirs: string[] = [];
  let api: FakeKubeApiServer | undefined;
  afterEach(async () => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
    await api?.close();
    api = undefined;
  });

  /** A directory shaped like a cgroup v2 mount with the given child cgroups. */
  function cgroupRoot(children: string[]): string {
    const root = mkdtempSync(join(tmpdir(), 'mlt-cg-'));
    dirs.push(root);
    writeFileSync(join(root, 'cgroup.controllers'), 'cpu memory pids\n');
    for (const c of children) {
      mkdirSync(join(root, c));
      writeFileSync(join(root, c, 'cgroup.procs'), '');
    }
    return root;
  }

  it('finds kubepods.slice with the systemd driver and kubepods with cgroupfs', () => {
    const systemd = cgroupRoot(['system.slice', 'kubepods.slice']);
    expect(discoverPodCgroup(systemd)).toEqual({ path: join(systemd, 'kubepods.slice'), driver: 'systemd' });
    const cgroupfs = cgroupRoot(['kubepods']);
    expect(discoverPodCgroup(cgroupfs)).toEqual({ path: join(cgroupfs, 'kubepods'), driver: 'cgroupfs' });
  });

  it('names what it looked for when there is no kubepods cgroup, or no cgroup v2 mount', () => {
    const none = cgroupRoot(['system.slice']);
    expect(() => discoverPodCgroup(none)).toThrow(/no kubepods cgroup under .*kubepods\.slice \(systemd driver\).*kubepods \(cgroupfs driver\)/);
    const notV2 = mkdtempSync(join(tmpdir(), 'mlt-cg-'));
    dirs.push(notV2);
    expect(() => discoverPodCgroup(notV2)).toThrow(/not a cgroup v2 mount/);
  });

  it("reads the node's pod capacity from its Node object", async () => {
    api = await FakeKubeApiServer.start();
    const n = nodeFixture('node-a');
    (n as { status: Record<string, unknown> }).status.capacity = { cpu: '8', memory: '32Gi', pods: '250' };
    api.create(n);
    expect(await nodeMaxPods({ url: api.url }, 'node-a')).toBe(250);
    await expect(nodeMaxPods({ url: api.url }, 'node-b')).rejects.toThrow(/HTTP 404/);
    api.create(nodeFixture('node-c'));
    await expect(nodeMaxPods({ url: api.url }, 'node-c')).rejects.toThrow(/status\.capacity\.pods is undefined/);
  });
});
