// Runs inside a kernel-matrix guest (never on the host: it attaches to a
// cgroup it creates under the guest's own cgroup v2 mount). Starts the real
// meshlane-worker once on an empty NodeState and records what it decides on
// this kernel: its "kernel features" log line (the probes and the attach
// paths it picked), whether it loaded and attached, the first error if not,
// and `meshlane-worker status --json`. Then stops it and uninstalls. Prints
// one JSON object on stdout.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { join, resolve } from 'node:path';
import { NODE_STATE_API_VERSION } from '@meshlane/proto';

const ROOT = resolve(import.meta.dirname, '../..');
const CLI = join(ROOT, 'node-worker/dist/cli.js');
const CGROUP2 = '/sys/fs/cgroup/unified';
const NODE = 'kmprobe';
const PIN_ROOT = '/sys/fs/bpf/meshlane-kmprobe';
const LIMIT_MS = 120_000;

if (!readFileSync('/proc/cmdline', 'utf8').includes('meshlane_km=1')) {
  console.error('guest-probe.mjs runs only inside a kernel-matrix guest');
  process.exit(2);
}

const result = { kernel: release(), outcome: 'unknown', features: null, featuresLine: null, error: null, status: null, log: [] };
const tmp = mkdtempSync('/tmp/kmprobe-');
const stateFile = join(tmp, 'state.json');
const cgroup = join(CGROUP2, NODE);
mkdirSync(cgroup, { recursive: true });
writeFileSync(
  stateFile,
  JSON.stringify({
    apiVersion: NODE_STATE_API_VERSION,
    kind: 'NodeState',
    node: NODE,
    generation: 1,
    switches: { enabled: true, appSockets: true, maxQueuedBytes: 16 << 20 },
    endpoints: [],
  }),
);

const started = Date.now();
const w = spawn(process.execPath, [CLI, 'run', '--node', NODE, '--cgroup', cgroup, '--state', stateFile, '--pin-root', PIN_ROOT, '--log-level', 'debug'], {
  stdio: ['ignore', 'pipe', 'pipe'],
});
let text = '';
w.stdout.on('data', (d) => (text += d));
w.stderr.on('data', (d) => (text += d));
const exited = new Promise((r) => w.once('exit', (code, signal) => r({ code, signal })));
const end = Date.now() + LIMIT_MS;
let exit = null;
for (;;) {
  if (/desired state (applied|refused)/.test(text)) break;
  exit = await Promise.race([exited, new Promise((r) => setTimeout(() => r(null), 100))]);
  if (exit || Date.now() > end) break;
}
result.ms = Date.now() - started;

for (const line of text.split('\n').filter(Boolean)) {
  let rec;
  try {
    rec = JSON.parse(line);
  } catch {
    result.log.push(line);
    continue;
  }
  result.log.push(rec.msg ?? line);
  if (typeof rec.msg === 'string' && rec.msg.startsWith('kernel features')) {
    // The worker's own account of this kernel: the probes and the paths it chose.
    const { level, time, pid, hostname, node, msg, ...rest } = rec;
    result.featuresLine = msg;
    result.features = rest.features ?? rest;
  }
  if (!result.error && (rec.level ?? 0) >= 50) result.error = rec.err?.message ?? rec.msg;
}
if (/desired state applied/.test(text)) result.outcome = 'attached';
else if (exit) {
  result.outcome = 'worker exited';
  result.exit = exit;
  result.error ??= text.trim().split('\n').filter((l) => !l.startsWith('{')).slice(-3).join('\n') || text.trim().split('\n').at(-1);
} else result.outcome = 'timeout';

const st = spawnSync(process.execPath, [CLI, 'status', '--node', NODE, '--pin-root', PIN_ROOT, '--json'], { encoding: 'utf8', timeout: 60_000 });
try {
  result.status = JSON.parse(st.stdout);
} catch {
  result.status = { exit: st.status, stderr: (st.stderr ?? '').trim() };
}

if (!exit) {
  w.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
  w.kill('SIGKILL');
}
const un = spawnSync(process.execPath, [CLI, 'uninstall', '--node', NODE, '--pin-root', PIN_ROOT], { encoding: 'utf8', timeout: 60_000 });
result.uninstall = un.status;
try {
  rmdirSync(cgroup);
} catch {
  // a straggler; the guest is thrown away anyway
}
result.log = result.log.slice(0, 40);
// The attach each program got, as the pins say (status --json links[].attach).
result.attach = Object.fromEntries((result.status?.links ?? []).map((l) => [l.name, l.attach ?? (l.linkId ? 'link' : 'unknown')]));
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
// One line for the console.
const attach = Object.entries(result.attach).map(([k, v]) => `${k}=${v}`).join(' ');
process.stderr.write(`${result.outcome}${attach ? ` (${attach})` : ''}${result.error ? `; error: ${String(result.error).split('\n')[0]}` : ''}; ${result.featuresLine ?? 'no "kernel features" line'}\n`);
