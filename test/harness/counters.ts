/** Counter deltas around an action, so assertions speak about that action alone. */
import type { CounterName } from '@meshlane/node-worker';
import type { Worker } from './cluster.js';

export type Counters = Record<CounterName, number>;

export function delta(before: Counters, after: Counters): Counters {
  const out = {} as Counters;
  for (const k of Object.keys(after) as CounterName[]) out[k] = after[k] - (before[k] ?? 0);
  return out;
}

export async function measure<T>(w: Worker, action: () => Promise<T>): Promise<{ result: T; d: Counters }> {
  const before = w.counters();
  const result = await action();
  // Close callbacks run after the app sees EOF: give the last ones a moment.
  await new Promise((r) => setTimeout(r, 50));
  return { result, d: delta(before, w.counters()) };
}

/** Waits until a counter condition holds (close callbacks are asynchronous to the app). */
export async function until(w: Worker, pred: (c: Counters) => boolean, ms = 5000): Promise<Counters> {
  const end = Date.now() + ms;
  for (;;) {
    const c = w.counters();
    if (pred(c)) return c;
    if (Date.now() > end) throw new Error(`counters never satisfied the condition: ${JSON.stringify(c)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
