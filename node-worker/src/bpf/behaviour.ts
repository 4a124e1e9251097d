/**
 * How a socket in a sockhash behaves towards an application on THIS
 * kernel, probed once at start by doing it. The sockets of an app <-> sidecar
 * hop are the app's own: once one is in the sockhash with an sk_msg
 * program, tcp_bpf_recvmsg has replaced tcp_recvmsg for it, and that path
 * differs from TCP in ways an app can see (and which kernels change, fix
 * and regress: see README "Supported kernels"):
 *
 *   blockingRecv  a blocking recv() with both queues empty returns EAGAIN on
 *                 any wakeup (a signal with SA_RESTART, write space, the
 *                 socket's own FIN_WAIT1 -> FIN_WAIT2) where TCP keeps
 *                 waiting or restarts
 *   fionread      FIONREAD/SIOCINQ counts TCP bytes, redirected bytes, both
 *   splice        splice(2) from the socket sees redirected bytes
 *   rcvlowat      SO_RCVLOWAT holds poll() and recv() for redirected bytes
 *   peek          MSG_PEEK of redirected bytes leaves them queued
 *   waitall       MSG_WAITALL waits for the full length
 *
 * Blocking syscalls, signals and threads are out of Node's reach, so the
 * cases live in a small C program (bpf/src/behaviour-probe.c, built next to
 * the BPF objects) that prints raw observations as one JSON object; this
 * module runs it under a time limit, validates what it printed, classifies
 * it (pure functions) and decides what may be accelerated. Whatever fails
 * becomes 'unknown', which decides the safe way; nothing here throws.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { boundText, type WorkerBehaviour } from '@meshlane/proto';

export type BlockingRecvResult = 'safe' | 'eagain' | 'unknown';
export type FionreadResult = 'exact' | 'redirected-only' | 'tcp-only' | 'unknown';
export type SpliceResult = 'sees-redirected' | 'misses-redirected' | 'unknown';
export type RcvlowatResult = 'honoured' | 'ignored' | 'unknown';
/** works: peeked bytes stay queued; consumes: a peek ate them; misses-redirected: a peek does not see them. */
export type PeekResult = 'works' | 'consumes' | 'misses-redirected' | 'unknown';
/** short-read: MSG_WAITALL returns what is queued instead of waiting for the length asked. */
export type WaitallResult = 'honoured' | 'short-read' | 'unknown';
/**
 * App sockets of pods in 'auto' mode: only those whose fd is non-blocking
 * may join (blocking-recv hazards cannot reach them), or none (only pods
 * that opt in with the annotation get app sockets accelerated).
 */
export type AppSocketsAuto = 'nonblocking-only' | 'off';

export interface BehaviourResults {
  blockingRecv: BlockingRecvResult;
  fionread: FionreadResult;
  splice: SpliceResult;
  rcvlowat: RcvlowatResult;
  peek: PeekResult;
  waitall: WaitallResult;
}

export const BEHAVIOUR_PROBES = ['blockingRecv', 'fionread', 'splice', 'rcvlowat', 'peek', 'waitall'] as const satisfies readonly (keyof BehaviourResults)[];

export interface BehaviourDecisions {
  appSocketsAuto: AppSocketsAuto;
  reason: string;
}

/** What the probe saw beyond the results: enough to tell a kernel's story in `status`. */
export interface BehaviourDetails {
  /** The wakeups after which a blocked recv on a sockhash socket returned EAGAIN. */
  eagainOn: string[];
  /** FIONREAD on a sockhash socket holding 1000 TCP bytes, 1000 redirected, 1000 + 500 (null: not measured). */
  fionreadCounts: { tcpOnly: number | null; redirectedOnly: number | null; both: number | null };
  /** With TCP bytes queued first and redirected bytes behind them, which a read returns first. */
  readOrder: 'tcp-first' | 'redirected-first' | 'unknown';
  /** Where the probe's loopback connections lived. */
  netns: 'private' | 'own' | 'unknown';
  /** How its sk_msg program was attached to its sockhash. */
  attach: 'link' | 'map' | 'none' | 'unknown';
  /** Wall time of the probe, ms. */
  ms: number;
}

