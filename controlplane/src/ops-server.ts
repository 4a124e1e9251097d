/**
 * /healthz, /readyz and /metrics on one small HTTP server. It is started
 * before anything else (sources, NATS, the initial sync): the kubelet's
 * liveness probe must get an answer from the first second on, and the
 * heavy work elsewhere yields to the event loop so it keeps getting one.
 */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

/** Undefined when ready, else why not (the body of the 503). */
export type Readiness = () => string | undefined;

export function serveOps(addr: string, registry: Registry, notReady: Readiness): Promise<Server> {
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
    send(404, 'not found\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
