#!/usr/bin/env node
/** meshlane-controlplane: see --help. */
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { DEFAULT_SWITCHES } from '@meshlane/proto';
import { serveOps } from './ops-server.js';
import { podReport } from './debug/pods.js';
import type { ControlPlane } from './controlplane.js';
import type { FileSink } from './sinks/file-sink.js';
import type { NatsConnection } from '@nats-io/transport-node';
import type { BusLeadership } from './bus/leadership.js';
import type { ClusterSource } from './source.js';

const HELP = `meshlane-controlplane: computes every node's meshlane desired state from
Kubernetes and istiod.

Usage: meshlane-controlplane [options]

Cluster (one of):
  --kubeconfig FILE        kubeconfig to use (env KUBECONFIG); default: in-cluster
                           service account, then ~/.kube/config
  --cluster-dir DIR        a folder of Pod/Node/Namespace manifests (YAML or JSON),
                           watched for changes, instead of an API server
istiod (sync gate: a pair is accelerated only once both sidecars are synced):
  --istiod ADDR            istiod xDS address host:port, e.g. istiod.istio-system.svc:15012
                           (env MESHLANE_ISTIOD). Without it the sync gate is off.
  --istiod-plaintext       use plaintext (15010); recent istiod refuses debug types there
  --istiod-ca FILE         root cert of istio-ca-root-cert (default /var/run/secrets/istio/root-cert.pem)
  --istiod-token FILE      token of audience istio-ca (default /var/run/secrets/tokens/istio-token)
  --istiod-tls-name NAME   TLS name to verify (default istiod.istio-system.svc)
  --no-ambient             do not subscribe to istiod's ambient workload feed
Output (one or both):
  --nats URL               publish to NATS JetStream (env MESHLANE_NATS_URL): snapshots in
                           the meshlane-snapshots bucket, deltas on MESHLANE_DELTAS
  --nats-user USER         NATS user (env MESHLANE_NATS_USER)
  --nats-password PASS     NATS password (env MESHLANE_NATS_PASSWORD)
  --nats-ca FILE           CA bundle to verify NATS TLS (env MESHLANE_NATS_CA)
  --js-replicas N          JetStream replicas of streams and bucket (default 1; 3 on a
                           3-node NATS cluster)
  --out-dir DIR            write each node's NodeState to DIR/<node>.json
High availability (with --nats):
  --no-leader-elect        publish without electing a leader (run exactly one replica);
                           by default replicas elect one publishing leader with a Lease
  --lease-name NAME        Lease name (default meshlane-controlplane)
  --lease-namespace NS     Lease namespace (default: --pod-namespace)
  --lease-duration S       seconds a leader's lease lasts unrenewed (default 15)
Switches for every node:
  --disable                global kill switch: accelerate nothing new
  --no-app-sockets         never accelerate hops ending in an app socket
  --max-queued-bytes N     flow-control limit per peer socket (default ${DEFAULT_SWITCHES.maxQueuedBytes})
Operations:
  --metrics-addr ADDR      serve /metrics, /healthz, /readyz and /debug/pods/NS/NAME on
                           [HOST:]PORT (default :9465)
  --no-debug-pods          do not serve /debug/pods/NS/NAME (each pod's verdict, read-only,
                           as JSON; what \`meshlane explain\` reads)
  --log-level LEVEL        pino level (default info, env MESHLANE_LOG_LEVEL)
  --pod-name NAME          this pod's name (env POD_NAME), used in istiod's node id
  --pod-namespace NS       this pod's namespace (env POD_NAMESPACE, default istio-system)
  -h, --help               this text
`;

