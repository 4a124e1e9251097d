#!/usr/bin/env node
/**
 * meshlane-worker: the node agent. See `meshlane-worker --help`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Datapath, capacityForPods } from './bpf/datapath.js';
import { probeKernel, missingFeatures, formatFeatures } from './bpf/features.js';
import { DEFAULT_BEHAVIOUR_TIMEOUT_MS, formatBehaviour, probeBehaviour } from './bpf/behaviour.js';
import { DEFAULT_PIN_ROOT } from './bpf/pins.js';
import { formatStatus, readStatus } from './bpf/status.js';
import { Reconciler } from './state/apply.js';
import { PodCgroups } from './pod-cgroups.js';
import { SideTableSweeper } from './state/sweep.js';
import { daemonSetDeleted, discoverPodCgroup, inClusterApi, nodeMaxPods, type ApiAccess } from './node-facts.js';
import { readStateFile, watchStateFile } from './statefile.js';
import { createLogger } from './log.js';
import { WorkerMetrics } from './metrics.js';
import { connect } from '@nats-io/transport-node';
import { NodeFollower } from './bus/follower.js';
import { StatusReporter } from './bus/status.js';

const HELP = `meshlane-worker: loads the meshlane BPF datapath on a node and keeps its maps
equal to the node's desired state.

Usage:
  meshlane-worker run --node NAME --cgroup PATH (--nats URL | --state FILE) [options]
      Load (or re-adopt) and attach the programs to the cgroup v2 PATH, then
      keep the maps equal to the node's desired state:
        --nats URL    from the bus: the node's snapshot, then its deltas in
                      generation order (resync on a gap); status and audit
                      events are published back. If NATS goes away the maps
                      keep the last state.
        --state FILE  from a NodeState file, re-applied whenever it changes.
      Anything that fails validation is refused whole; the maps keep the last
      good state. Stops on SIGTERM/SIGINT and leaves everything attached
      (fail-static).
  meshlane-worker status --node NAME [--json]
      Programs, map occupancy and counters of the node's datapath, and what
      the kernel probe decided (how sk_msg is attached, how a peer's queue
      is measured, what FIONREAD reports), and what the behaviour probe
      found (blocking recv, FIONREAD, splice, SO_RCVLOWAT, MSG_PEEK,
      MSG_WAITALL on sockhash sockets) and decided for app sockets.
  meshlane-worker uninstall --node NAME
      Switch redirects off, detach both programs and remove every pin of the
      node. Live connections continue over TCP, byte-exact.

Options:
  --node NAME           node name (env MESHLANE_NODE)
  --cgroup PATH|auto    cgroup v2 directory to attach to (env MESHLANE_CGROUP); auto
                        (default): the kubelet's kubepods cgroup under --cgroup-root,
                        kubepods.slice (systemd driver) or kubepods (cgroupfs)
  --cgroup-root DIR     the host's cgroup v2 mount (default /sys/fs/cgroup, env
                        MESHLANE_CGROUP_ROOT)
  --state FILE          desired NodeState JSON (run)
  --nats URL            NATS server(s), comma-separated (env MESHLANE_NATS_URL)
  --nats-user USER      NATS user (env MESHLANE_NATS_USER, or a file named by
                        MESHLANE_NATS_USER_FILE)
  --nats-password PASS  NATS password (env MESHLANE_NATS_PASSWORD, or a file named by
                        MESHLANE_NATS_PASSWORD_FILE)
  --nats-ca FILE        CA bundle to verify NATS TLS (env MESHLANE_NATS_CA)
  --status-interval S   heartbeat status every S seconds (default 10)
  --pin-root DIR        bpffs folder for pins (default ${DEFAULT_PIN_ROOT}, env MESHLANE_PIN_ROOT)
  --bpf-dir DIR         folder with sockops.bpf.o, redirect.bpf.o, probe.bpf.o and the
                        behaviour probe (behaviour-probe, behaviour-probe.bpf.o) (env MESHLANE_BPF_DIR)
  --behaviour-timeout MS
                        limit of the behaviour probe at start (default ${DEFAULT_BEHAVIOUR_TIMEOUT_MS}; env
                        MESHLANE_BEHAVIOUR_TIMEOUT_MS); past it every result is unknown
  --app-sockets-auto probe|on|off
                        may pods without the meshlane.io/app-sockets annotation ("auto")
                        have their non-blocking app sockets accelerated? probe (default):
                        when this kernel's behaviour probes find it safe (see status);
                        on / off: force it (env MESHLANE_APP_SOCKETS_AUTO)
  --sk-msg-attach HOW   auto (default: what the probe found), link or map (the classic
                        attach, as before 6.10: lets one kernel exercise both paths)
                        (env MESHLANE_SK_MSG_ATTACH)
  --allow-unbounded-queues
                        run on a kernel that does not count redirected bytes in
                        sk_rmem_alloc (before 6.13 without the 6.1.122 / 5.10
                        backports): flow control then never holds a slow reader's
                        queue; without this flag the worker refuses to start there
  --sweep-interval S    delete side-table entries of closed sockets every S seconds
                        (default 30; another sockops program may have cleared the
                        callback flag that reports a close)
  --max-pods N|auto     pods this node can hold; sizes the maps. auto (default): the
                        Node's status.capacity.pods from the Kubernetes API (the
                        pod's service account needs get on nodes), 110 outside a
                        cluster
  --kube-api URL        Kubernetes API for auto (default: in-cluster; env MESHLANE_KUBE_API)
  --daemonset NS/NAME   the worker's own DaemonSet (env MESHLANE_DAEMONSET): when it is
                        deleted (helm uninstall), a stopping worker detaches the programs
                        and removes its pins, as uninstall does; on any other stop (rolling
                        update, drain, crash) everything stays attached
  --max-connections N   sockets accelerated at once (default 65536)
  --metrics-addr ADDR   serve /metrics, /healthz, /readyz on [HOST:]PORT (run; default off)
  --log-level LEVEL     pino level (default info, env MESHLANE_LOG_LEVEL)
  --json                status as JSON
  -h, --help            this text
`;

/** A credential handed over as a file (a Secret volume), named by an env variable. */
function fileEnv(name: string): string | undefined {
  const path = process.env[name];
  return path ? readFileSync(path, 'utf8').trim() : undefined;
}

