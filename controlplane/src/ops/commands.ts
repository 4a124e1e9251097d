/** The commands: parse their flags, connect, run, and return the exit code. */
import { parseArgs, type ParseArgsConfig } from 'node:util';

type ParseArgsOptionsConfig = NonNullable<ParseArgsConfig['options']>;
import type { NatsConnection } from '@nats-io/transport-node';
import { nodeToken } from '@meshlane/proto';
import { busFlags, commonOptions, connectBus, COMMON_HELP } from './connect.js';
import { parseDuration } from './duration.js';
import { CliError } from './errors.js';
import { crossCheck, DEFAULT_CONTROLPLANE_URL, fetchReport, parsePodRef, renderReport } from './explain.js';
import { nodeJson, loadNode, renderNode } from './pairs.js';
import { BusReader } from './reader.js';
import { gatherStatus, renderStatus } from './status.js';
import { startTail } from './tail.js';

export interface Io {
  out: (line: string) => void;
  err: (line: string) => void;
  env: Record<string, string | undefined>;
  /** Resolves on SIGINT/SIGTERM. */
  interrupted: Promise<void>;
}

export const TAIL_HELP = `Usage: meshlane audit tail [--node N] [--json] [--since DURATION | --all]

Prints every delta, worker status and audit event on the bus as it flows, one
line each (all nodes, or one):
  TIME  NODE  delta     gen F->T  endpoints +U -R [switches ...]
  TIME  NODE  status    applied gen A  desired gen D  bus connected [last error: E]
  TIME  NODE  rejected  gen G  source S  field F  reason R  (summary)
  TIME  NODE  applied|resync|published|leader|repaired|refused  gen G  source S  (summary)
A message that fails validation is shown with INVALID and the bad field.
Times are UTC: an audit event's or status's own time, a delta's stream time
(replay) or arrival time (live).

  --node N          one node only
  --json            the raw JSON of each message, one per line
  --since DURATION  first replay the delta and audit streams from DURATION ago
                    (e.g. 30s, 15m, 2h, 1d), then follow live
  --all             first replay the whole delta and audit history

History is read with stream message gets (no consumer is created, so
read-only auditor credentials are enough). Progress notes go to stderr.
Ctrl-C stops it (exit 0).

${COMMON_HELP}`;

export const STATUS_HELP = `Usage: meshlane status [--json] [--stale-after DURATION]

First the leader's heartbeat: who leads with which epoch, and every problem
it reports (fenced by a newer leader, a node whose state cannot be
published, writes being retried); a missing or stale heartbeat is a problem.
Then one row per node (every node with a snapshot, a delta or a status):
  DESIRED           newest generation on the bus: the node's snapshot in
                    meshlane-snapshots and the deltas stored after it
  APPLIED           generation in the node's maps, from its latest WorkerStatus
  LAG               DESIRED - APPLIED
  BUS               the worker's bus connection as it last reported it
  HEARTBEAT         time since its latest status was stored; STALE beyond
                    --stale-after (default 30s: 3x the worker's 10 s interval)
  STATE             converged, LAGGING, STALE, NO-STATUS, AHEAD, DISCONNECTED or
                    NO-DESIRED-STATE
  PAIRED            paired_outbound + paired_mesh + paired_inbound
  BYTES_REDIRECTED, HELD   the worker's counters
  LAST_ERROR        the worker's last error, and anything that did not validate

  --json                  the report as JSON ({converged, staleAfterMs, controlplane, nodes: [...]})
  --stale-after DURATION  heartbeat age beyond which a node is STALE (default 30s)

Exit code: 0 when every node is converged and the control plane reports no
problem, 1 otherwise, 2 on an error.

${COMMON_HELP}`;

export const PAIRS_HELP = `Usage: meshlane pairs --node N [--json]

The node's desired state as its worker builds it: the snapshot from
meshlane-snapshots plus the deltas stored after it in MESHLANE_DELTAS. Prints
the generation, the switches, the endpoints (pod, IPs, accelerate,
appSockets) and how many sidecar pairs are accelerated (every two endpoints
that both accelerate). --json prints {node, generation, snapshotGeneration,
snapshotDeltaSeq, deltasApplied, switches, endpoints (whole),
acceleratedPairs, warnings}.

Options:
  --node N            the node (required)
  --json              the report as JSON

${COMMON_HELP}`;

type Values = Record<string, string | boolean | Array<string | boolean> | undefined>;