export interface BehaviourReport extends BehaviourResults {
  kernel: string;
  decisions: BehaviourDecisions;
  details: BehaviourDetails;
  /** Why (part of) the probe could not run. */
  probeError?: string;
}

// ---- the decision ----

const FIONREAD_TEXT: Record<FionreadResult, string> = {
  exact: 'FIONREAD is exact',
  'redirected-only': 'FIONREAD counts only redirected bytes (TCP bytes queued before or beside them are missed)',
  'tcp-only': 'FIONREAD misses redirected bytes',
  unknown: 'FIONREAD could not be probed',
};

/**
 * The rule for app sockets of pods in 'auto' mode: they may join only when
 * their fd is non-blocking (a blocking recv can return a spurious EAGAIN on
 * some kernels, and the probe cannot promise every wakeup was tried) AND
 * FIONREAD is exact (event-loop apps use it to size reads: Java's
 * available(), .NET's Socket.Available, nginx); otherwise 'off': only pods
 * that opt in with the annotation get app sockets.
 */
export function decideAppSockets(r: BehaviourResults): BehaviourDecisions {
  if (r.fionread !== 'exact') {
    return {
      appSocketsAuto: 'off',
      reason: `${FIONREAD_TEXT[r.fionread]}: event-loop apps size reads with it (Java available(), .NET Socket.Available, nginx), so app sockets join only for pods that opt in`,
    };
  }
  // A non-blocking fd keeps the blocking-recv hazard away, but not these:
  // an event-loop app may splice from its socket (HAProxy, zero-copy
  // relays) or wait for SO_RCVLOWAT, and nothing at join time says whether
  // it will. The compatibility suite shows each of them break a
  // non-blocking app, so "auto" stays off until the kernel has none.
  const unsafe: string[] = [];
  if (r.splice !== 'sees-redirected') unsafe.push(r.splice === 'misses-redirected' ? 'splice(2) misses redirected bytes' : 'splice(2) could not be probed');
  if (r.rcvlowat !== 'honoured') unsafe.push(r.rcvlowat === 'ignored' ? 'SO_RCVLOWAT is ignored' : 'SO_RCVLOWAT could not be probed');
  if (unsafe.length) {
    return {
      appSocketsAuto: 'off',
      reason: `FIONREAD is exact, but ${unsafe.join(' and ')}: a non-blocking app may rely on ${unsafe.length > 1 ? 'them' : 'it'}, so app sockets join only for pods that opt in`,
    };
  }
  const caveats: string[] = [];
  if (r.peek === 'consumes' || r.peek === 'misses-redirected') caveats.push(`MSG_PEEK ${r.peek === 'consumes' ? 'consumes' : 'misses'} redirected bytes`);
  if (r.waitall === 'short-read') caveats.push('MSG_WAITALL returns short');
  const blocking = r.blockingRecv === 'safe' ? 'blocking recv behaved like TCP' : r.blockingRecv === 'eagain' ? 'a blocking recv returns spurious EAGAIN' : 'blocking recv could not be probed';
  return {
    appSocketsAuto: 'nonblocking-only',
    reason: `FIONREAD is exact, splice sees redirected bytes, SO_RCVLOWAT is honoured and ${blocking}: app sockets of 'auto' pods join only when their fd is non-blocking${caveats.length ? ` (apps relying on these should opt out: ${caveats.join('; ')})` : ''}`,
  };
}

// ---- classification of the probe's raw output ----

type Json = Record<string, unknown>;

