/**
 * Simulated nodes and pods on one kernel.
 *
 * A pod is a network namespace with a veth to a bridge in a "fabric"
 * namespace (the machine's own namespace is never touched). A node is a
 * cgroup v2 subtree holding its pods' processes, with its own worker and its
 * own pinned maps. Meshed pods get istio-iptables REDIRECT rules and a sidecar
 * (mesh-proxy, uid 1337) that honours SO_ORIGINAL_DST.
 *
 * Every resource is named with this run's prefix and removed by cleanup(),
 * which also runs on process exit. sweepStale() removes what runs that died
 * left behind, and only those: the prefix carries the dead run's pid.
 */
import { type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { NODE_STATE_API_VERSION, bytesToIp, type Endpoint, type NodeState } from '@meshlane/proto';
import { Datapath, readCounters, type CounterName } from '@meshlane/node-worker';
import { alive, exited, requireRoot, sh, spawnIn, trySh } from './exec.js';
import { istioNatRules } from './istio-iptables.js';

export const ROOT = resolve(import.meta.dirname, '../..');
export const TOOLS = join(ROOT, 'build/tools');
export const WORKER_CLI = join(ROOT, 'node-worker/dist/cli.js');
export const CGROUP2 = '/sys/fs/cgroup/unified';
export const PIN_ROOT = '/sys/fs/bpf/meshlane';
const PREFIX = 'mlt';
const APP_UID = 1000;

export interface PodSpec {
  name: string;
  node: string;
  /** Index within 1..250, gives 10.77.0.<i> and fd77::<i>. */
  index: number;
  meshed: boolean;
  /**
   * What answers on the capture ports of a meshed pod: the relaying
   * mesh-proxy (default), or an echo / sink server as the proxy uid, which
   * isolates one hop for benchmarks; or none, the test starting its own
   * proxy as proxyUid (test/compat runs HAProxy there).
   */
  sidecar?: 'proxy' | 'echo' | 'sink' | 'none';
  proxyUid?: number;
  excludeInboundPorts?: number[];
  excludeOutboundPorts?: number[];
  /** App servers to run in the pod, port -> mode. */
  servers?: Record<number, 'echo' | 'sink'>;
}

/** A deterministic RFC 4122-shaped uid for a test pod (version 4 bits set). */
export function podUid(prefix: string, name: string): string {
  const h = createHash('sha256').update(`${prefix}/${name}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export class Pod {
  readonly ip4: string;
  readonly ip6: string;
  constructor(
    readonly cluster: TestCluster,
    readonly spec: PodSpec,
    readonly netns: string,
    readonly cgroup: string,
  ) {
    this.ip4 = `10.77.0.${spec.index}`;
    this.ip6 = `fd77::${spec.index}`;
  }

  get name(): string {
    return this.spec.name;
  }

  /**
   * metadata.uid of the pod, stable for one run: kubelet names the pod's
   * cgroup after it (pod<uid>, the cgroupfs driver's form), and the worker
   * finds the cgroup by it.
   */
  get uid(): string {
    return podUid(this.cluster.prefix, this.spec.name);
  }

  /**
   * The NodeState endpoint the control plane would compute for this pod,
   * opted in to app sockets ("always"): the datapath suites test the fast
   * lane itself on every hop; the per-socket "auto" policy (the control
   * plane's default) has its own suite.
   */
  endpoint(overrides: Partial<Endpoint> = {}): Endpoint {
    return {
      pod: `default/${this.name}`,
      uid: this.uid,
      ips: [this.ip4, this.ip6],
      proxyUid: this.spec.proxyUid ?? 1337,
      accelerate: true,
      appSockets: 'always',
      outboundPort: 15001,
      inboundPort: 15006,
      inbound: { includePorts: '*', excludePorts: [15020, 15021, 15090, ...(this.spec.excludeInboundPorts ?? [])] },
      outbound: { excludePorts: this.spec.excludeOutboundPorts ?? [], includeCidrs: '*', excludeCidrs: [] },
      ...overrides,
    };
  }

  /** Runs a command in this pod's netns and cgroup. */
  spawn(cmd: string[], uid = APP_UID): ChildProcess {
    const p = spawnIn({ netns: this.netns, cgroup: this.cgroup, uid, cmd });
    this.cluster.track(p);
    return p;
  }

  /** Runs a command to completion in this pod. */
  run(cmd: string[], uid = APP_UID, timeoutMs = 60000): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const p = this.spawn(cmd, uid);
    let stdout = '';
    let stderr = '';
    p.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    // 'close', not 'exit': the process can exit before its stdout is read.
    return new Promise((res) => {
      p.once('close', (code) => {
        clearTimeout(timer);
        res({ code, stdout, stderr });
      });
    });
  }

  /** A client app process in this pod (see pod-agent.mjs). */
  async agent(): Promise<Agent> {
    const p = this.spawn([process.execPath, join(import.meta.dirname, 'pod-agent.mjs')]);
    return new Agent(p);
  }
}

export interface XferResult {
  error?: string;
  sentBytes: number;
  recvBytes: number;
  sentSha: string;
  recvSha: string;
  ms: number;
}

export interface ManyResult {
  count: number;
  errors: string[];
  mismatches: number;
  bytes: number;
}

export class Agent {
  private next = 1;
  private waiting = new Map<number, (v: { result?: unknown; error?: string }) => void>();
  constructor(readonly proc: ChildProcess) {
    const rl = createInterface({ input: proc.stdout! });
    rl.on('line', (line) => {
      const msg = JSON.parse(line) as { id: number; result?: unknown; error?: string };
      this.waiting.get(msg.id)?.(msg);
      this.waiting.delete(msg.id);
    });
  }

  private call<T>(op: string, args: object): Promise<T> {
    const id = this.next++;
    return new Promise<T>((res, rej) => {
      this.waiting.set(id, (m) => (m.error ? rej(new Error(m.error)) : res(m.result as T)));
      this.proc.stdin!.write(`${JSON.stringify({ id, op, args })}\n`);
    });
  }

  xfer(args: { host: string; port: number; bytes: number; halfClose?: boolean; chunk?: number; pauseMs?: number }): Promise<XferResult> {
    return this.call('xfer', args);
  }

  many(args: { host: string; port: number; bytes: number; count: number }): Promise<ManyResult> {
    return this.call('many', args);
  }

  sink(args: { host: string; port: number; bytes: number }): Promise<{ counted?: number; sent: number; error?: string }> {
    return this.call('sink', args);
  }

  reset(args: { host: string; port: number }): Promise<{ echoed?: number; error?: string }> {
    return this.call('reset', args);
  }

  close(): void {
    this.proc.stdin?.end();
    this.proc.kill();
  }
}

export class Worker {
  proc: ChildProcess | undefined;
  log = '';
  /** Serve /metrics, /healthz, /readyz on this 127.0.0.1 port from the next start. */
  metricsPort: number | undefined;
  /** The BPF objects of the next start (default: the build's bpf/out). */
  bpfDir: string | undefined;
  /** More `run` flags for the next start. */
  extraArgs: string[] = [];
  /** The argv that runs meshlane-worker from the next start (default: node and the build's dist/cli.js). */
  command: string[] | undefined;
  constructor(
    readonly cluster: TestCluster,
    readonly node: string,
    readonly stateFile: string,
    /** Follow the bus instead of the state file. */
    readonly natsUrl?: string,
    /** NATS user and password for this node's worker. */
    readonly natsAuth?: { user: string; pass: string },
  ) {}

  get pinNode(): string {
    return this.cluster.nodeName(this.node);
  }

  async start(): Promise<void> {
    const { spawn } = await import('node:child_process');
    this.log = '';
    const source = this.natsUrl ? ['--nats', this.natsUrl, '--status-interval', '1'] : ['--state', this.stateFile];
    if (this.metricsPort) source.push('--metrics-addr', `127.0.0.1:${this.metricsPort}`);
    if (this.bpfDir) source.push('--bpf-dir', this.bpfDir);
    source.push(...this.extraArgs);
    const [cmd, ...pre] = this.command ?? [process.execPath, WORKER_CLI];
    const p = spawn(cmd!, [...pre, 'run', '--node', this.pinNode, '--cgroup', this.cluster.nodeCgroup(this.node), ...source, '--pin-root', PIN_ROOT, '--log-level', 'debug'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...(this.natsAuth ? { MESHLANE_NATS_USER: this.natsAuth.user, MESHLANE_NATS_PASSWORD: this.natsAuth.pass } : {}) },
    });
    this.cluster.track(p);
    this.cluster.workerProcs.add(p);
    p.stdout.on('data', (d: Buffer) => (this.log += d.toString()));
    p.stderr.on('data', (d: Buffer) => (this.log += d.toString()));
    this.proc = p;
    await this.waitForLog(this.natsUrl ? /"msg":"kernel features/ : /desired state (applied|refused)/, 20000);
    if (this.natsUrl) await this.waitForLog(/following the bus|bus not created yet/, 20000);
  }

  /** `meshlane-worker status --json`: programs, maps, counters and the kernel probe's decisions. */
  statusJson(): unknown {
    return JSON.parse(sh(process.execPath, [WORKER_CLI, 'status', '--json', '--node', this.pinNode, '--pin-root', PIN_ROOT]));
  }

  /** The pod IPs in this node's endpoint map. */
  endpointIps(): string[] {
    const dp = Datapath.openPinned(PIN_ROOT, this.pinNode);
    try {
      return dp.maps.ml_endpoints.keys().map((k) => bytesToIp(k)).sort();
    } finally {
      dp.close();
    }
  }

  async waitForLog(re: RegExp, ms = 10000, from = 0): Promise<void> {
    const end = Date.now() + ms;
    while (!re.test(this.log.slice(from))) {
      if (this.proc && exited(this.proc)) throw new Error(`worker ${this.node} exited ${this.proc.exitCode}: ${this.log}`);
      if (Date.now() > end) throw new Error(`worker ${this.node}: no ${re} within ${ms} ms; log:\n${this.log}`);
      await sleep(20);
    }
  }

  /** Writes a new desired state and waits until the worker has applied (or refused) it. */
  async apply(state: NodeState): Promise<void> {
    const from = this.log.length;
    writeFileSync(`${this.stateFile}.tmp`, JSON.stringify(state));
    const { renameSync } = await import('node:fs');
    renameSync(`${this.stateFile}.tmp`, this.stateFile);
    await this.waitForLog(/desired state (applied|refused)/, 10000, from);
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const p = this.proc;
    if (!p || exited(p)) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill(signal);
    await gone;
  }

  counters(): Record<CounterName, number> {
    const dp = Datapath.openPinned(PIN_ROOT, this.pinNode);
    try {
      return readCounters(dp);
    } finally {
      dp.close();
    }
  }

  uninstall(): string {
    return sh(process.execPath, [WORKER_CLI, 'uninstall', '--node', this.pinNode, '--pin-root', PIN_ROOT]);
  }
}

export class TestCluster {
  readonly prefix = `${PREFIX}${process.pid}`;
  readonly fabric: string;
  readonly cgroupRoot: string;
  readonly tmp: string;
  readonly pods = new Map<string, Pod>();
  readonly workers = new Map<string, Worker>();
  private procs = new Set<ChildProcess>();
  readonly workerProcs = new Set<ChildProcess>();
  private cleaned = false;
  private readonly onExit = () => this.cleanupSync();

  constructor(readonly nodes: string[]) {
    requireRoot();
    sweepStale();
    ensureBpffs();
    this.fabric = `${this.prefix}-fab`;
    this.cgroupRoot = join(CGROUP2, this.prefix);
    this.tmp = mkdtempSync(join(tmpdir(), `${this.prefix}-`));
    chmodSync(this.tmp, 0o777);
    process.once('exit', this.onExit);
    sh('ip', ['netns', 'add', this.fabric]);
    sh('ip', ['-n', this.fabric, 'link', 'add', 'br0', 'type', 'bridge']);
    sh('ip', ['-n', this.fabric, 'link', 'set', 'br0', 'up']);
    sh('ip', ['-n', this.fabric, 'link', 'set', 'lo', 'up']);
    mkdirSync(this.cgroupRoot);
    for (const n of nodes) mkdirSync(this.nodeCgroup(n));
  }

  nodeName(node: string): string {
    return `${this.prefix}-${node}`;
  }

  nodeCgroup(node: string): string {
    return join(this.cgroupRoot, node);
  }

  track(p: ChildProcess): void {
    this.procs.add(p);
    p.once('exit', () => this.procs.delete(p));
  }

  /** Pins every pod process (sidecars, servers, agents) to the given CPUs. */
  pinPods(cpus: string): void {
    for (const p of this.procs) {
      if (p.pid && !this.workerProcs.has(p)) trySh('taskset', ['-a', '-cp', cpus, String(p.pid)]);
    }
  }

  async addPod(spec: PodSpec): Promise<Pod> {
    const netns = `${this.prefix}-${spec.name}`;
    const cgroup = join(this.nodeCgroup(spec.node), `pod${podUid(this.prefix, spec.name)}`);
    mkdirSync(cgroup);
    const pod = new Pod(this, spec, netns, cgroup);
    this.pods.set(spec.name, pod);
    sh('ip', ['netns', 'add', netns]);
    sh('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    sh('ip', ['-n', netns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `p${spec.index}`, 'netns', this.fabric]);
    sh('ip', ['-n', this.fabric, 'link', 'set', `p${spec.index}`, 'master', 'br0', 'up']);
    sh('ip', ['-n', netns, 'addr', 'add', `${pod.ip4}/16`, 'dev', 'eth0']);
    sh('ip', ['-n', netns, 'addr', 'add', `${pod.ip6}/64`, 'dev', 'eth0', 'nodad']);
    sh('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
    if (spec.meshed) {
      // Envoy sources inbound hops from 127.0.0.6 / ::6; istio puts ::6 on lo.
      sh('ip', ['-n', netns, 'addr', 'add', '::6/128', 'dev', 'lo', 'nodad']);
      const rules = { proxyUid: spec.proxyUid ?? 1337, outboundPort: 15001, inboundPort: 15006, excludeInboundPorts: spec.excludeInboundPorts ?? [], excludeOutboundPorts: spec.excludeOutboundPorts ?? [] };
      sh('ip', ['netns', 'exec', netns, 'iptables-restore'], istioNatRules({ ...rules, v4: true }));
      sh('ip', ['netns', 'exec', netns, 'ip6tables-restore'], istioNatRules({ ...rules, v4: false }));
      const uid = spec.proxyUid ?? 1337;
      const mode = spec.sidecar ?? 'proxy';
      if (mode === 'proxy') {
        const ready = join(this.tmp, `${spec.name}.proxy.ready`);
        pod.spawn([join(TOOLS, 'mesh-proxy'), '--ready-file', ready], uid);
        await waitForFile(ready);
      } else if (mode !== 'none') {
        for (const port of [15001, 15006]) {
          const ready = join(this.tmp, `${spec.name}.stub${port}.ready`);
          pod.spawn([join(TOOLS, 'app-server'), '--port', String(port), '--mode', mode, '--ready-file', ready], uid);
          await waitForFile(ready);
        }
      }
    }
    for (const [port, mode] of Object.entries(spec.servers ?? {})) {
      const ready = join(this.tmp, `${spec.name}.${port}.ready`);
      pod.spawn([join(TOOLS, 'app-server'), '--port', port, '--mode', mode, '--ready-file', ready]);
      await waitForFile(ready);
    }
    return pod;
  }

  pod(name: string): Pod {
    const p = this.pods.get(name);
    if (!p) throw new Error(`no pod ${name}`);
    return p;
  }

  /** Desired state of a node: the given endpoints (default: its meshed pods). */
  state(node: string, opts: { generation?: number; endpoints?: Endpoint[]; enabled?: boolean; appSockets?: boolean; maxQueuedBytes?: number } = {}): NodeState {
    const endpoints = opts.endpoints ?? [...this.pods.values()].filter((p) => p.spec.node === node && p.spec.meshed).map((p) => p.endpoint());
    return {
      apiVersion: NODE_STATE_API_VERSION,
      kind: 'NodeState',
      node: this.nodeName(node),
      generation: opts.generation ?? 1,
      switches: { enabled: opts.enabled ?? true, appSockets: opts.appSockets ?? true, maxQueuedBytes: opts.maxQueuedBytes ?? 16 << 20 },
      endpoints,
    };
  }

  async startWorker(node: string, state = this.state(node), extraArgs: string[] = []): Promise<Worker> {
    const file = join(this.tmp, `${node}.state.json`);
    writeFileSync(file, JSON.stringify(state));
    const w = new Worker(this, node, file);
    w.extraArgs = extraArgs;
    this.workers.set(node, w);
    await w.start();
    return w;
  }

  /** A worker that follows its node on the bus. */
  async startBusWorker(node: string, natsUrl: string, natsAuth?: { user: string; pass: string }): Promise<Worker> {
    const w = new Worker(this, node, join(this.tmp, `${node}.unused.json`), natsUrl, natsAuth);
    this.workers.set(node, w);
    await w.start();
    return w;
  }

  worker(node: string): Worker {
    const w = this.workers.get(node);
    if (!w) throw new Error(`no worker on ${node}`);
    return w;
  }

  async cleanup(): Promise<void> {
    const exits = [...this.procs].map((p) => new Promise((r) => (exited(p) ? r(null) : p.once('exit', r))));
    for (const p of this.procs) p.kill('SIGKILL');
    await Promise.race([Promise.all(exits), sleep(5000)]);
    this.cleanupSync();
  }

  /** Synchronous so it can also run from process.on('exit'). */
  cleanupSync(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    process.removeListener('exit', this.onExit);
    for (const p of this.procs) p.kill('SIGKILL');
    for (const node of this.nodes) {
      try {
        Datapath.remove(PIN_ROOT, this.nodeName(node));
      } catch {
        // best effort: sweepStale retries on the next run
      }
    }
    removeByPrefix(this.prefix);
    rmSync(this.tmp, { recursive: true, force: true });
  }
}

function removeByPrefix(prefix: string): void {
  for (const ns of listNetns()) if (ns.startsWith(`${prefix}-`)) trySh('ip', ['netns', 'del', ns]);
  const cg = join(CGROUP2, prefix);
  if (existsSync(cg)) removeCgroupTree(cg);
  if (existsSync(PIN_ROOT)) {
    for (const d of readdirSync(PIN_ROOT)) {
      if (d.startsWith(`${prefix}-`)) {
        try {
          Datapath.remove(PIN_ROOT, d);
        } catch {
          rmSync(join(PIN_ROOT, d), { recursive: true, force: true });
        }
      }
    }
    if (readdirSync(PIN_ROOT).length === 0) rmdirSync(PIN_ROOT);
  }
}

function removeCgroupTree(dir: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeCgroupTree(join(dir, e.name));
  // Processes must have left; kill any that did not, then retry briefly.
  for (let i = 0; i < 50; i++) {
    const procs = readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim();
    if (!procs) break;
    for (const pid of procs.split('\n')) trySh('kill', ['-9', pid]);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
  try {
    rmdirSync(dir);
  } catch {
    // left for the next sweep
  }
}

function listNetns(): string[] {
  return sh('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter(Boolean);
}


/** Removes leftovers of earlier test runs whose process is gone. */
export function sweepStale(): void {
  const re = new RegExp(`^${PREFIX}(\\d+)(-|$)`);
  const dead = new Set<string>();
  const names = [...listNetns(), ...(existsSync(CGROUP2) ? readdirSync(CGROUP2) : []), ...(existsSync(PIN_ROOT) ? readdirSync(PIN_ROOT) : [])];
  for (const n of names) {
    const m = re.exec(n);
    if (m?.[1] && !alive(Number(m[1]))) dead.add(`${PREFIX}${m[1]}`);
  }
  for (const p of dead) removeByPrefix(p);
}

export function ensureBpffs(): void {
  const mounts = readFileSync('/proc/mounts', 'utf8');
  if (!mounts.split('\n').some((l) => l.split(' ')[1] === '/sys/fs/bpf' && l.split(' ')[2] === 'bpf')) {
    sh('mount', ['-t', 'bpf', 'bpf', '/sys/fs/bpf']);
  }
}

export async function waitForFile(path: string, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > end) throw new Error(`${path} did not appear within ${ms} ms`);
    await sleep(10);
  }
}
