/**
 * The kernel matrix: the datapath suites inside a qemu guest per Debian
 * kernel (6.1 and 6.12 by default; MESHLANE_KERNELS=6.12 or any linux-image-*
 * package), through scripts/kernel-matrix/run.mjs. Each guest boots the
 * packaged kernel with this machine's root shared read-only over 9p, so the
 * suites run on the same node, objects and tools as here, only on another
 * kernel. Which tests run in the guest: scripts/kernel-matrix/tests.txt (or
 * MESHLANE_KERNEL_TESTS); the guest's per-kernel report and the worker's
 * kernel decisions end up in build/kernel-matrix/<kernel>/summary.json.
 *
 * Never skipped in CI: a missing qemu or kernel package fails here. Outside CI
 * it is skipped, loudly, only when not root.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const RUNNER = join(ROOT, 'scripts/kernel-matrix/run.mjs');
const KERNELS = (process.env.MESHLANE_KERNELS ?? '6.1,6.12')
  .split(',')
  .map((k) => k.trim())
  .filter(Boolean);
/**
 * Seconds the command may run in one guest; boot and probe come on top.
 * The suites take about 460 s per guest on an idle 2-vCPU host: headroom
 * for a busy one.
 */
const RUN_S = Number(process.env.MESHLANE_KERNEL_TIMEOUT ?? 900);
const LIMIT_MS = (RUN_S + 360) * 1000;
const JOBS = Number(process.env.MESHLANE_KERNEL_JOBS ?? 2);
const inCi = process.env.CI === 'true' || process.env.CI === '1';
const root = process.getuid?.() === 0;

interface Failure {
  file: string;
  name: string;
  error: string;
}
interface Summary {
  kernel: string;
  ok: boolean;
  startedAt?: string;
  error?: string;
  release?: string;
  guestRelease?: string;
  bootS?: number | null;
  commandS?: number;
  exitCode?: number | null;
  timedOut?: string | null;
  console?: string;
  probe?: { outcome?: string; error?: string | null; featuresLine?: string | null };
  tests?: { passed: number; failed: number; skipped: number; suiteErrors: number; failures: Failure[] };
}

function runMatrix(kernel: string): Promise<{ code: number | null; output: string }> {
  return new Promise((res) => {
    // setpriv: the runner (and through it qemu) dies with this test process.
    const p = spawn('setpriv', ['--pdeathsig', 'TERM', '--', process.execPath, RUNNER, '--kernel', kernel, '--quiet', '--timeout', String(RUN_S)], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const onData = (d: Buffer) => {
      output += d.toString();
      process.stderr.write(d);
    };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    // Before vitest's own timeout: the runner kills its guest on SIGTERM.
    const timer = setTimeout(() => p.kill('SIGTERM'), LIMIT_MS - 20_000);
    p.once('exit', (code) => {
      clearTimeout(timer);
      res({ code, output });
    });
  });
}

function explain(s: Summary | undefined, output: string): string {
  if (!s) return `no summary.json; runner output:\n${output.slice(-4000)}`;
  const lines = [`kernel ${s.kernel} (${s.guestRelease ?? s.release ?? '?'}):`];
  if (s.error) lines.push(`  error: ${s.error}`);
  if (s.timedOut) lines.push(`  timed out: ${s.timedOut}`);
  if (s.exitCode !== undefined) lines.push(`  guest command exit: ${s.exitCode}`);
  if (s.probe) lines.push(`  worker probe: ${s.probe.outcome}${s.probe.error ? `: ${s.probe.error}` : ''}`);
  if (s.tests) lines.push(`  tests: ${s.tests.passed} passed, ${s.tests.failed} failed, ${s.tests.skipped} skipped, ${s.tests.suiteErrors} suite errors`);
  for (const f of s.tests?.failures ?? []) lines.push(`  FAIL ${f.file} > ${f.name}\n    ${f.error.split('\n').join('\n    ')}`);
  if (s.console) lines.push(`  guest console: ${s.console}`);
  return lines.join('\n');
}

describe('kernel matrix: the datapath suites in a qemu guest per kernel', () => {
  if (!root && !inCi) {
    console.warn(`\n*** kernel matrix SKIPPED: not root (qemu guests, BPF). Run as root: node scripts/kernel-matrix/run.mjs --kernel ${KERNELS.join(' --kernel ')}\n`);
  }
  for (const kernel of KERNELS) {
    // Guests run side by side (MESHLANE_KERNEL_JOBS, default 2): each qemu
    // runs on one host thread (single-threaded TCG), and CI has 2 cores.
    const test = !root && !inCi ? it.skip : JOBS > 1 ? it.concurrent : it;
    test(
      `kernel ${kernel}`,
      async () => {
        expect(root, 'the kernel matrix needs root (qemu guests with BPF); CI runs as root').toBe(true);
        const started = Date.now();
        const { code, output } = await runMatrix(kernel);
        let s: Summary | undefined;
        try {
          s = JSON.parse(readFileSync(join(ROOT, 'build/kernel-matrix', kernel, 'summary.json'), 'utf8')) as Summary;
        } catch {
          s = undefined;
        }
        // Only this run's verdict counts (the runner removes the old one first).
        if (s && Date.parse(s.startedAt ?? '') < started - 1000) s = undefined;
        // One message that says it all: the failing tests with their first lines.
        if (!s?.ok || code !== 0 || !s.tests?.passed) throw new Error(`the datapath suites failed in the ${kernel} guest\n${explain(s, output)}`);
      },
      LIMIT_MS,
    );
  }
});
