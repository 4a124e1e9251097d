/**
 * What the images hold, proven without a registry or a container engine.
 *
 * scripts/stage makes the production install of each image
 * (build/stage/<part>/opt/meshlane, npm ci --omit=dev from the lockfile, the
 * BPF objects, libbpf + libelf + zlib), and deploy/images/*.Dockerfile COPY
 * exactly that tree onto the distroless Node.js base. This suite runs the
 * staged tree through scripts/stage-sandbox as the image would run: the
 * Dockerfile's ENTRYPOINT, ENV and WORKDIR, a read-only root holding only the
 * base's files and the staged tree, the chart's volumes, and the chart's user
 * and capabilities read from deploy/manifests. The worker loads, attaches and
 * carries real bytes between two meshed pods of the netns harness with BPF,
 * PERFMON, NET_ADMIN and SYS_RESOURCE only; the control plane and `meshlane`
 * start as uid 65532.
 *
 * It also runs the three binaries the way the README writes them, from PATH
 * after the set-up (scripts/lib/setup.sh ensure_bins), and checks that the
 * README's flags and every flag their --help lists are accepted.
 *
 * MESHLANE_WORKER_ROOTFS / MESHLANE_CONTROLPLANE_ROOTFS: run the programs
 * from a built image's root instead (e.g. `buildah mount` of an image made
 * by scripts/images), nothing of this machine added.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PIN_ROOT, TestCluster, Worker, type Agent } from '../harness/cluster.js';
import { measure } from '../harness/counters.js';
import { ROOT, STAGE, capMask, helpFlags, procCaps, procMounts, readmeCommands, runSandbox, runtimeStage, sandboxArgv, workload, type SandboxOptions } from './stage.js';

const WORKER_STAGE = join(STAGE, 'worker');
const CP_STAGE = join(STAGE, 'controlplane');
const WORKER_ROOTFS = process.env.MESHLANE_WORKER_ROOTFS;
const CP_ROOTFS = process.env.MESHLANE_CONTROLPLANE_ROOTFS;
const worker = runtimeStage(join(ROOT, 'deploy/images/worker.Dockerfile'));
const cp = runtimeStage(join(ROOT, 'deploy/images/controlplane.Dockerfile'));
const ds = workload('worker.yaml', 'DaemonSet');
const dep = workload('controlplane.yaml', 'Deployment');
const dsWorker = ds.containers.find((c) => c.name === 'worker')!;
const depCp = dep.containers.find((c) => c.name === 'controlplane')!;

function sha(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** Every file under dir, relative. */
function files(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...files(dir, r));
    else out.push(r);
  }
  return out;
}

