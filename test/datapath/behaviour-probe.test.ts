/**
 * The behaviour probe on the kernel the tests run on: bpf/out/behaviour-probe
 * with real loopback sockets in a private network namespace, classified by
 * the worker, compared with what is known for this kernel series, and
 * shown by a running worker (status text and --json, /metrics, the status
 * subject). A kernel without known results here passes when every probe
 * gave a result, and prints what it measured so the table can be extended.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BEHAVIOUR_PROBES,
  Datapath,
  DEFAULT_BEHAVIOUR_TIMEOUT_MS,
  StatusReporter,
  decideAppSockets,
  formatBehaviour,
  probeBehaviour,
  type BehaviourReport,
  type BehaviourResults,
  type KernelFeatures,
  type NodeFollower,
} from '@meshlane/node-worker';
import { parseWorkerStatus } from '@meshlane/proto';
import { PIN_ROOT, ROOT, TestCluster, WORKER_CLI, type Worker } from '../harness/cluster.js';
import { requireRoot, sh, trySh } from '../harness/exec.js';
import { freePort } from '../harness/nats.js';

const BPF_DIR = join(ROOT, 'bpf/out');
// Kernel-matrix guests run under TCG, several times slower than the host.
const SCALE = Math.max(1, Number(process.env.MESHLANE_TEST_TIME_SCALE ?? '1') || 1);
const TIMEOUT_MS = DEFAULT_BEHAVIOUR_TIMEOUT_MS * SCALE;

/**
 * Measured results per kernel series (major.minor), with where they were
 * measured. Distributions backport: a patch level of the same series may
 * differ (FIONREAD on sk_msg-only sockets counts only the redirect queue
 * from 6.6.128 / 6.12.75 / 6.18.14 until "Account for receive queue in
 * FIONREAD without a verdict program").
 */
interface Known {
  where: string;
  results: BehaviourResults;
  /** The wakeups after which a blocked recv returned EAGAIN. */
  eagainOn: string[];
  /** FIONREAD with 1000 TCP bytes, 1000 redirected, 1000 + 500. */
  fionreadCounts: { tcpOnly: number; redirectedOnly: number; both: number };
  readOrder: 'tcp-first' | 'redirected-first';
}

const EAGAIN_ON = ['signal', 'writeSpace', 'finWait'];
const KNOWN: Record<string, Known> = {
  '6.1': {
    where: '6.1.192 (Debian 12, linux-image-6.1.0-57-amd64, kernel-matrix guest)',
    results: { blockingRecv: 'eagain', fionread: 'tcp-only', splice: 'misses-redirected', rcvlowat: 'ignored', peek: 'works', waitall: 'short-read' },
    eagainOn: EAGAIN_ON,
    fionreadCounts: { tcpOnly: 1000, redirectedOnly: 0, both: 1000 },
    readOrder: 'redirected-first',
  },
  '6.12': {
    where: '6.12.117 (Debian 12 backports, linux-image-6.12.117+deb12-amd64, kernel-matrix guest)',
    results: { blockingRecv: 'eagain', fionread: 'exact', splice: 'misses-redirected', rcvlowat: 'ignored', peek: 'works', waitall: 'short-read' },
    eagainOn: EAGAIN_ON,
    fionreadCounts: { tcpOnly: 1000, redirectedOnly: 1000, both: 1500 },
    readOrder: 'redirected-first',
  },
  '6.18': {
    where: '6.18.44 (this project\'s VM)',
    results: { blockingRecv: 'eagain', fionread: 'redirected-only', splice: 'misses-redirected', rcvlowat: 'ignored', peek: 'works', waitall: 'short-read' },
    eagainOn: EAGAIN_ON,
    fionreadCounts: { tcpOnly: 0, redirectedOnly: 1000, both: 500 },
    readOrder: 'redirected-first',
  },
};

function series(kernel: string): string {
  return kernel.split('.').slice(0, 2).join('.');
}