function defaultBpfDir(): string {
  return fileURLToPath(new URL('../../bpf/out', import.meta.url));
}

function fail(msg: string, code = 2): never {
  process.stderr.write(`meshlane-worker: ${msg}\n`);
  process.exit(code);
}

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      node: { type: 'string', default: process.env.MESHLANE_NODE },
      cgroup: { type: 'string', default: process.env.MESHLANE_CGROUP ?? 'auto' },
      'cgroup-root': { type: 'string', default: process.env.MESHLANE_CGROUP_ROOT ?? '/sys/fs/cgroup' },
      'kube-api': { type: 'string', default: process.env.MESHLANE_KUBE_API },
      daemonset: { type: 'string', default: process.env.MESHLANE_DAEMONSET },
      state: { type: 'string' },
      nats: { type: 'string', default: process.env.MESHLANE_NATS_URL },
      'nats-user': { type: 'string', default: process.env.MESHLANE_NATS_USER ?? fileEnv('MESHLANE_NATS_USER_FILE') },
      'nats-password': { type: 'string', default: process.env.MESHLANE_NATS_PASSWORD ?? fileEnv('MESHLANE_NATS_PASSWORD_FILE') },
      'nats-ca': { type: 'string', default: process.env.MESHLANE_NATS_CA },
      'status-interval': { type: 'string', default: '10' },
      'sweep-interval': { type: 'string', default: '30' },
      'pin-root': { type: 'string', default: process.env.MESHLANE_PIN_ROOT ?? DEFAULT_PIN_ROOT },
      'bpf-dir': { type: 'string', default: process.env.MESHLANE_BPF_DIR },
      'max-pods': { type: 'string', default: 'auto' },
      'max-connections': { type: 'string', default: '65536' },
      'metrics-addr': { type: 'string' },
      'log-level': { type: 'string', default: process.env.MESHLANE_LOG_LEVEL ?? 'info' },
      'allow-unbounded-queues': { type: 'boolean', default: false },
      'sk-msg-attach': { type: 'string', default: process.env.MESHLANE_SK_MSG_ATTACH ?? 'auto' },
      'app-sockets-auto': { type: 'string', default: process.env.MESHLANE_APP_SOCKETS_AUTO ?? 'probe' },
      'behaviour-timeout': { type: 'string', default: process.env.MESHLANE_BEHAVIOUR_TIMEOUT_MS ?? String(DEFAULT_BEHAVIOUR_TIMEOUT_MS) },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const cmd = positionals[0];
  if (values.help || !cmd) {
    process.stdout.write(HELP);
    if (!values.help) process.exit(2);
    return;
  }
  const node = values.node ?? fail('--node is required');
  const pinRoot = values['pin-root'];
  switch (cmd) {
    case 'run':
      return run({
        node,
        pinRoot,
        cgroup: values.cgroup === 'auto' ? cgroupOrFail(values['cgroup-root']) : values.cgroup,
        state: values.state,
        nats: values.nats ? { servers: values.nats.split(','), user: values['nats-user'], pass: values['nats-password'], ca: values['nats-ca'] } : undefined,
        statusIntervalMs: positiveInt(values['status-interval'], '--status-interval') * 1000,
        sweepIntervalMs: positiveInt(values['sweep-interval'], '--sweep-interval') * 1000,
        bpfDir: values['bpf-dir'] ?? defaultBpfDir(),
        maxPods: values['max-pods'] === 'auto' ? 'auto' : positiveInt(values['max-pods'], '--max-pods'),
        kubeApi: values['kube-api'] ? { url: values['kube-api'] } : inClusterApi(),
        daemonSet: values.daemonset ? nsName(values.daemonset) : undefined,
        maxConnections: positiveInt(values['max-connections'], '--max-connections'),
        metricsAddr: values['metrics-addr'],
        logLevel: values['log-level'],
        allowUnboundedQueues: values['allow-unbounded-queues'],
        skMsgAttach: oneOf(values['sk-msg-attach'], ['auto', 'link', 'map'] as const, '--sk-msg-attach'),
        appSocketsAuto: oneOf(values['app-sockets-auto'], ['probe', 'on', 'off'] as const, '--app-sockets-auto'),
        behaviourTimeoutMs: positiveInt(values['behaviour-timeout'], '--behaviour-timeout'),
      });
    case 'status': {
      if (!Datapath.installed(pinRoot, node)) fail(`node ${node}: no datapath installed under ${pinRoot}`, 1);
      const dp = Datapath.openPinned(pinRoot, node);
      const s = readStatus(dp);
      dp.close();
      const bpfDir = values['bpf-dir'] ?? defaultBpfDir();
      const kernel = probeKernel(bpfDir);
      // Probed again here, as the features are: the same kernel answers the same.
      const behaviour = await probeBehaviour({ bpfDir, timeoutMs: positiveInt(values['behaviour-timeout'], '--behaviour-timeout') });
      process.stdout.write(values.json ? `${JSON.stringify({ ...s, kernel, behaviour }, null, 2)}\n` : `${formatStatus(s)}\n${formatFeatures(kernel)}\n${formatBehaviour(behaviour)}\n`);
      return;
    }
    case 'uninstall':
      return uninstall(pinRoot, node);
    default:
      fail(`unknown command ${JSON.stringify(cmd)}; see --help`);
  }
}