describe('staged install (the images\' content)', () => {
  beforeAll(() => {
    // Reuses the cached npm install (keyed by the lockfile); copies the
    // current build.
    execFileSync('bash', [join(ROOT, 'scripts/stage'), 'all'], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 300_000 });
  });

  it('the Dockerfiles copy what scripts/stage makes, run as the chart runs them', () => {
    expect(worker.stageCommand).toBe('bash scripts/stage worker --out /stage');
    expect(worker.copies).toEqual(['--from=build /stage/worker/ /']);
    expect(cp.stageCommand).toBe('bash scripts/stage controlplane --out /stage');
    expect(cp.copies).toEqual(['--from=build /stage/controlplane/ /']);
    expect(worker.from).toMatch(/^gcr\.io\/distroless\/nodejs20-debian12/);
    expect(cp.from).toMatch(/^gcr\.io\/distroless\/nodejs20-debian12:nonroot/);
    // The user the chart runs each as.
    expect(worker.user).toBe(`${ds.securityContext?.runAsUser}:0`);
    expect(cp.user).toBe(`${dep.securityContext?.runAsUser}:${dep.securityContext?.runAsGroup}`);
    expect(dsWorker.image).toBe('ghcr.io/meshlane/meshlane-worker:0.1.0');
    expect(depCp.image).toBe('ghcr.io/meshlane/meshlane-controlplane:0.1.0');
    // scripts/images tags them with the manifests' names.
    const dry = spawnSync('bash', [join(ROOT, 'scripts/images'), '--dry-run', '--push', '--builder', 'docker'], { encoding: 'utf8' });
    expect(dry.status).toBe(0);
    expect(dry.stderr).toContain(`--platform linux/amd64,linux/arm64 -f deploy/images/worker.Dockerfile -t ${dsWorker.image} --push .`);
    expect(dry.stderr).toContain(`-f deploy/images/controlplane.Dockerfile -t ${depCp.image} --push .`);
  });

  it('the worker tree: production modules, the BPF objects where the worker looks, libbpf/libelf/zlib, nothing else', () => {
    const app = join(WORKER_STAGE, 'opt/meshlane');
    expect(readdirSync(WORKER_STAGE)).toEqual(['opt']);
    expect(readdirSync(app).sort()).toEqual(['.staged', 'bpf', 'lib', 'node-worker', 'node_modules', 'package.json', 'proto']);
    // The default --bpf-dir: ../../bpf/out from node-worker/dist/cli.js.
    for (const f of ['sockops.bpf.o', 'redirect.bpf.o', 'probe.bpf.o', 'behaviour-probe.bpf.o', 'behaviour-probe']) {
      expect(sha(join(app, 'bpf/out', f)), f).toBe(sha(join(ROOT, 'bpf/out', f)));
    }
    expect(readdirSync(join(app, 'lib')).sort()).toEqual(['libbpf.so.1', 'libelf.so.1', 'libz.so.1']);
    const mods = readdirSync(join(app, 'node_modules'));
    for (const dev of ['typescript', 'vitest', 'tsx', '@types', 'kubernetes-models', '@kubernetes', '@grpc']) expect(mods, dev).not.toContain(dev);
    expect(readdirSync(join(app, 'node_modules/@meshlane')).sort()).toEqual(['node-worker', 'proto']);
    // koffi's native part for this arch, glibc, and no other platform's.
    const arch = process.arch === 'x64' ? 'x64' : process.arch;
    expect(readdirSync(join(app, 'node_modules/@koromix'))).toEqual([`koffi-linux-${arch}`]);
    expect(existsSync(join(app, `node_modules/@koromix/koffi-linux-${arch}/linux_${arch}/koffi.node`))).toBe(true);
    expect(files(join(app, 'node_modules')).filter((f) => f.endsWith('.node'))).toEqual([`@koromix/koffi-linux-${arch}/linux_${arch}/koffi.node`]);
    // No compiler or shell in the tree (they stay in the build stage).
    expect(files(app).filter((f) => /(^|\/)(clang|llc|gcc|cc|bpftool|sh|bash)$/.test(f))).toEqual([]);
  });

  it('the control plane tree: production modules and its own .proto files', () => {
    const app = join(CP_STAGE, 'opt/meshlane');
    expect(readdirSync(app).sort()).toEqual(['.staged', 'controlplane', 'node_modules', 'package.json', 'proto']);
    expect(readdirSync(join(app, 'controlplane/src/xds')).sort()).toEqual(['codec.proto', 'istio_workload.proto']);
    const mods = readdirSync(join(app, 'node_modules'));
    for (const dev of ['typescript', 'vitest', 'tsx', 'kubernetes-models', 'koffi']) expect(mods, dev).not.toContain(dev);
    expect(readdirSync(join(app, 'node_modules/@meshlane')).sort()).toEqual(['controlplane', 'proto']);
  });

  // Only defined when built images are given (see the header): images
  // cannot be built here without a registry, so this is an extra check an
  // operator runs after scripts/images, not a test CI could skip.
  const withImages = WORKER_ROOTFS !== undefined || CP_ROOTFS !== undefined ? it : undefined;
  withImages?.('a built image holds the staged tree, file for file', () => {
    for (const [rootfs, stage] of [[WORKER_ROOTFS, WORKER_STAGE], [CP_ROOTFS, CP_STAGE]] as const) {
      if (!rootfs) continue;
      const list = (d: string) => files(join(d, 'opt/meshlane')).filter((f) => f !== '.staged').sort();
      expect(list(rootfs)).toEqual(list(stage));
    }
  });

  describe('the control plane and meshlane as uid 65532, read-only root', () => {
    let tmp: string;
    let opts: SandboxOptions;
    beforeAll(() => {
      // The chart's emptyDir for /tmp; everything else read-only.
      tmp = mkdtempSync(join(tmpdir(), 'meshlane-cp-tmp-'));
      execFileSync('chown', [`${dep.securityContext!.runAsUser}:${dep.securityContext!.runAsGroup}`, tmp]);
      const tmpMount = depCp.volumeMounts!.find((m) => m.name === 'tmp')!;
      opts = {
        stage: CP_ROOTFS ?? CP_STAGE,
        rootfs: CP_ROOTFS !== undefined,
        uid: dep.securityContext!.runAsUser!,
        gid: dep.securityContext!.runAsGroup!,
        caps: [],
        binds: [`${tmp}:${tmpMount.mountPath}`],
        env: cp.env,
        cwd: cp.workdir,
      };
    });
    afterAll(() => {
      if (tmp) rmSync(tmp, { recursive: true, force: true });
    });

    it('meshlane-controlplane --help (the ENTRYPOINT) is the build\'s', () => {
      const r = runSandbox(opts, [...cp.entrypoint, '--help']);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const local = execFileSync(process.execPath, [join(ROOT, 'controlplane/dist/cli.js'), '--help'], { encoding: 'utf8' });
      expect(r.stdout).toBe(local);
    });

    it('meshlane --help, and a meshlane command past its flags', () => {
      const node = cp.entrypoint[0]!;
      const r = runSandbox(opts, [node, '/opt/meshlane/controlplane/dist/meshlane.js', '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('Usage:\n  meshlane audit tail');
      // Gets as far as connecting: nothing listens on this port.
      const s = runSandbox(opts, [node, '/opt/meshlane/controlplane/dist/meshlane.js', 'status', '--nats', 'nats://127.0.0.1:1', '--timeout', '1']);
      expect(s.code).toBe(2);
      expect(s.stderr).toMatch(/meshlane: .*(ECONNREFUSED|connect|CONNECTION_REFUSED|timeout)/i);
    });

    it('loads everything it imports, the xDS protos included, without writing anywhere but /tmp', () => {
      const script = [
        "const m = await import('/opt/meshlane/controlplane/dist/mod.js');",
        "const x = await import('/opt/meshlane/controlplane/dist/xds/protos.js');",
        'x.loadXdsProtos();',
        "const fs = await import('node:fs');",
        "const w = (p) => { try { fs.writeFileSync(p, ''); return 'written'; } catch (e) { return e.code; } };",
        "console.log(JSON.stringify({ exports: Object.keys(m).length, uid: process.getuid(), root: w('/x'), app: w('/opt/meshlane/x'), tmp: w('/tmp/x'), caps: fs.readFileSync('/proc/self/status', 'utf8').match(/^CapEff:\\s+(\\w+)/m)[1] }));",
      ].join('\n');
      const r = runSandbox(opts, [cp.entrypoint[0]!, '--input-type=module', '-e', script]);
      expect(r.stderr).toBe('');
      expect(JSON.parse(r.stdout)).toEqual({ exports: expect.any(Number), uid: 65532, root: 'EROFS', app: 'EROFS', tmp: 'written', caps: '0000000000000000' });
    });
  });

  describe('the worker with the DaemonSet\'s capabilities, read-only root', () => {
    let c: TestCluster;
    let a: Agent;
    let w: Worker;
    let opts: SandboxOptions;
    const chartCaps = dsWorker.securityContext!.capabilities!.add!;
    // This machine's root may lack one of them (a container's bounding set):
    // the worker gets the chart's capabilities that exist here, and only
    // SYS_RESOURCE may be missing, which the worker needs on kernels before
    // 5.11 only (memlock; later kernels account BPF memory to the cgroup).
    const ours = procCaps(process.pid).CapBnd!;
    const caps = chartCaps.filter((n) => (ours & capMask([n])) !== 0n);
    const missing = chartCaps.filter((n) => !caps.includes(n));
    const cgroupMount = dsWorker.volumeMounts!.find((m) => m.name === 'cgroup')!;
    const bpffsMount = dsWorker.volumeMounts!.find((m) => m.name === 'bpffs')!;
    const hostPath = (name: string) => ds.volumes!.find((v) => v.name === name)!.hostPath!.path;

    beforeAll(async () => {
      expect(chartCaps).toEqual(['BPF', 'PERFMON', 'NET_ADMIN', 'SYS_RESOURCE']);
      if (missing.length) {
        const [major, minor] = readFileSync('/proc/sys/kernel/osrelease', 'utf8').split('.').map(Number);
        expect(missing).toEqual(['SYS_RESOURCE']);
        expect(major! * 100 + minor!).toBeGreaterThanOrEqual(511);
        console.warn(`staged worker: this machine's root has no CAP_${missing.join(', CAP_')}; running with ${caps.join(', ')}`);
      }
      expect(dsWorker.securityContext!.readOnlyRootFilesystem).toBe(true);
      c = new TestCluster(['n1']);
      await c.addPod({ name: 'a', node: 'n1', index: 1, meshed: true });
      await c.addPod({ name: 'b', node: 'n1', index: 2, meshed: true, servers: { 8080: 'echo' } });
      const stateFile = join(c.tmp, 'n1.state.json');
      writeFileSync(stateFile, JSON.stringify(c.state('n1')));
      opts = {
        stage: WORKER_ROOTFS ?? WORKER_STAGE,
        rootfs: WORKER_ROOTFS !== undefined,
        uid: ds.securityContext!.runAsUser!,
        caps,
        binds: [
          `${hostPath('bpffs')}:${bpffsMount.mountPath}`,
          `${hostPath('cgroup')}:${cgroupMount.mountPath}${cgroupMount.readOnly ? ':ro' : ''}`,
          // The desired state comes from a file here, not from NATS: its
          // folder, read-only, stands in for the bus.
          `${c.tmp}:/meshlane-state:ro`,
        ],
        env: worker.env,
        cwd: worker.workdir,
      };
      w = new Worker(c, 'n1', stateFile);
      w.command = sandboxArgv(opts, worker.entrypoint);
      // The node's cgroup as the pod sees the host's cgroup mount.
      expect(c.nodeCgroup('n1').startsWith(`${hostPath('cgroup')}/`)).toBe(true);
      w.extraArgs = ['--cgroup', c.nodeCgroup('n1').replace(hostPath('cgroup'), cgroupMount.mountPath), '--state', '/meshlane-state/n1.state.json'];
      c.workers.set('n1', w);
      await w.start();
      a = await c.pod('a').agent();
    });
    afterAll(async () => {
      a?.close();
      await w?.stop();
      await c?.cleanup();
    });

    it('runs as uid 0 with exactly the chart\'s BPF, PERFMON, NET_ADMIN, SYS_RESOURCE (those this machine has), no_new_privs', () => {
      const pid = w.proc!.pid!;
      const mask = capMask(caps);
      const pc = procCaps(pid);
      expect({ eff: pc.CapEff, prm: pc.CapPrm, bnd: pc.CapBnd, amb: pc.CapAmb }).toEqual({ eff: mask, prm: mask, bnd: mask, amb: mask });
      expect(pc.CapEff! & capMask(['SYS_ADMIN'])).toBe(0n);
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      expect(status).toMatch(/^Uid:\s+0\s+0\s+0\s+0$/m);
      expect(status).toMatch(/^NoNewPrivs:\s+1$/m);
    });

    it('from the staged tree, with the staged libbpf, libelf and zlib', () => {
      const pid = w.proc!.pid!;
      expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')).toContain('/opt/meshlane/node-worker/dist/cli.js');
      const maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
      for (const lib of ['libbpf.so.1', 'libelf.so.1', 'libz.so.1']) {
        expect(maps, lib).toMatch(new RegExp(`/opt/meshlane/lib/${lib.replace(/\./g, '\\.')}$`, 'm'));
        expect(maps, lib).not.toMatch(new RegExp(`linux-gnu/${lib.replace(/\./g, '\\.')}`));
      }
      expect(maps).toMatch(/koffi-linux-\w+\/linux_\w+\/koffi\.node$/m);
    });

    it('on a read-only root: writable are only the bpffs volume, /proc and /dev', () => {
      const mounts = procMounts(w.proc!.pid!);
      expect(mounts.find((m) => m.path === '/')?.ro).toBe(true);
      const rw = mounts.filter((m) => !m.ro).map((m) => m.path);
      expect(rw.filter((p) => p !== bpffsMount.mountPath && !/^\/(proc|dev)(\/|$)/.test(p))).toEqual([]);
      expect(mounts.find((m) => m.path === cgroupMount.mountPath)?.ro).toBe(true);
    });

    it('loads, attaches and carries real bytes over all three hops', async () => {
      expect(w.log).toMatch(/desired state applied/);
      const bytes = 256 * 1024;
      const { result: r, d } = await measure(w, () => a.xfer({ host: c.pod('b').ip4, port: 8080, bytes, halfClose: false }));
      expect(r.error).toBeUndefined();
      expect(r.recvSha).toBe(r.sentSha);
      expect([d.paired_outbound, d.paired_mesh, d.paired_inbound]).toEqual([1, 1, 1]);
      // Both directions of all three hops through the fast lane.
      expect(d.bytes_redirected).toBe(6 * bytes);
      expect(d.bytes_tcp).toBe(0);
    });

    it('meshlane-worker status from the staged tree, with the same capabilities', () => {
      const r = runSandbox(opts, [...worker.entrypoint, 'status', '--json', '--node', w.pinNode, '--pin-root', PIN_ROOT]);
      expect(r.code, r.stderr).toBe(0);
      const s = JSON.parse(r.stdout) as { counters?: Record<string, number> };
      expect(JSON.stringify(s)).toContain('bytes_redirected');
    });
  });
});

describe('the binaries on PATH, as the README writes them', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const commands = readmeCommands(readme);
  beforeAll(() => {
    // What scripts/test and scripts/demo run after the build.
    execFileSync('bash', ['-c', 'source scripts/lib/setup.sh && ensure_bins'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  });

  it('meshlane, meshlane-worker and meshlane-controlplane resolve to this checkout\'s bin/', () => {
    expect([...new Set(commands.map((c) => c.bin))].sort()).toEqual(['meshlane', 'meshlane-controlplane', 'meshlane-worker']);
    for (const bin of ['meshlane', 'meshlane-worker', 'meshlane-controlplane']) {
      const where = execFileSync('bash', ['-c', `command -v ${bin}`], { encoding: 'utf8', env: { ...process.env, PATH: `/usr/local/bin:${process.env.PATH}` } }).trim();
      expect(where).toBe(`/usr/local/bin/${bin}`);
      expect(readlinkSync(where)).toBe(join(ROOT, 'bin', bin));
      expect(statSync(join(ROOT, 'bin', bin)).mode & 0o111).toBe(0o111);
    }
  });

  /** Runs a binary by name from PATH, from an unrelated folder. */
  function run(bin: string, args: string[]): { code: number | null; out: string } {
    const r = spawnSync(bin, args, { cwd: tmpdir(), encoding: 'utf8', env: { ...process.env, PATH: `/usr/local/bin:${process.env.PATH}` } });
    return { code: r.status, out: r.stdout + r.stderr };
  }

  for (const { bin, sub, flags } of commands) {
    it(`${[bin, ...sub].join(' ')}: --help names the README's flags; they and every flag --help lists are accepted`, () => {
      const help = run(bin, [...sub, '--help']);
      expect(help.code, help.out).toBe(0);
      const listed = helpFlags(help.out);
      const takes = new Map(listed.map((l) => [l.flag, l.value]));
      for (const f of flags) {
        expect(help.out, `${bin} ${sub.join(' ')} --help: README's ${f.flag}`).toMatch(new RegExp(`${f.flag}\\b`));
        if (!takes.has(f.flag)) takes.set(f.flag, f.value);
      }
      const arg = (flag: string) => (takes.get(flag) ? [`${flag}=1`] : [flag]);
      // Every flag at once, --help last: parsing fails on any unknown one.
      const all = [...takes.keys()].filter((f) => f !== '--help').flatMap(arg);
      if (run(bin, [...sub, ...all, '--help']).code !== 0) {
        const bad = [...takes.keys()].filter((f) => run(bin, [...sub, ...arg(f), '--help']).code !== 0);
        expect(bad, `${bin} ${sub.join(' ')}: flags the README or --help names but it refuses`).toEqual([]);
      }
    });
  }
});
