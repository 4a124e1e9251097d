#!/usr/bin/env node
// The kernel matrix: boots each Debian kernel under qemu (TCG) with the host's
// root shared read-only over 9p, runs a command in the guest (by default the
// datapath suites), and writes build/kernel-matrix/<kernel>/summary.json.
// See scripts/kernel-matrix/README.md.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { BUILD, ROOT, boot, buildInitramfs, claimRunDir, ensureQemu, fetchKernel, log, resolveKernel, tail } from './lib.mjs';

const HELP = `Usage: node scripts/kernel-matrix/run.mjs [options] [-- COMMAND...]

Boots each kernel in a qemu guest (TCG, 2 vCPUs, 2 GiB), the host's / as its
read-only root (9p, tmpfs overlay), and runs COMMAND there in this repository.
Without COMMAND: vitest on the tests of --tests, its JSON report collected.

  --kernel K          6.1, 6.12 or a linux-image-* package; repeatable
                      (default env MESHLANE_KERNELS, else "6.1,6.12")
  --tests LIST        vitest files/filters for the default command, comma- or
                      space-separated (default env MESHLANE_KERNEL_TESTS, else
                      the lines of scripts/kernel-matrix/tests.txt)
  --boot-timeout S    guest must be up within S seconds (default 180)
  --timeout S         command limit in the guest, seconds (default env
                      MESHLANE_KERNEL_TIMEOUT, else 1200)
  --mem MB, --smp N   guest size (default 2048, 2)
  --jobs N            guests at once (default env MESHLANE_KERNEL_JOBS, else 1);
                      each takes one host core
  --no-probe          skip the worker probe (kernel features, attach)
  --quiet             only the runner's own lines, not the guest's console
  --list              print the resolved packages and exit
  -h, --help

Exit 0 when COMMAND exited 0 in every guest (and, for the default command,
its report has tests and no failure). Every guest is killed on timeout, on
error and on SIGINT/SIGTERM. Per kernel: build/kernel-matrix/<kernel>/
{summary.json, console.log, out/}; all of them: build/kernel-matrix/summary.json.
`;

