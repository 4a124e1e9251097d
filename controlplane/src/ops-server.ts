/**
 * /healthz, /readyz, /metrics and, read-only, /debug/pods/<ns>/<name> (a
 * pod's verdict, see debug/pods.ts) on one small HTTP server. It is started
 * before anything else (sources, NATS, the initial sync): the kubelet's
 * liveness probe must get an answer from the first second on, and the
 * heavy work elsewhere yields to the event loop so it keeps getting one.
 */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

/** Undefined when ready, else why not (the body of the 503). */
export type Readiness = () => string | undefined;

/** A pod's verdict as JSON, with its HTTP status; undefined: the route is off (404). */
export type PodDebug = (namespace: string, name: string) => { code: number; body: unknown } | undefined;

const DEBUG_PODS = '/debug/pods/';

export function serveOps(addr: string, registry: Registry, notReady: Readiness, podDebug?: PodDebug): Promise<Server> {
  const i = addr.lastIndexOf(':');
  const host = i > 0 ? addr.slice(0, i) : '0.0.0.0';
  const port = Number(i >= 0 ? addr.slice(i + 1) : addr);
  const server = createServer((req, res) => {
    const send = (code: number, body: string, type = 'text/plain') => {
      res.writeHead(code, { 'content-type': type });
      res.end(body);
    };
    if (req.url === '/healthz') return send(200, 'ok\n');
    if (req.url === '/readyz') {
      let why: string | undefined;
      try {
        why = notReady();
      } catch (err) {
        return send(500, `${(err as Error).message}\n`);
      }
      return why === undefined ? send(200, 'ok\n') : send(503, `not ready: ${why}\n`);
    }
    if (req.url === '/metrics') {
      registry.metrics().then((m) => send(200, m, registry.contentType), (err: Error) => send(500, `${err.message}\n`));
      return;
    }
    if (podDebug && req.url?.startsWith(DEBUG_PODS)) {
      const json = (code: number, body: unknown) => send(code, `${JSON.stringify(body)}\n`, 'application/json');
      if (req.method !== 'GET' && req.method !== 'HEAD') return json(405, { error: 'read-only: GET only' });
      const path = req.url.slice(DEBUG_PODS.length).split('?')[0] ?? '';
      const parts = path.split('/');
      let ns: string, name: string;
      try {
        [ns, name] = parts.map((p) => decodeURIComponent(p)) as [string, string];
      } catch {
        return json(400, { error: 'malformed path: want /debug/pods/<namespace>/<name>' });
      }
      if (parts.length !== 2 || !ns || !name) return json(400, { error: 'want /debug/pods/<namespace>/<name>' });
      try {
        const a = podDebug(ns, name);
        return a ? json(a.code, a.body) : json(404, { error: 'pod debug is off (--no-debug-pods)' });
      } catch (err) {
        return json(500, { error: (err as Error).message });
      }
    }
    send(404, 'not found\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