function nsName(v: string): { namespace: string; name: string } {
  const [namespace, name, extra] = v.split('/');
  if (!namespace || !name || extra !== undefined) fail(`--daemonset must be NAMESPACE/NAME, got ${JSON.stringify(v)}`);
  return { namespace, name };
}

function cgroupOrFail(root: string): string {
  try {
    return discoverPodCgroup(root).path;
  } catch (err) {
    return fail((err as Error).message, 1);
  }
}

/** --max-pods auto: the Node's capacity, or the kubelet's default outside a cluster. */
async function maxPodsOf(o: RunOptions, log: ReturnType<typeof createLogger>): Promise<number> {
  if (o.maxPods !== 'auto') return o.maxPods;
  if (!o.kubeApi) {
    log.warn('--max-pods auto outside a cluster (no Kubernetes API): sizing the maps for 110 pods');
    return 110;
  }
  // Bounded: the programs must be attached and health served in time for
  // the kubelet's probes even when the API is slow.
  for (let attempt = 1, delay = 500; ; attempt++, delay *= 2) {
    try {
      const n = await nodeMaxPods(o.kubeApi, o.node);
      log.info({ maxPods: n }, 'pod capacity of the node, from its Node object');
      return n;
    } catch (err) {
      if (attempt >= 5) {
        log.error({ err: (err as Error).message }, 'cannot read the node\'s pod capacity: sizing the maps for 250 pods (give --max-pods N, or let the service account get nodes)');
        return 250;
      }
      log.warn({ err: (err as Error).message, retryMs: delay }, 'cannot read the node\'s pod capacity yet; retrying');
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

function oneOf<T extends string>(v: string, allowed: readonly T[], flag: string): T {
  if (!(allowed as readonly string[]).includes(v)) fail(`${flag} must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
  return v as T;
}

function positiveInt(v: string, flag: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) fail(`${flag} must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

function uninstall(pinRoot: string, node: string): void {
  const log = createLogger('info');
  // Switch off first: every further send goes over TCP, behind the bytes
  // already queued at peers, which stay readable because no socket is
  // deleted from the sockhash (a delete would purge its queue).
  Datapath.switchOff(pinRoot, node);
  const removed = Datapath.remove(pinRoot, node);
  log.info({ node, removed: removed.length }, removed.length ? 'uninstalled' : 'nothing to uninstall');
}

interface NatsOptions {
  servers: string[];
  user: string | undefined;
  pass: string | undefined;
  ca: string | undefined;
}

interface RunOptions {
  node: string;
  pinRoot: string;
  cgroup: string;
  state: string | undefined;
  nats: NatsOptions | undefined;
  statusIntervalMs: number;
  sweepIntervalMs: number;
  bpfDir: string;
  maxPods: number | 'auto';
  kubeApi: ApiAccess | undefined;
  daemonSet: { namespace: string; name: string } | undefined;
  maxConnections: number;
  metricsAddr: string | undefined;
  logLevel: string;
  allowUnboundedQueues: boolean;
  skMsgAttach: 'auto' | 'link' | 'map';
  behaviourTimeoutMs: number;
  appSocketsAuto: 'probe' | 'on' | 'off';
}

/** The probe's choice, or the forced one if this kernel can do it. */
function chooseSkMsgAttach(wanted: RunOptions['skMsgAttach'], probed: 'link' | 'map' | 'none'): 'link' | 'map' {
  if (wanted === 'auto') return probed === 'map' ? 'map' : 'link';
  if (wanted === 'link' && probed !== 'link') fail('--sk-msg-attach link: this kernel has no sockmap bpf_links (6.10+)', 1);
  return wanted;
}

async function run(o: RunOptions): Promise<void> {
  const log = createLogger(o.logLevel).child({ node: o.node });
  const features = probeKernel(o.bpfDir);
  const missing = missingFeatures(features, { flowControl: !o.allowUnboundedQueues });
  if (missing.length) fail(`this kernel (${features.kernel}) cannot run meshlane; missing: ${missing.join('; ')}`, 1);
  log.info({ features }, `kernel features: ${formatFeatures(features).replace(/\n/g, '; ')}`);
  // What sockhash sockets show to apps here; decisions.appSocketsAuto says
  // which app sockets of 'auto' pods may join. Never throws: 'unknown' on failure.
  const behaviour = await probeBehaviour({ bpfDir: o.bpfDir, timeoutMs: o.behaviourTimeoutMs });
  const summary = `kernel behaviour: ${formatBehaviour(behaviour).split('\n').slice(1).map((l) => l.trim()).join('; ')}`;
  if (behaviour.probeError) log.warn({ behaviour }, summary);
  else log.info({ behaviour }, summary);

  const dp = Datapath.install({
    node: o.node,
    cgroup: o.cgroup,
    objectDir: o.bpfDir,
    pinRoot: o.pinRoot,
    capacity: capacityForPods(await maxPodsOf(o, log), o.maxConnections),
    skMsgAttach: chooseSkMsgAttach(o.skMsgAttach, features.skMsgAttach),
  });
  if (dp.recreated.length) log.warn({ differences: dp.recreated }, 'pinned maps had another layout: switched off, detached and re-created; live connections finish over TCP');
  if (dp.repaired.length) log.warn({ repaired: dp.repaired }, 'a half-finished earlier install was completed');
  if (dp.upgraded.length) log.info({ upgraded: dp.upgraded }, 'programs replaced in place by this version (BPF_LINK_UPDATE); connections kept');
  log.info({ adopted: dp.adopted, pins: dp.pins.dir, cgroup: o.cgroup }, dp.adopted ? 're-adopted pinned datapath' : 'datapath loaded and attached');

  // "auto" app sockets (pods without the app-sockets annotation) join only
  // where this kernel's behaviour probes allow it, unless forced.
  const appSocketsAuto = o.appSocketsAuto === 'probe' ? behaviour.decisions.appSocketsAuto === 'nonblocking-only' : o.appSocketsAuto === 'on';
  log.info({ appSocketsAuto, flag: o.appSocketsAuto, reason: behaviour.decisions.reason }, appSocketsAuto ? '"auto" app sockets: non-blocking ones join' : '"auto" app sockets stay on TCP (only pods annotated meshlane.io/app-sockets: "true" get theirs accelerated)');
  const metrics = new WorkerMetrics(dp, features, behaviour);
  const sweeper = new SideTableSweeper(dp);
  const sweep = setInterval(() => {
    try {
      const n = sweeper.sweep();
      if (n.pending || n.links) {
        metrics.swept.inc({ map: 'ml_pending' }, n.pending);
        metrics.swept.inc({ map: 'ml_links' }, n.links);
        log.debug({ swept: n }, 'side-table entries of closed sockets deleted');
      }
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'sweeping the side tables failed; next time');
    }
  }, o.sweepIntervalMs);
  sweep.unref();
  // Entries bind to each pod's own cgroup (found by its uid under the
  // attach point); pods whose cgroup is not there yet are retried below.
  const reconciler = new Reconciler(dp, { podCgroups: new PodCgroups(o.cgroup), appSocketsAuto: () => appSocketsAuto });
  const retryUnresolved = setInterval(() => {
    if (!reconciler.unresolved.length) return;
    try {
      const r = reconciler.refresh();
      if (r && Object.keys(r.changed).length) log.info({ resolved: r.unresolved.length === 0, unresolved: r.unresolved }, 'pod cgroups found; entries bound');
    } catch (err) {
      log.warn({ err: (err as Error).message }, 're-applying for pod cgroups failed; next time');
    }
  }, Math.min(o.sweepIntervalMs, 2000));
  retryUnresolved.unref();
  let ready = false;
  let shutdown: () => Promise<void>;
  // Health first: liveness must not kill a worker that waits for NATS.
  const server = o.metricsAddr ? await metrics.serve(o.metricsAddr, { live: () => true, ready: () => ready }) : undefined;
  if (o.nats) {
    log.info({ servers: o.nats.servers }, 'connecting to NATS (the maps keep their state meanwhile)');
    const nc = await connect({
      servers: o.nats.servers,
      name: `meshlane-worker/${o.node}`,
      // Keep trying until NATS answers, then forever after a disconnect.
      waitOnFirstConnect: true,
      maxReconnectAttempts: -1,
      ...(o.nats.user ? { user: o.nats.user, pass: o.nats.pass } : {}),
      ...(o.nats.ca ? { tls: { caFile: o.nats.ca } } : {}),
    });
    const follower = new NodeFollower({
      nc,
      node: o.node,
      reconciler,
      logger: log,
      onApplied: () => {
        ready = true;
        metrics.applies.inc();
        status.report();
      },
      onError: (kind) => metrics.busErrors.inc({ kind }),
    });
    const status = new StatusReporter(nc, dp, follower, features, behaviour);
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') {
          status.connected = false;
          log.warn('NATS disconnected; the maps keep the last state');
        } else if (s.type === 'reconnect') {
          status.connected = true;
          log.info('NATS reconnected');
          follower.kick();
          status.report();
        }
      }
    })();
    follower.start();
    status.start(o.statusIntervalMs);
    status.report();
    shutdown = async () => {
      status.stop();
      await follower.stop();
      await nc.drain();
    };
  } else {
    const file = o.state ?? fail('--nats or --state is required for run');
    const apply = (): void => {
      try {
        const state = readStateFile(file, o.node);
        const started = process.hrtime.bigint();
        const r = reconciler.apply(state);
        ready = true;
        metrics.applies.inc();
        log.info({ generation: r.generation, changed: r.changed, entries: r.entries, ms: Number(process.hrtime.bigint() - started) / 1e6 }, 'desired state applied');
      } catch (err) {
        metrics.stateErrors.inc();
        log.error({ err: (err as Error).message }, 'desired state refused; keeping the last good state');
      }
    };
    apply();
    const unwatch = watchStateFile(file, apply);
    shutdown = async () => unwatch();
  }

  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info({ signal: sig }, 'stopping');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  clearInterval(sweep);
  clearInterval(retryUnresolved);
  await shutdown();
  server?.close();
  dp.close();
  if (o.daemonSet && o.kubeApi && (await daemonSetDeleted(o.kubeApi, o.daemonSet.namespace, o.daemonSet.name))) {
    log.info({ daemonset: `${o.daemonSet.namespace}/${o.daemonSet.name}` }, 'my DaemonSet is being deleted: uninstalling (connections continue over TCP)');
    uninstall(o.pinRoot, o.node);
  } else {
    log.info('programs and maps stay attached (fail-static)');
  }
}

main(process.argv.slice(2)).catch((err: Error) => fail(err.message, 1));