function parse(args: string[], extra: ParseArgsOptionsConfig, help: string): { values: Values } {
  try {
    const options: ParseArgsOptionsConfig = { ...commonOptions, ...extra };
    return { values: parseArgs({ args, options, strict: true, allowPositionals: false }).values };
  } catch (err) {
    throw new CliError(`${(err as Error).message}\n\n${help}`);
  }
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function nodeFlag(v: unknown, required: boolean): string | undefined {
  const node = str(v);
  if (node === undefined) {
    if (required) throw new CliError('--node is required');
    return undefined;
  }
  try {
    nodeToken(node);
  } catch {
    throw new CliError(`--node ${JSON.stringify(node)}: not a node name (DNS-1123: lower-case letters, digits, '-' and '.')`);
  }
  return node;
}

async function withConnection<T>(io: Io, values: Values, follow: boolean, run: (nc: NatsConnection, timeoutMs: number) => Promise<T>): Promise<T> {
  const flags = busFlags(
    { nats: str(values.nats), 'nats-user': str(values['nats-user']), 'nats-password': str(values['nats-password']), 'nats-ca': str(values['nats-ca']), timeout: str(values.timeout) },
    io.env,
  );
  const nc = await connectBus(flags, { follow });
  try {
    return await run(nc, flags.timeoutMs);
  } finally {
    await nc.close().catch(() => {});
  }
}

export async function tailCommand(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, { node: { type: 'string' }, json: { type: 'boolean' }, since: { type: 'string' }, all: { type: 'boolean' } }, TAIL_HELP);
  if (values.help) return io.out(TAIL_HELP), 0;
  const node = nodeFlag(values.node, false);
  const sinceText = str(values.since);
  if (sinceText !== undefined && values.all) throw new CliError('give --since or --all, not both');
  let since: Date | 'all' | undefined = values.all ? 'all' : undefined;
  if (sinceText !== undefined) {
    const ms = parseDuration(sinceText);
    if (ms === undefined) throw new CliError(`--since ${JSON.stringify(sinceText)}: not a duration (e.g. 30s, 15m, 2h, 1d)`);
    since = new Date(Date.now() - ms);
  }
  return withConnection(io, values, true, async (nc, timeoutMs) => {
    const reader = since !== undefined ? await BusReader.open(nc, timeoutMs) : undefined;
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') io.err(`meshlane: disconnected from NATS (${'server' in s ? s.server : ''}); reconnecting`);
        if (s.type === 'reconnect') io.err('meshlane: reconnected to NATS');
      }
    })();
    const tail = await startTail(nc, reader, { ...(node !== undefined ? { node } : {}), json: Boolean(values.json), ...(since !== undefined ? { since } : {}), out: io.out, note: (l) => io.err(`meshlane: ${l}`) });
    try {
      await Promise.race([io.interrupted, tail.failed]);
    } finally {
      await tail.stop();
    }
    return 0;
  });
}

export async function statusCommand(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, { json: { type: 'boolean' }, 'stale-after': { type: 'string' } }, STATUS_HELP);
  if (values.help) return io.out(STATUS_HELP), 0;
  const staleText = str(values['stale-after']) ?? '30s';
  const staleAfterMs = parseDuration(staleText);
  if (staleAfterMs === undefined || staleAfterMs <= 0) throw new CliError(`--stale-after ${JSON.stringify(staleText)}: not a duration (e.g. 30s, 2m)`);
  return withConnection(io, values, false, async (nc, timeoutMs) => {
    const rep = await gatherStatus(await BusReader.open(nc, timeoutMs), staleAfterMs);
    io.out(values.json ? JSON.stringify(rep) : renderStatus(rep));
    return rep.converged ? 0 : 1;
  });
}

export async function pairsCommand(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, { node: { type: 'string' }, json: { type: 'boolean' } }, PAIRS_HELP);
  if (values.help) return io.out(PAIRS_HELP), 0;
  const node = nodeFlag(values.node, true) ?? '';
  return withConnection(io, values, false, async (nc, timeoutMs) => {
    const view = await loadNode(await BusReader.open(nc, timeoutMs), node);
    for (const w of view.warnings) io.err(`meshlane: ${w}`);
    io.out(values.json ? JSON.stringify(nodeJson(view)) : renderNode(view));
    return 0;
  });
}