const argv = process.argv.slice(2);
const dash = argv.indexOf('--');
const { values } = parseArgs({
  args: dash >= 0 ? argv.slice(0, dash) : argv,
  options: {
    kernel: { type: 'string', multiple: true },
    tests: { type: 'string' },
    'boot-timeout': { type: 'string', default: '180' },
    timeout: { type: 'string', default: process.env.MESHLANE_KERNEL_TIMEOUT ?? '1200' },
    mem: { type: 'string', default: '2048' },
    smp: { type: 'string', default: '2' },
    'no-probe': { type: 'boolean', default: false },
    quiet: { type: 'boolean', default: false },
    list: { type: 'boolean', default: false },
    jobs: { type: 'string', default: process.env.MESHLANE_KERNEL_JOBS ?? '1' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

const kernels = (values.kernel ?? (process.env.MESHLANE_KERNELS ?? '6.1,6.12').split(','))
  .flatMap((k) => k.split(','))
  .map((k) => k.trim())
  .filter(Boolean);

function testList() {
  const raw = values.tests ?? process.env.MESHLANE_KERNEL_TESTS;
  if (raw) return raw.split(/[\s,]+/).filter(Boolean);
  return readFileSync(join(import.meta.dirname, 'tests.txt'), 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean);
}

const REPORT = '/km-out/report.json';
const userCmd = dash >= 0 ? argv.slice(dash + 1) : [];
const defaultCmd = userCmd.length === 0;
const tests = defaultCmd ? testList() : [];
// TCG runs the guest ~20x slower than the host: vitest's own limits (120 s in
// vitest.config.ts) are raised; the harness's waits read MESHLANE_TEST_TIME_SCALE.
const cmd = defaultCmd
  ? ['node_modules/.bin/vitest', 'run', ...tests, '--testTimeout=600000', '--hookTimeout=600000', '--reporter=default', '--reporter=json', `--outputFile.json=${REPORT}`]
  : userCmd;

const num = (v, flag) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) {
    log(`${flag} must be a positive number`);
    process.exit(2);
  }
  return n;
};
const jobs = num(values.jobs, '--jobs');
const job = {
  cwd: ROOT,
  cmd,
  env: { CI: process.env.CI ?? '', NO_COLOR: '1', FORCE_COLOR: '0', MESHLANE_IN_KERNEL_MATRIX: '1', MESHLANE_TEST_TIME_SCALE: process.env.MESHLANE_TEST_TIME_SCALE ?? '6' },
  bootTimeoutS: num(values['boot-timeout'], '--boot-timeout'),
  runTimeoutS: num(values.timeout, '--timeout'),
  memMb: num(values.mem, '--mem'),
  smp: num(values.smp, '--smp'),
  probe: !values['no-probe'],
  echo: values.quiet ? 'markers' : 'all',
};

function readJson(file) {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}
function readText(file) {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Passed/failed and each failure's first lines from a vitest JSON report. */
function testsOf(report) {
  if (!report) return undefined;
  const failures = [];
  const results = [];
  for (const file of report.testResults ?? []) {
    const rel = relative(ROOT, file.name ?? '');
    const asserts = file.assertionResults ?? [];
    if (file.status === 'failed' && asserts.length === 0) failures.push({ file: rel, name: '(suite)', error: firstLines(file.message) });
    for (const a of asserts) {
      results.push({ file: rel, name: a.fullName ?? a.title, status: a.status, ms: a.duration === undefined ? undefined : Math.round(a.duration) });
      if (a.status === 'failed') failures.push({ file: rel, name: a.fullName ?? a.title, error: firstLines(a.failureMessages?.[0]) });
    }
  }
  return {
    passed: report.numPassedTests ?? 0,
    failed: report.numFailedTests ?? 0,
    skipped: (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0),
    suiteErrors: (report.testResults ?? []).filter((r) => r.status === 'failed' && (r.assertionResults ?? []).length === 0).length,
    failures,
    results,
  };
}
function firstLines(s, n = 4) {
  return (s ?? '').split('\n').filter((l) => l.trim()).slice(0, n).join('\n');
}

function times(text) {
  const t = {};
  for (const line of (text ?? '').split('\n')) {
    const [k, v] = line.split(' ');
    if (k && v) t[k] = Number(v);
  }
  return t;
}

async function runKernel(name) {
  const runDir = join(BUILD, name);
  const summaryFile = join(runDir, 'summary.json');
  const summary = { kernel: name, ok: false, startedAt: new Date().toISOString() };
  mkdirSync(runDir, { recursive: true });
  if (values.list) return listKernel(name, summary);
  rmSync(summaryFile, { force: true }); // never leave an earlier run's verdict in place
  try {
    claimRunDir(runDir);
    const k = fetchKernel(resolveKernel(name));
    Object.assign(summary, { package: k.pkg, version: k.version, release: k.release });
    const initramfs = buildInitramfs(k);
    summary.modules = initramfs.modules;
    log(`${name}: booting ${k.release} (${k.pkg} ${k.version})`);
    const r = await boot({ ...k, name }, initramfs.img, job);
    const t = times(readText(join(r.out, 'times')));
    const rc = readText(join(r.out, 'rc'));
    Object.assign(summary, {
      guestRelease: readText(join(r.out, 'uname')),
      root: readText(join(r.out, 'root-mode')),
      bootS: r.bootS,
      guestUptimeAtReadyS: t.ready,
      probeS: t.probed !== undefined && t.ready !== undefined ? round(t.probed - t.ready) : undefined,
      commandS: t.done !== undefined && t.start !== undefined ? round(t.done - t.start) : undefined,
      totalS: round(r.totalS),
      exitCode: rc === undefined ? null : Number(rc),
      timedOut: r.timedOut ?? (rc === '124' ? 'command' : null),
      qemuExit: r.exit,
      command: cmd,
      probe: job.probe ? (readJson(join(r.out, 'probe.json')) ?? { error: readText(join(r.out, 'probe.log')) ?? 'no probe output' }) : undefined,
      modprobeRequests: (readText(join(r.out, 'modprobe.log')) ?? '').split('\n').filter(Boolean),
      // A custom command may write a vitest JSON report to /km-out/report.json too.
      tests: testsOf(readJson(join(r.out, 'report.json'))),
      console: relative(ROOT, r.consolePath),
    });
    summary.features = summary.probe?.features ?? null;
    const tr = summary.tests;
    const testsOk = tr ? tr.passed > 0 && tr.failed + tr.skipped + tr.suiteErrors === 0 : !defaultCmd;
    summary.ok = summary.exitCode === 0 && testsOk;
    if (!summary.ok) {
      const why = summary.timedOut ? `timed out (${summary.timedOut})` : summary.exitCode === null ? `no exit code from the guest (qemu ${JSON.stringify(r.exit)})` : `exit ${summary.exitCode}`;
      log(`${name}: FAILED, ${why}; last lines of ${summary.console}:\n${tail(r.consolePath, 40)}`);
    }
  } catch (err) {
    summary.error = err.message;
    log(`${name}: ${err.message}`);
  }
  summary.finishedAt = new Date().toISOString();
  writeFileSync(summaryFile, `${JSON.stringify(summary, null, 2)}\n`);
  return summary;
}

function listKernel(name, summary) {
  try {
    const k = fetchKernel(resolveKernel(name));
    process.stdout.write(`${name}\t${k.pkg}\t${k.version}\t${k.release}\n`);
  } catch (err) {
    summary.error = err.message;
    log(`${name}: ${err.message}`);
  }
  return summary;
}

function round(n) {
  return Math.round(n * 10) / 10;
}

function probeCell(p) {
  if (!p?.outcome) return '-';
  const attach = Object.entries(p.attach ?? {}).map(([k, v]) => `${k}=${v}`).join(' ');
  const err = p.outcome === 'attached' ? '' : `: ${String(p.error ?? '').split('\n')[0].slice(0, 60)}`;
  return `${p.outcome}${attach ? ` (${attach})` : ''}${err}`;
}

function table(rows) {
  const head = ['kernel', 'release', 'boot s', 'tests passed', 'failed', 'duration s', 'worker probe', 'result'];
  const body = rows.map((s) => [
    s.kernel,
    s.guestRelease ?? s.release ?? '-',
    s.bootS == null ? '-' : s.bootS.toFixed(1),
    s.tests ? String(s.tests.passed) : '-',
    s.tests ? String(s.tests.failed + s.tests.skipped + s.tests.suiteErrors) : '-',
    s.commandS == null ? (s.totalS == null ? '-' : `(${s.totalS})`) : String(s.commandS),
    probeCell(s.probe),
    s.ok ? 'ok' : s.error ? `error: ${s.error.slice(0, 60)}` : `FAIL${s.timedOut ? ` (${s.timedOut} timeout)` : s.exitCode != null ? ` (exit ${s.exitCode})` : ''}`,
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const line = (r) => `| ${r.map((c, i) => c.padEnd(w[i])).join(' | ')} |`;
  return [line(head), `|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`, ...body.map(line)].join('\n');
}

if (!values.list) ensureQemu();
// --jobs guests side by side (each single-threaded TCG guest takes one core).
const summaries = new Array(kernels.length);
let next = 0;
await Promise.all(
  Array.from({ length: Math.min(jobs, kernels.length) }, async () => {
    while (next < kernels.length) {
      const i = next++;
      summaries[i] = await runKernel(kernels[i]);
    }
  }),
);
if (values.list) process.exit(0);
writeFileSync(join(BUILD, 'summary.json'), `${JSON.stringify(summaries, null, 2)}\n`);
process.stdout.write(`\nkernel matrix (${defaultCmd ? tests.join(' ') : cmd.join(' ')}):\n${table(summaries)}\n`);
for (const s of summaries) {
  for (const f of s.tests?.failures ?? []) process.stdout.write(`  ${s.kernel} FAIL ${f.file} > ${f.name}\n      ${f.error.split('\n').join('\n      ')}\n`);
  if (s.probe?.featuresLine) process.stdout.write(`  ${s.kernel} worker: ${s.probe.featuresLine.replace(/\s+/g, ' ')}\n`);
  else if (s.probe) process.stdout.write(`  ${s.kernel} worker: no "kernel features" line (${s.probe.outcome ?? 'no probe'}${s.probe.error ? `: ${s.probe.error}` : ''})\n`);
}
process.exit(summaries.every((s) => s.ok) ? 0 : 1);