function isObj(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function at(v: unknown, ...path: string[]): unknown {
  let cur = v;
  for (const k of path) {
    if (!isObj(cur)) return undefined;
    cur = cur[k];
  }
  return cur;
}

function num(v: unknown, ...path: string[]): number | undefined {
  const x = at(v, ...path);
  return typeof x === 'number' && Number.isFinite(x) ? x : undefined;
}

function str(v: unknown, ...path: string[]): string | undefined {
  const x = at(v, ...path);
  return typeof x === 'string' ? x : undefined;
}

function bool(v: unknown, ...path: string[]): boolean | undefined {
  const x = at(v, ...path);
  return typeof x === 'boolean' ? x : undefined;
}

/** The wakeups the probe tries on a recv blocked with both queues empty. */
export const WAKEUPS = ['signal', 'duplexRedirected', 'writeSpace', 'finWait'] as const;

/**
 * Per wakeup the probe reports what the plain TCP control and the sockhash
 * socket did: 'blocked' (kept waiting until a byte came), 'eagain',
 * 'eintr', ... A wakeup counts only if the control kept waiting.
 */
function classifyBlocking(raw: unknown): { result: BlockingRecvResult; eagainOn: string[] } {
  const eagainOn: string[] = [];
  let valid = 0;
  let safe = 0;
  for (const w of WAKEUPS) {
    const plain = str(raw, 'blockingRecv', w, 'plain');
    const hash = str(raw, 'blockingRecv', w, 'sockhash');
    if (plain !== 'blocked' || hash === undefined) continue;
    valid++;
    if (hash === 'eagain') eagainOn.push(w);
    else if (hash === 'blocked' || hash === 'eintr') safe++;
  }
  if (eagainOn.length) return { result: 'eagain', eagainOn };
  return { result: valid === WAKEUPS.length && safe === valid ? 'safe' : 'unknown', eagainOn };
}

// The byte counts of the probe's cases (bpf/src/behaviour-probe.c).
const TCP_BYTES = 1000;
const REDIRECTED_BYTES = 1000;
const BOTH_TCP = 1000;
const BOTH_REDIRECTED = 500;
const SHORT = 100;
const FULL = 1100;

function classifyFionread(raw: unknown): FionreadResult {
  const f = (k: string) => num(raw, 'fionread', k);
  // Controls: TCP counts on a plain socket; the redirect really happened (or not) as asked.
  if (f('plain') !== TCP_BYTES || f('tcpOnlyRedirected') !== 0 || f('redirectedOnlyRedirected') !== REDIRECTED_BYTES || f('bothRedirected') !== BOTH_REDIRECTED) return 'unknown';
  const tcp = f('tcpOnly');
  const redir = f('redirectedOnly');
  const both = f('both');
  if (tcp === TCP_BYTES && redir === REDIRECTED_BYTES && both === BOTH_TCP + BOTH_REDIRECTED) return 'exact';
  if (tcp === 0 && redir === REDIRECTED_BYTES && both === BOTH_REDIRECTED) return 'redirected-only';
  if (tcp === TCP_BYTES && redir === 0 && both === BOTH_TCP) return 'tcp-only';
  return 'unknown';
}

function classifySplice(raw: unknown): SpliceResult {
  const tcp = num(raw, 'splice', 'tcp');
  const redir = num(raw, 'splice', 'redirected');
  if (tcp !== TCP_BYTES || num(raw, 'splice', 'redirectedRedirected') !== REDIRECTED_BYTES || redir === undefined) return 'unknown';
  if (redir === REDIRECTED_BYTES) return 'sees-redirected';
  // EAGAIN (-11) on the non-blocking socket, or fewer bytes than queued.
  return redir === -11 || (redir >= 0 && redir < REDIRECTED_BYTES) ? 'misses-redirected' : 'unknown';
}

function classifyRcvlowat(raw: unknown): RcvlowatResult {
  if (bool(raw, 'rcvlowat', 'plain', 'pollReadable') !== false || num(raw, 'rcvlowat', 'plain', 'recv') !== FULL) return 'unknown';
  const readable = bool(raw, 'rcvlowat', 'sockhash', 'pollReadable');
  const got = num(raw, 'rcvlowat', 'sockhash', 'recv');
  if (readable === undefined || got === undefined) return 'unknown';
  if (!readable && got === FULL) return 'honoured';
  return readable || (got > 0 && got < FULL) ? 'ignored' : 'unknown';
}

function classifyWaitall(raw: unknown): WaitallResult {
  if (num(raw, 'waitall', 'plain') !== FULL) return 'unknown';
  const got = num(raw, 'waitall', 'sockhash');
  if (got === FULL) return 'honoured';
  return got !== undefined && got > 0 && got < FULL ? 'short-read' : 'unknown';
}

function classifyPeek(raw: unknown): PeekResult {
  if (num(raw, 'peek', 'plain', 'peeked') !== SHORT || bool(raw, 'peek', 'plain', 'same') !== true) return 'unknown';
  const peeked = num(raw, 'peek', 'sockhash', 'peeked');
  const read = num(raw, 'peek', 'sockhash', 'read');
  if (peeked === undefined || read === undefined) return 'unknown';
  if (peeked === SHORT && read === SHORT && bool(raw, 'peek', 'sockhash', 'same') === true) return 'works';
  if (peeked === SHORT && read !== SHORT) return 'consumes';
  return peeked <= 0 ? 'misses-redirected' : 'unknown';
}

function oneOf<T extends string>(v: string | undefined, allowed: readonly T[]): T | 'unknown' {
  return v !== undefined && (allowed as readonly string[]).includes(v) ? (v as T) : 'unknown';
}

/** The report from what the probe printed (already JSON-parsed; anything malformed becomes 'unknown'). */
export function classifyBehaviour(raw: unknown, kernel = release(), ms = 0): BehaviourReport {
  const blocking = classifyBlocking(raw);
  const results: BehaviourResults = {
    blockingRecv: blocking.result,
    fionread: classifyFionread(raw),
    splice: classifySplice(raw),
    rcvlowat: classifyRcvlowat(raw),
    peek: classifyPeek(raw),
    waitall: classifyWaitall(raw),
  };
  const first = str(raw, 'fionread', 'bothFirstRead');
  const errors = [str(raw, 'error'), str(raw, 'errors'), bool(raw, 'deadlineHit') ? 'the probe hit its deadline; later cases were skipped' : undefined].filter((e): e is string => !!e);
  const countOrNull = (k: string) => num(raw, 'fionread', k) ?? null;
  return {
    kernel: str(raw, 'kernel') ?? kernel,
    ...results,
    decisions: decideAppSockets(results),
    details: {
      eagainOn: blocking.eagainOn,
      fionreadCounts: { tcpOnly: countOrNull('tcpOnly'), redirectedOnly: countOrNull('redirectedOnly'), both: countOrNull('both') },
      readOrder: first === 'tcp' ? 'tcp-first' : first === 'redirected' ? 'redirected-first' : 'unknown',
      netns: oneOf(str(raw, 'netns'), ['private', 'own'] as const),
      attach: oneOf(str(raw, 'attach'), ['link', 'map', 'none'] as const),
      ms,
    },
    ...(errors.length ? { probeError: bound(errors.join('; ')) } : {}),
  };
}

/** Every result 'unknown' (decides the safe way), with the reason. */
export function unknownBehaviour(probeError: string, kernel = release(), ms = 0): BehaviourReport {
  const results: BehaviourResults = { blockingRecv: 'unknown', fionread: 'unknown', splice: 'unknown', rcvlowat: 'unknown', peek: 'unknown', waitall: 'unknown' };
  return {
    kernel,
    ...results,
    decisions: decideAppSockets(results),
    details: { eagainOn: [], fionreadCounts: { tcpOnly: null, redirectedOnly: null, both: null }, readOrder: 'unknown', netns: 'unknown', attach: 'unknown', ms },
    probeError: bound(probeError),
  };
}

function bound(s: string, max = 512): string {
  return s.length <= max ? s : `${s.slice(0, max - 3)}...`;
}

// ---- running the probe ----

export interface BehaviourProbeOptions {
  /** Folder with behaviour-probe and behaviour-probe.bpf.o (the worker's --bpf-dir). */
  bpfDir: string;
  /** Whole probe, ms (default 2800: the worker's start must not wait longer). */
  timeoutMs?: number;
  /** Loopback connections in a private network namespace (default) or the worker's own. */
  netns?: 'private' | 'own';
  /** The program (default: bpfDir/behaviour-probe). */
  binary?: string;
}

export const DEFAULT_BEHAVIOUR_TIMEOUT_MS = 2800;
const MAX_OUTPUT = 64 * 1024;

function run(binary: string, args: string[], timeoutMs: number): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        const why = (err as NodeJS.ErrnoException & { killed?: boolean }).killed ? `killed after ${timeoutMs} ms` : err.message;
        reject(new Error(`${why}${stderr.trim() ? `: ${stderr.trim().split('\n').slice(-3).join(' / ')}` : ''}`));
      } else resolve({ stdout, stderr });
    });
  });
}