export const EXPLAIN_HELP = `Usage: meshlane explain NAMESPACE/POD [--controlplane URL] [--json] [--bus]

Why a pod is, or is not, accelerated, as the control plane decided it: its
node; its verdict ("accelerated", or the first reason it is not, with the
label, annotation, container arg or value it rests on); whether it is an
endpoint of its node's state; its appSockets policy; its capture (Envoy's
ports, inbound include/exclude ports, outbound exclude ports, include and
exclude CIDRs); its pairs (every other accelerated endpoint of its node,
sidecar <-> sidecar, and its two app hops).

Reasons, in the order they are checked:
  host-network         spec.hostNetwork: true
  ambient              ambient.istio.io/redirection, or istiod serves it as ambient
  not-meshed           no running istio-proxy, or nothing captures to it
  interception-mode    capture is not plain REDIRECT (TPROXY, NONE, excluded
                       interfaces, proxy as uid 0, istio-init --skip-rule-apply)
  capture-unreadable   a capture annotation or istio-iptables arg Istio would
                       not read (named, with its value)
  not-running          phase not Running, or terminating
  no-ip, no-uid        no pod IP yet / metadata.uid not a UUID
  ip-conflict          another endpoint of the node claims its IP
  opted-out-pod        meshlane.io/accelerate (label or annotation) on the pod
  opted-out-namespace  meshlane.io/accelerate on its namespace
  not-synced           sync gate on, its sidecar not synced with istiod
  switched-off         the global kill switch is off (--disable)

The facts come from the control plane's ops server (GET
/debug/pods/NAMESPACE/POD, read-only JSON; any replica answers, each keeps
the whole model): a worker only sees endpoints, never why a pod was refused.

  --controlplane URL  the control plane's ops server (env MESHLANE_CONTROLPLANE_URL,
                      default ${DEFAULT_CONTROLPLANE_URL}); in a cluster e.g.
                      kubectl -n istio-system port-forward deploy/meshlane-controlplane 9465
  --json              the control plane's report as JSON (with "bus" when --bus)
  --bus               also look the pod up in its node's state on the bus, as
                      \`meshlane pairs\` reads it (connection flags below)
  --timeout S         seconds to wait for the control plane (and NATS) (default 5)
  -h, --help          this text

Exit code: 0 when the pod is accelerated, 1 when it is not (the reason is
printed), 2 on a usage error, an unknown pod, or a control plane (or, with
--bus, NATS) that cannot be reached or is not synced yet.

${COMMON_HELP.replace('Connection (every command):', 'Connection to NATS (with --bus only):')
  .split('\n')
  .filter((l) => !/^\s+(--timeout|-h, --help)/.test(l) && !/^\s+answer \(default/.test(l))
  .join('\n')}`;

export async function explainCommand(args: string[], io: Io): Promise<number> {
  let values: Values;
  let positionals: string[];
  try {
    const options: ParseArgsOptionsConfig = { ...commonOptions, controlplane: { type: 'string' }, json: { type: 'boolean' }, bus: { type: 'boolean' } };
    ({ values, positionals } = parseArgs({ args, options, strict: true, allowPositionals: true }));
  } catch (err) {
    throw new CliError(`${(err as Error).message}\n\n${EXPLAIN_HELP}`);
  }
  if (values.help) return io.out(EXPLAIN_HELP), 0;
  if (positionals.length !== 1) throw new CliError(`want exactly one NAMESPACE/POD, got ${positionals.length}\n\n${EXPLAIN_HELP}`);
  const { namespace, name } = parsePodRef(positionals[0] ?? '');
  const seconds = Number(str(values.timeout) ?? '5');
  if (!Number.isFinite(seconds) || seconds <= 0) throw new CliError(`--timeout must be a positive number of seconds, got ${str(values.timeout)}`);
  const base = str(values.controlplane) ?? io.env.MESHLANE_CONTROLPLANE_URL ?? DEFAULT_CONTROLPLANE_URL;
  const report = await fetchReport(base, namespace, name, Math.round(seconds * 1000));
  let bus: { agrees: boolean; line: string } | undefined;
  if (values.bus && report.node !== null) {
    const node = report.node;
    bus = await withConnection(io, values, false, async (nc, timeoutMs) => crossCheck(report, await loadNode(await BusReader.open(nc, timeoutMs), node)));
    if (!bus.agrees) io.err(`meshlane: ${bus.line}`);
  }
  io.out(values.json ? JSON.stringify(bus ? { ...report, bus } : report) : renderReport(report, bus));
  return report.accelerated ? 0 : 1;
}
