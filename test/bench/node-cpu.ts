/**
 * Node CPU time for the datapath bench: what a request costs the whole
 * node, every process and the kernel's softirq work included.
 *
 * The source is /proc/stat's aggregate "cpu" line (all CPUs), in USER_HZ
 * ticks. pingpong --node-cpu samples it at the edges of its measured window
 * (after connect and warm-up, before close), so process start-up, the
 * worker applying a state and the bench itself are not charged to the
 * requests. "Busy" is user + nice + system + irq + softirq; idle, iowait
 * and steal (time the hypervisor gave to someone else) are not.
 *
 * The whole node means everything on it: on a shared machine other tenants'
 * work lands in both columns alike (plain and meshlane alternate), which
 * widens the spread but does not favour either side. Ticks are coarse
 * (10 ms at USER_HZ 100), so a figure is only as good as the ticks behind
 * it; Tally keeps their count.
 *
 * The cross-check: the bench samples the simulated node's cgroup v2
 * cpu.stat at the same edges (pingpong --edge-sync waits for it), microseconds of every process of
 * its pods (clients, sidecars, apps; with the softirq work that ran in
 * their context, which on kernels without IRQ_TIME_ACCOUNTING is charged
 * to the task it interrupted). Other tenants of the machine cannot reach
 * it; softirq work in ksoftirqd or in someone else's context is missed.
 */
import { readFileSync } from 'node:fs';

/** The deltas pingpong reports as "node_cpu" (ticks of user_hz). */
export interface NodeCpuWindow {
  user_hz: number;
  cpus: number;
  window_s: number;
  user: number;
  nice: number;
  system: number;
  idle: number;
  iowait: number;
  irq: number;
  softirq: number;
  steal: number;
  per_cpu_busy: number[];
}

/** pingpong's "cgroup_cpu": cpu.stat deltas in microseconds. */
export interface CgroupCpuWindow {
  usage_usec: number;
  user_usec: number;
  system_usec: number;
}

export const BUSY_FIELDS = ['user', 'nice', 'system', 'irq', 'softirq'] as const;

export function busyTicks(w: NodeCpuWindow): number {
  return BUSY_FIELDS.reduce((s, f) => s + (w[f] ?? 0), 0);
}

export function busyMicros(w: NodeCpuWindow): number {
  return (busyTicks(w) * 1e6) / (w.user_hz || 100);
}

/** Sums windows and the work done in them (requests, or bytes for bulk). */
export class Tally {
  busyUs = 0;
  ticks = 0;
  ops = 0;
  windows = 0;
  windowS = 0;
  byField: Record<(typeof BUSY_FIELDS)[number], number> = { user: 0, nice: 0, system: 0, irq: 0, softirq: 0 };
  /** The pods' cgroup, microseconds. */
  podsUs = 0;
  podsOps = 0;

  add(w: NodeCpuWindow | undefined, ops: number, cg?: CgroupCpuWindow): void {
    if (cg) {
      this.podsUs += cg.usage_usec;
      this.podsOps += ops;
    }
    if (!w) return;
    this.busyUs += busyMicros(w);
    this.ticks += busyTicks(w);
    this.ops += ops;
    this.windows++;
    this.windowS += w.window_s;
    for (const f of BUSY_FIELDS) this.byField[f] += w[f] ?? 0;
  }

  /** Microseconds of node CPU per unit of work (NaN without data). */
  perOp(unit = 1): number {
    return this.ops > 0 && this.windows > 0 ? (this.busyUs / this.ops) * unit : NaN;
  }

  /** The pods' cgroup's microseconds per unit of work (NaN without data). */
  podsPerOp(unit = 1): number {
    return this.podsOps > 0 ? (this.podsUs / this.podsOps) * unit : NaN;
  }

  /** Busy share of the node's capacity during the windows, 0..1. */
  busyShare(cpus: number): number {
    return this.windowS > 0 ? this.busyUs / 1e6 / (this.windowS * cpus) : NaN;
  }

  json(unit = 1): Record<string, unknown> {
    return {
      us_per_op: this.perOp(unit),
      busy_ticks: this.ticks,
      windows: this.windows,
      window_s: this.windowS,
      ops: this.ops,
      ticks_by_field: this.byField,
      pods_cgroup_us_per_op: this.podsPerOp(unit),
    };
  }
}

/** A cgroup v2 cpu.stat, microseconds. */
export function readCgroupCpu(path: string): CgroupCpuWindow {
  const v: Record<string, number> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const [k, n] = line.split(' ');
    if (k && n) v[k] = Number(n);
  }
  return { usage_usec: v.usage_usec ?? 0, user_usec: v.user_usec ?? 0, system_usec: v.system_usec ?? 0 };
}

/** One reading of the aggregate cpu line, from this process (for background load). */
export function readProcStatTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith('cpu '));
  const v = (line ?? '').trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const busy = (v[0] ?? 0) + (v[1] ?? 0) + (v[2] ?? 0) + (v[5] ?? 0) + (v[6] ?? 0);
  const total = v.slice(0, 8).reduce((s, x) => s + (x || 0), 0);
  return { busy, total };
}

/** The node's busy CPU (us per second) while the bench itself does nothing. */
export async function backgroundBusy(ms: number, userHz = 100): Promise<{ busy_us_per_s: number; seconds: number }> {
  const a = readProcStatTicks();
  const t = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, ms));
  const b = readProcStatTicks();
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  return { busy_us_per_s: (((b.busy - a.busy) * 1e6) / userHz) / seconds, seconds };
}