/**
 * Runs bpfDir/behaviour-probe (under timeoutMs, killed after it) and
 * classifies what it printed. Never rejects: a missing binary, a crash, a
 * timeout or malformed output give an all-'unknown' report naming why.
 */
export async function probeBehaviour(opts: BehaviourProbeOptions): Promise<BehaviourReport> {
  const started = Date.now();
  const timeoutMs = Math.max(500, opts.timeoutMs ?? DEFAULT_BEHAVIOUR_TIMEOUT_MS);
  const binary = opts.binary ?? join(opts.bpfDir, 'behaviour-probe');
  const object = join(opts.bpfDir, 'behaviour-probe.bpf.o');
  try {
    if (!existsSync(binary)) return unknownBehaviour(`${binary} not found (built by make -C bpf)`);
    // The probe's own deadline leaves room to print before the kill.
    const deadline = Math.max(200, timeoutMs - 600);
    const args = ['--object', object, '--netns', opts.netns ?? 'private', '--deadline-ms', String(deadline)];
    const { stdout } = await run(binary, args, timeoutMs);
    let raw: unknown;
    try {
      raw = JSON.parse(stdout);
    } catch {
      return unknownBehaviour(`the probe printed no JSON: ${JSON.stringify(stdout.slice(0, 200))}`, release(), Date.now() - started);
    }
    if (!isObj(raw) || raw.version !== 1) return unknownBehaviour(`unexpected probe output (version ${JSON.stringify(at(raw, 'version'))})`, release(), Date.now() - started);
    return classifyBehaviour(raw, release(), Date.now() - started);
  } catch (err) {
    return unknownBehaviour(`behaviour probe failed: ${(err as Error).message}`, release(), Date.now() - started);
  }
}

