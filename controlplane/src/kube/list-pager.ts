/**
 * One page of a paginated list (`limit` + `continue`), read the way the informers need it:
 *  - the request goes out with the KubeConfig's credentials, TLS settings and proxy agent (the same
 *    `applyToHTTPSOptions` the library's own requests use), but the body is not handed to the
 *    library's `text()` + ObjectSerializer: it is collected as bytes, bounded by `maxBytes` (a page
 *    past it is aborted while downloading, not read to the end), and only the selected members are
 *    parsed (json-select.ts), item by item when the consumer asks for them;
 *  - the continue token is reported as soon as the list metadata has arrived, before the items;
 *  - every failure is a typed error with a message that names the list and the page: KubeApiError
 *    for an HTTP status (with the Status reason, e.g. 410 Expired), ListReadError for a response
 *    that cannot be used (too large, not JSON, not a list, timed out, connection lost).
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { createGunzip } from 'node:zlib';
import type { Readable } from 'node:stream';
import type { KubeConfig } from '@kubernetes/client-node';
import { JsonSelectError, readHead, splitSelection, type SplitSelection } from './json-select.js';
import type { ListSelectionName } from './projection.js';
import { SelectWorkerError, type SelectPool, type Selected } from './select-pool.js';

export interface PageRequest {
  /** Collection path, e.g. /api/v1/pods. */
  path: string;
  limit: number;
  continueToken?: string | undefined;
  /** 1-based, for messages. */
  page: number;
  /** Whole request (headers and body) must be done within this. */
  timeoutMs: number;
  /** Decoded body size above which the page is abandoned (ListReadError, tooLarge). */
  maxBytes: number;
  signal?: AbortSignal;
  /** Buffers reused across the pages of a list. */
  scratch: PageScratch;
  /** Where the page is selected (this thread or a worker). */
  pool: SelectPool;
  /**
   * Called as soon as the page's list metadata has arrived (it precedes the items), with its
   * continue token (undefined on the last page): the next page can be asked for at once. Not
   * called when the body does not start that way; the token is then only in the result.
   */
  onHead?: (continueToken: string | undefined) => void;
  /** This page's buffer slot in `scratch` (pages alive at once use different slots). */
  slot: number;
}

/**
 * Receive and selection buffers of one list, by slot, reused from page to page: large, freshly
 * allocated buffers are costly (page faults on every new mapping, then garbage collection), and a
 * list reads many pages of similar size. Pages alive at once (being delivered, or on their way) use
 * different slots: a page's items are parsed from its selection while later pages are fetched.
 */
export interface PageScratch {
  recv: Array<Buffer | undefined>;
  out: Array<Buffer | undefined>;
}

export function newPageScratch(): PageScratch {
  return { recv: [], out: [] };
}

export interface ListPage {
  resourceVersion: string;
  continueToken: string | undefined;
  remainingItemCount: number | undefined;
  /** Number of items. */
  length: number;
  /**
   * Item i reduced to the selection, parsed now (not yet projected). Valid until a later page
   * is fetched into the same scratch slot.
   */
  item(i: number): unknown;
  /** Decoded body size. */
  bytes: number;
}

/** The apiserver answered with an HTTP error status. */
export class KubeApiError extends Error {
  /** As the library's errors carry it (ListWatch tests `statusCode` for 410). */
  readonly statusCode: number;
  constructor(
    message: string,
    readonly code: number,
    readonly reason: string | undefined,
  ) {
    super(message);
    this.name = 'KubeApiError';
    this.statusCode = code;
  }
}

/** A response that could not be used as a list page. */
export class ListReadError extends Error {
  constructor(
    message: string,
    /** The body went past maxBytes: a smaller page may still work. */
    readonly tooLarge = false,
  ) {
    super(message);
    this.name = 'ListReadError';
  }
}

/** Bytes of an error response body worth reading for its Status. */
const MAX_ERROR_BODY = 64 * 1024;

type Json = Record<string, unknown>;

function obj(v: unknown): Json | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : undefined;
}

