/**
 * Worker thread that runs the byte-level selection of list pages (json-select.ts selectSplitRaw).
 *
 * Scanning a page is the largest share of a list's CPU (a 100,000-pod list is ~1.5 GB to scan);
 * done here, it overlaps with the main thread delivering the previous page to consumers. The body
 * and the output buffer are transferred here and back with the reply (moved, never copied). See
 * select-pool.ts for the other side.
 */
import { parentPort } from 'node:worker_threads';
import { selectSplitRaw } from './json-select.js';
import { LIST_SELECTIONS, type ListSelectionName } from './projection.js';

export interface SelectJob {
  id: number;
  selection: ListSelectionName;
  src: ArrayBuffer;
  srcLength: number;
  out: ArrayBuffer;
}

export type SelectReply = { id: number; src: ArrayBuffer; out: ArrayBuffer } & (
  | { ok: true; length: number; found: boolean; start: number; end: number; elements: number[] }
  | { ok: false; error: string; name: string }
);

parentPort?.on('message', (job: SelectJob) => {
  let reply: SelectReply;
  try {
    const r = selectSplitRaw(Buffer.from(job.src, 0, job.srcLength), LIST_SELECTIONS[job.selection], 'items', Buffer.from(job.out));
    reply = { id: job.id, src: job.src, out: job.out, ok: true, ...r };
  } catch (err) {
    reply = { id: job.id, src: job.src, out: job.out, ok: false, error: err instanceof Error ? err.message : String(err), name: err instanceof Error ? err.name : 'Error' };
  }
  parentPort?.postMessage(reply, [job.src, job.out]);
});