// ---- presentation ----

/** Lines for logs and `meshlane-worker status`. */
export function formatBehaviour(b: BehaviourReport): string {
  const d = b.details;
  const c = d.fionreadCounts;
  return [
    `kernel behaviour of sockhash sockets (${b.kernel}, probed in ${d.ms} ms):`,
    `  blocking recv: ${b.blockingRecv}${d.eagainOn.length ? ` (EAGAIN after: ${d.eagainOn.join(', ')})` : ''}`,
    `  FIONREAD: ${b.fionread}${c.tcpOnly !== null ? ` (1000 TCP -> ${c.tcpOnly}, 1000 redirected -> ${c.redirectedOnly}, 1000+500 -> ${c.both})` : ''}`,
    `  splice: ${b.splice}`,
    `  SO_RCVLOWAT: ${b.rcvlowat}`,
    `  MSG_PEEK: ${b.peek}`,
    `  MSG_WAITALL: ${b.waitall}`,
    `  app sockets (auto): ${b.decisions.appSocketsAuto}: ${b.decisions.reason}`,
    ...(b.probeError ? [`  probe error: ${b.probeError}`] : []),
  ].join('\n');
}

/** The bounded form for the status subject (WorkerStatus.behaviour). */
export function behaviourForBus(b: BehaviourReport): WorkerBehaviour {
  const results: Record<string, string> = {};
  for (const p of BEHAVIOUR_PROBES) results[p] = b[p];
  return { kernel: boundText(b.kernel, 128), results, appSocketsAuto: b.decisions.appSocketsAuto, reason: boundText(b.decisions.reason) };
}