function size(n: number): string {
  return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${n} bytes`;
}

export async function fetchListPage(kc: KubeConfig, req: PageRequest, selection: ListSelectionName): Promise<ListPage> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('no current cluster in the kubeconfig');
  const url = new URL(cluster.server + req.path);
  url.searchParams.set('limit', String(req.limit));
  if (req.continueToken) url.searchParams.set('continue', req.continueToken);
  const what = `list ${req.path} page ${req.page} (limit ${req.limit})`;

  const opts: https.RequestOptions = { method: 'GET' };
  await kc.applyToHTTPSOptions(opts);
  opts.headers = { ...opts.headers, Accept: 'application/json', 'Accept-Encoding': 'gzip' };

  const { scratch, pool } = req;
  const startedAt = Date.now();
  const { status, body, contentType } = await new Promise<{ status: number; body: Buffer; contentType: string }>((resolve, reject) => {
    let settled = false;
    // A page's body goes into one reused buffer: no concatenation, no fresh multi-MB allocation per page.
    let buf = scratch.recv[req.slot] ?? pool.alloc(1 << 20);
    let headDone = req.onHead === undefined;
    let bytes = 0;
    const errorChunks: Buffer[] = [];
    const send = url.protocol === 'https:' ? https.request : http.request;
    const r = send(url, opts);
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.signal?.removeEventListener('abort', onAbort);
      r.destroy();
      reject(err);
    };
    const timer = setTimeout(() => fail(new ListReadError(`${what}: no complete answer after ${req.timeoutMs} ms`)), req.timeoutMs);
    const onAbort = (): void => fail(new ListReadError(`${what}: aborted`));
    if (req.signal?.aborted) return onAbort();
    req.signal?.addEventListener('abort', onAbort, { once: true });
    r.on('error', (err) => fail(new ListReadError(`${what}: ${err.message}`)));
    r.on('response', (res) => {
      const code = res.statusCode ?? 0;
      const gzip = res.headers['content-encoding'] === 'gzip';
      const stream: Readable = gzip ? res.pipe(createGunzip()) : res;
      const done = (): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.signal?.removeEventListener('abort', onAbort);
        if (code !== 200) {
          r.destroy();
          resolve({ status: code, body: Buffer.concat(errorChunks), contentType: String(res.headers['content-type'] ?? '') });
          return;
        }
        scratch.recv[req.slot] = buf;
        resolve({ status: code, body: buf.subarray(0, bytes), contentType: String(res.headers['content-type'] ?? '') });
      };
      stream.on('data', (chunk: Buffer) => {
        if (settled) return;
        if (code !== 200) {
          // An error body only matters for its first bytes (its Status).
          const room = MAX_ERROR_BODY - bytes;
          errorChunks.push(chunk.subarray(0, Math.max(0, room)));
          bytes += chunk.length;
          if (bytes >= MAX_ERROR_BODY) done();
          return;
        }
        if (bytes + chunk.length > req.maxBytes) {
          return fail(new ListReadError(`${what}: response larger than ${size(req.maxBytes)}; abandoned while downloading`, true));
        }
        if (bytes + chunk.length > buf.length) {
          const bigger = pool.alloc(Math.min(req.maxBytes, Math.max(buf.length * 2, bytes + chunk.length)));
          buf.copy(bigger, 0, 0, bytes);
          buf = bigger;
        }
        chunk.copy(buf, bytes);
        bytes += chunk.length;
        if (!headDone) {
          const head = readHead(buf, bytes, 'items');
          if (head !== undefined) {
            headDone = true;
            const c = obj(head?.metadata)?.continue;
            if (head) req.onHead?.(typeof c === 'string' && c !== '' ? c : undefined);
          }
        }
      });
      stream.on('end', done);
      stream.on('error', (err: Error) => fail(new ListReadError(`${what}: ${err.message}`)));
      res.on('close', () => {
        if (!res.complete) fail(new ListReadError(`${what}: connection closed before the end of the response`));
      });
    });
    r.end();
  });

  if (status !== 200) throw apiError(what, status, body);

  const bodyLength = body.length;
  const notJson = (err: unknown): ListReadError => {
    const detail = err instanceof Error ? err.message : String(err);
    return new ListReadError(`${what}: response is not JSON (${contentType || 'no content type'}, ${bodyLength} bytes): ${detail}`);
  };
  const recv = scratch.recv[req.slot] ?? body;
  let out = scratch.out[req.slot];
  // At least as large as the body (a selection never is larger), so the worker never has to grow it.
  if (!out || out.length < bodyLength) out = pool.alloc(Math.max(bodyLength, recv.length));
  // The buffers may move to the worker: the slot holds none until they are back.
  scratch.recv[req.slot] = undefined;
  scratch.out[req.slot] = undefined;
  let selected: Selected;
  try {
    selected = await pool.select(recv, bodyLength, selection, out, Math.max(1000, req.timeoutMs - (Date.now() - startedAt)));
  } catch (err) {
    if (err instanceof JsonSelectError || err instanceof SelectWorkerError) throw notJson(err);
    // The worker failed or stalled (the page is retried after the backoff, then on this thread).
    throw new ListReadError(`${what}: ${err instanceof Error ? err.message : String(err)}`);
  }
  scratch.recv[req.slot] = selected.src;
  scratch.out[req.slot] = selected.out;
  let parsed: SplitSelection;
  try {
    parsed = splitSelection(selected.out, selected.ranges);
  } catch (err) {
    throw notJson(err);
  }
  const list = obj(parsed.rest);
  const meta = obj(list?.metadata);
  const length = parsed.length ?? (list !== undefined && list.items === null ? 0 : undefined);
  if (!list || !meta || length === undefined) {
    throw new ListReadError(`${what}: response is not a list (kind ${String(list?.kind)})`);
  }
  const rv = meta.resourceVersion;
  if (typeof rv !== 'string' || rv === '') throw new ListReadError(`${what}: list has no metadata.resourceVersion`);
  const cont = meta.continue;
  const remaining = meta.remainingItemCount;
  return {
    resourceVersion: rv,
    continueToken: typeof cont === 'string' && cont !== '' ? cont : undefined,
    remainingItemCount: typeof remaining === 'number' ? remaining : undefined,
    length,
    // The scan checked the structure; an element JSON.parse still refuses (e.g. a bad escape) fails the page.
    item: (i) => {
      try {
        return parsed.element(i);
      } catch (err) {
        throw notJson(err);
      }
    },
    bytes: bodyLength,
  };
}

function apiError(what: string, code: number, body: Buffer): KubeApiError {
  let reason: string | undefined;
  let message: string | undefined;
  try {
    const s = obj(JSON.parse(body.toString('utf8')));
    if (s?.kind === 'Status') {
      reason = typeof s.reason === 'string' ? s.reason : undefined;
      message = typeof s.message === 'string' ? s.message : undefined;
    }
  } catch {
    // not a Status: the HTTP status says it all
  }
  const text = message ?? http.STATUS_CODES[code] ?? 'error';
  return new KubeApiError(`${what}: HTTP ${code}${reason ? ` ${reason}` : ''}: ${text}`, code, reason);
}