function fail(msg: string): never {
  process.stderr.write(`meshlane-controlplane: ${msg}\n`);
  process.exit(2);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      kubeconfig: { type: 'string', default: process.env.KUBECONFIG },
      'cluster-dir': { type: 'string' },
      istiod: { type: 'string', default: process.env.MESHLANE_ISTIOD },
      'istiod-plaintext': { type: 'boolean', default: false },
      'istiod-ca': { type: 'string', default: '/var/run/secrets/istio/root-cert.pem' },
      'istiod-token': { type: 'string', default: '/var/run/secrets/tokens/istio-token' },
      'istiod-tls-name': { type: 'string' },
      'no-ambient': { type: 'boolean', default: false },
      'out-dir': { type: 'string' },
      nats: { type: 'string', default: process.env.MESHLANE_NATS_URL },
      'nats-user': { type: 'string', default: process.env.MESHLANE_NATS_USER },
      'nats-password': { type: 'string', default: process.env.MESHLANE_NATS_PASSWORD },
      'nats-ca': { type: 'string', default: process.env.MESHLANE_NATS_CA },
      'js-replicas': { type: 'string', default: '1' },
      'no-leader-elect': { type: 'boolean', default: false },
      'lease-name': { type: 'string', default: 'meshlane-controlplane' },
      'lease-namespace': { type: 'string' },
      'lease-duration': { type: 'string', default: '15' },
      disable: { type: 'boolean', default: false },
      'no-app-sockets': { type: 'boolean', default: false },
      'max-queued-bytes': { type: 'string', default: String(DEFAULT_SWITCHES.maxQueuedBytes) },
      'metrics-addr': { type: 'string', default: ':9465' },
      'no-debug-pods': { type: 'boolean', default: false },
      'log-level': { type: 'string', default: process.env.MESHLANE_LOG_LEVEL ?? 'info' },
      'pod-name': { type: 'string', default: process.env.POD_NAME ?? hostname() },
      'pod-namespace': { type: 'string', default: process.env.POD_NAMESPACE ?? 'istio-system' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const maxQueued = Number(values['max-queued-bytes']);
  if (!Number.isInteger(maxQueued) || maxQueued < 0 || maxQueued > 0xffffffff) fail(`--max-queued-bytes must be an integer from 0 to 4294967295, got ${values['max-queued-bytes']}`);
  const log = pino({ name: 'meshlane-controlplane', level: values['log-level'] }, pino.destination(2));
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  // The ops server comes first: the liveness probe gets an answer while
  // NATS connects and the sources list, and /readyz says why not ready.
  let cp: ControlPlane | undefined;
  let leadership: BusLeadership | undefined;
  const server = await serveOps(values['metrics-addr'], registry, () => {
    if (!cp?.ready()) return 'sources not synced';
    const h = leadership?.health();
    if (h?.fenced) return `publishing stopped: ${h.fenced}`;
    const refused = Object.entries(h?.refused ?? {});
    if (refused.length) return `${refused.length} node(s) cannot be published: ${refused.slice(0, 3).map(([n, why]) => `${n}: ${why}`).join('; ')}`;
    return undefined;
  }, values['no-debug-pods'] ? undefined : (ns, name) => (cp ? podReport(cp, ns, name) : { code: 503, body: { error: 'the control plane is starting' } }));
  const bound = server.address();
  log.info({ addr: typeof bound === 'object' && bound ? `${bound.address}:${bound.port}` : values['metrics-addr'] }, `ops server listening (/healthz, /readyz, /metrics${values['no-debug-pods'] ? '' : ', /debug/pods'})`);

  // Everything else is imported only now: loading the Kubernetes and gRPC
  // clients takes seconds, and the probes must be answered meanwhile.
  const [{ ControlPlane }, { FileSink }, { IstiodXdsSource }] = await Promise.all([import('./controlplane.js'), import('./sinks/file-sink.js'), import('./xds/index.js')]);
  const needKube = !values['cluster-dir'] || Boolean(values.kubeconfig);
  const kubeMod = needKube ? await import('./kube/sources.js') : undefined;
  const kc = kubeMod?.loadKubeConfig(values.kubeconfig);
  let kube: ClusterSource;
  if (values['cluster-dir']) {
    const { ManifestSource } = await import('./local/manifests.js');
    kube = new ManifestSource(values['cluster-dir'], log);
  } else {
    kube = new kubeMod!.KubeSources(kc!, log);
  }
  const istiod = values.istiod
    ? new IstiodXdsSource({
        address: values.istiod,
        plaintext: values['istiod-plaintext'],
        ...(values['istiod-plaintext'] ? {} : { caFile: values['istiod-ca'], tokenFile: values['istiod-token'] }),
        ...(values['istiod-tls-name'] ? { tlsServerName: values['istiod-tls-name'] } : {}),
        node: { namespace: values['pod-namespace'], name: values['pod-name'] },
        ambient: !values['no-ambient'],
        logger: log,
      })
    : undefined;
  if (!istiod) log.warn('no --istiod: sync gate off, pods pair as soon as they run');
  const plane = new ControlPlane({
    kube,
    ...(istiod ? { istiod } : {}),
    switches: { enabled: !values.disable, appSockets: !values['no-app-sockets'], maxQueuedBytes: maxQueued },
    logger: log,
    registry,
  });
  cp = plane;
  // Every consumer below hangs off cp.onUpdate, which says nothing before the sources are synced.
  let sink: FileSink | undefined;
  if (values['out-dir']) {
    const fileSink = new FileSink(values['out-dir'], { logger: log, onWritten: (node, generation) => plane.published(node, generation, 'file') });
    plane.onUpdate((u) => fileSink.write(u));
    sink = fileSink;
  }
  if (log.isLevelEnabled('debug')) {
    plane.onUpdate((u) => log.debug({ node: u.node, generation: u.generation, upserts: u.delta.upsertEndpoints.length, removes: u.delta.removeEndpoints.length }, 'node state'));
  }
  let nc: NatsConnection | undefined;
  if (values.nats) {
    const replicas = Number(values['js-replicas']);
    if (![1, 3, 5].includes(replicas)) fail(`--js-replicas must be 1, 3 or 5, got ${values['js-replicas']}`);
    const leaseSeconds = Number(values['lease-duration']);
    if (!Number.isInteger(leaseSeconds) || leaseSeconds < 2) fail(`--lease-duration must be an integer of at least 2, got ${values['lease-duration']}`);
    const [{ connect }, { BusLeadership }, { DEFAULT_LIMITS, setupBus }] = await Promise.all([import('@nats-io/transport-node'), import('./bus/leadership.js'), import('./bus/setup.js')]);
    nc = await connect({
      servers: values.nats.split(','),
      name: `meshlane-controlplane/${values['pod-name']}`,
      maxReconnectAttempts: -1,
      ...(values['nats-user'] ? { user: values['nats-user'], pass: values['nats-password'] } : {}),
      ...(values['nats-ca'] ? { tls: { caFile: values['nats-ca'] } } : {}),
    });
    const kv = await setupBus(nc, { ...DEFAULT_LIMITS, replicas });
    const elector = values['no-leader-elect'] || !kc
      ? undefined
      : new (await import('./leader/lease.js')).LeaseElector(kc, {
          namespace: values['lease-namespace'] ?? values['pod-namespace'],
          name: values['lease-name'],
          identity: values['pod-name'],
          leaseDurationSeconds: leaseSeconds,
          renewDeadlineMs: Math.round(leaseSeconds * 1000 * (2 / 3)),
          retryPeriodMs: Math.max(500, Math.round((leaseSeconds * 1000) / 7)),
          logger: log,
        });
    // meshlane_event_to_publish_seconds{sink="bus"} needs BusLeadership to
    // call plane.published(u.node, u.generation) once a publish resolves.
    leadership = new BusLeadership(plane, { nc, kv, logger: log, source: `controlplane/${values['pod-name']}`, ...(elector ? { elector } : {}) });
  }
  plane.start();
  leadership?.start();
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  log.info('stopping');
  server.close();
  // Keep-alive probe connections would otherwise hold the process for their idle timeout.
  server.closeAllConnections();
  await leadership?.stop();
  await plane.stop();
  // The last states handed to the sink land before the process ends.
  await Promise.race([sink?.idle(), new Promise((r) => setTimeout(r, 5000).unref())]);
  await nc?.drain();
}

main().catch((err: Error) => fail(err.message));