describe('datapath - kernel behaviour probe', () => {
  let report: BehaviourReport;
  const tmp = mkdtempSync(join(tmpdir(), 'mlt-behaviour-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  beforeAll(async () => {
    requireRoot();
    report = await probeBehaviour({ bpfDir: BPF_DIR, timeoutMs: TIMEOUT_MS });
    process.stdout.write(`${formatBehaviour(report)}\n`);
  });

  it('runs within its time limit and every case gives a result', () => {
    expect(report.probeError, `the behaviour probe failed on ${release()}`).toBeUndefined();
    if (SCALE === 1) expect(report.details.ms).toBeLessThan(3000);
    const unknown = BEHAVIOUR_PROBES.filter((p) => report[p] === 'unknown');
    expect(unknown, `kernel ${release()}: no result for ${unknown.join(', ')} (a control case failed, or the probe did not finish): ${JSON.stringify(report)}`).toEqual([]);
    expect(report.details.netns).toBe('private');
    expect(report.kernel).toBe(release());
  });

  // No skips (the kernel matrix counts a skipped test as a failure): a
  // series without known results passes here and says what it measured.
  it('gives what is known for this kernel series', () => {
    const known = KNOWN[series(release())];
    if (!known) {
      const measured = Object.fromEntries(BEHAVIOUR_PROBES.map((p) => [p, report[p]]));
      process.stdout.write(`NOTE: no known behaviour for kernel series ${series(release())} (${release()}); measured ${JSON.stringify({ ...measured, ...report.details })}: add it to KNOWN in test/datapath/behaviour-probe.test.ts\n`);
      return;
    }
    const what = (x: string) => `${x} on ${release()}, against the known results for ${series(release())} from ${known.where} (a backport or a fix changed it?)`;
    for (const p of BEHAVIOUR_PROBES) expect(report[p], what(p)).toBe(known.results[p]);
    expect(report.details.eagainOn, what('the wakeups giving EAGAIN')).toEqual(known.eagainOn);
    expect(report.details.fionreadCounts, what('the FIONREAD counts')).toEqual(known.fionreadCounts);
    expect(report.details.readOrder, what('the read order of TCP and redirected bytes')).toBe(known.readOrder);
    expect(report.decisions).toEqual(decideAppSockets(known.results));
  });

  it('gives the same results with only the DaemonSet\'s capabilities (no CAP_SYS_ADMIN: loopback in the worker\'s own netns)', async () => {
    if (!trySh('setpriv', ['--version'])) {
      process.stdout.write('NOTE: no setpriv (util-linux) here: the DaemonSet capabilities were not tried\n');
      return;
    }
    const values = readFileSync(join(ROOT, 'deploy/helm/meshlane/values.yaml'), 'utf8');
    const caps = /^\s*capabilities:\s*\[([^\]]*)\]/m.exec(values)?.[1]?.split(',').map((c) => c.trim().toLowerCase());
    expect(caps, 'worker.capabilities in the chart').toBeDefined();
    const wrapper = join(tmp, 'as-daemonset');
    writeFileSync(wrapper, `#!/bin/sh\nexec setpriv --bounding-set -all,${(caps ?? []).map((c) => `+${c}`).join(',')} --inh-caps -all ${join(BPF_DIR, 'behaviour-probe')} "$@"\n`);
    chmodSync(wrapper, 0o755);
    const r = await probeBehaviour({ bpfDir: BPF_DIR, binary: wrapper, timeoutMs: TIMEOUT_MS });
    expect(r.probeError).toBeUndefined();
    expect(r.details.netns).toBe('own');
    for (const p of BEHAVIOUR_PROBES) expect(r[p], p).toBe(report[p]);
  });

  it('never throws: a missing program, a hang, garbage and a crash all give unknown', async () => {
    const script = (name: string, body: string) => {
      const p = join(tmp, name);
      writeFileSync(p, `#!/bin/sh\n${body}\n`);
      chmodSync(p, 0o755);
      return p;
    };
    const cases: Array<[Parameters<typeof probeBehaviour>[0], RegExp]> = [
      [{ bpfDir: tmp }, /not found/],
      [{ bpfDir: BPF_DIR, binary: script('hang', 'exec sleep 30'), timeoutMs: 600 }, /killed after 600 ms/],
      [{ bpfDir: BPF_DIR, binary: script('garbage', 'echo nope') }, /no JSON/],
      [{ bpfDir: BPF_DIR, binary: script('other', 'echo \'{"version":7}\'') }, /unexpected probe output/],
      [{ bpfDir: BPF_DIR, binary: script('crash', 'echo oops >&2; kill -SEGV $$') }, /behaviour probe failed/],
    ];
    for (const [opts, why] of cases) {
      const started = Date.now();
      const r = await probeBehaviour(opts);
      expect(Date.now() - started).toBeLessThan(5000);
      expect(r.probeError).toMatch(why);
      expect(BEHAVIOUR_PROBES.every((p) => r[p] === 'unknown')).toBe(true);
      expect(r.decisions.appSocketsAuto).toBe('off');
    }
  });

  it('leaves nothing behind: no pin, and its program and maps go with it', async () => {
    const before = sh('ls', ['-a', '/sys/fs/bpf']);
    await probeBehaviour({ bpfDir: BPF_DIR, timeoutMs: TIMEOUT_MS });
    expect(sh('ls', ['-a', '/sys/fs/bpf'])).toBe(before);
    const left = () => [
      ...(JSON.parse(sh('bpftool', ['-j', 'prog', 'show'])) as Array<{ name?: string }>).filter((p) => p.name === 'bp_redirect'),
      ...(JSON.parse(sh('bpftool', ['-j', 'map', 'show'])) as Array<{ name?: string }>).filter((m) => m.name === 'bp_socks' || m.name === 'bp_peers'),
    ];
    // The kernel frees them after the last reference (RCU): allow it a moment.
    for (let i = 0; i < 50 && left().length; i++) await new Promise((r) => setTimeout(r, 100));
    expect(left()).toEqual([]);
  });

  describe('shown by a running worker', () => {
    let c: TestCluster;
    let w: Worker;
    let metricsPort: number;
    const saved = process.env.MESHLANE_BEHAVIOUR_TIMEOUT_MS;

    beforeAll(async () => {
      process.env.MESHLANE_BEHAVIOUR_TIMEOUT_MS = String(TIMEOUT_MS);
      c = new TestCluster(['n1']);
      metricsPort = await freePort();
      w = await c.startWorker('n1', c.state('n1', { endpoints: [] }), ['--metrics-addr', `127.0.0.1:${metricsPort}`]);
    });
    afterAll(async () => {
      await c?.cleanup();
      if (saved === undefined) delete process.env.MESHLANE_BEHAVIOUR_TIMEOUT_MS;
      else process.env.MESHLANE_BEHAVIOUR_TIMEOUT_MS = saved;
    });

    it('logs the results and the decision at start', () => {
      expect(w.log).toMatch(/"msg":"kernel behaviour: blocking recv: /);
      expect(w.log).toContain(`app sockets (auto): ${report.decisions.appSocketsAuto}`);
    });

    it('reports them in status --json and the text status', () => {
      const s = w.statusJson() as { behaviour: BehaviourReport; kernel: KernelFeatures };
      for (const p of BEHAVIOUR_PROBES) expect(s.behaviour[p], p).toBe(report[p]);
      expect(s.behaviour.decisions).toEqual(report.decisions);
      const text = sh(process.execPath, [WORKER_CLI, 'status', '--node', w.pinNode, '--pin-root', PIN_ROOT]);
      expect(text).toContain(`blocking recv: ${report.blockingRecv}`);
      expect(text).toContain(`FIONREAD: ${report.fionread}`);
      expect(text).toContain(`splice: ${report.splice}`);
      expect(text).toContain(`app sockets (auto): ${report.decisions.appSocketsAuto}`);
    });

    it('exports them as meshlane_worker_kernel_behaviour{probe,result} 1', async () => {
      const m = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      for (const p of BEHAVIOUR_PROBES) expect(m).toContain(`meshlane_worker_kernel_behaviour{probe="${p}",result="${report[p]}"} 1`);
      expect(m).toContain(`meshlane_worker_kernel_behaviour{probe="appSocketsAuto",result="${report.decisions.appSocketsAuto}"} 1`);
    });

    it('puts them on the status subject, accepted by its validator', () => {
      const s = w.statusJson() as { behaviour: BehaviourReport; kernel: KernelFeatures };
      const dp = Datapath.openPinned(PIN_ROOT, w.pinNode);
      try {
        const follower = { state: { node: w.pinNode, generation: 1 }, desiredGeneration: 1, lastError: undefined } as unknown as NodeFollower;
        const reporter = new StatusReporter({} as never, dp, follower, s.kernel, s.behaviour);
        const wire = parseWorkerStatus(JSON.parse(JSON.stringify(reporter.snapshot())), w.pinNode);
        expect(wire.behaviour).toEqual({
          kernel: report.kernel,
          results: Object.fromEntries(BEHAVIOUR_PROBES.map((p) => [p, report[p]])),
          appSocketsAuto: report.decisions.appSocketsAuto,
          reason: report.decisions.reason,
        });
      } finally {
        dp.close();
      }
    });
  });
});
