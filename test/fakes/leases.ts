/**
 * coordination.k8s.io/v1 Leases for the fake apiserver: get, create and
 * replace with the real optimistic concurrency (a replace whose
 * metadata.resourceVersion is stale gets 409 Conflict), which is all that
 * leader election relies on.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

interface Lease {
  apiVersion: 'coordination.k8s.io/v1';
  kind: 'Lease';
  metadata: { name: string; namespace: string; resourceVersion: string; uid: string; creationTimestamp: string };
  spec: Record<string, unknown>;
}

const PATH = /^\/apis\/coordination\.k8s\.io\/v1\/namespaces\/([^/]+)\/leases(?:\/([^/]+))?\/?$/;

function status(code: number, reason: string, message: string) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

export class FakeLeases {
  private readonly leases = new Map<string, Lease>();
  private rv = 1000;
  /** Refuse every lease write (an apiserver partition for one replica is simulated by the client side). */
  frozen = false;

  get(ns: string, name: string): Lease | undefined {
    return this.leases.get(`${ns}/${name}`);
  }

  /** Returns true when the request was a lease request (and has been answered). */
  handle(req: IncomingMessage, res: ServerResponse, pathname: string): boolean {
    const m = PATH.exec(pathname);
    if (!m) return false;
    const [, ns = '', name] = m;
    const send = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'GET' && name) {
      const l = this.leases.get(`${ns}/${name}`);
      send(l ? 200 : 404, l ?? status(404, 'NotFound', `leases.coordination.k8s.io "${name}" not found`));
      return true;
    }
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      if (this.frozen) return send(503, status(503, 'ServiceUnavailable', 'frozen'));
      let obj: Lease;
      try {
        obj = JSON.parse(body) as Lease;
      } catch {
        return send(400, status(400, 'BadRequest', 'not JSON'));
      }
      const leaseName = name ?? obj.metadata?.name;
      const key = `${ns}/${leaseName}`;
      const existing = this.leases.get(key);
      if (req.method === 'POST') {
        if (existing) return send(409, status(409, 'AlreadyExists', `leases.coordination.k8s.io "${leaseName}" already exists`));
      } else if (req.method === 'PUT') {
        if (!existing) return send(404, status(404, 'NotFound', `leases.coordination.k8s.io "${leaseName}" not found`));
        if (obj.metadata?.resourceVersion !== existing.metadata.resourceVersion) {
          return send(409, status(409, 'Conflict', 'Operation cannot be fulfilled on leases.coordination.k8s.io: the object has been modified; please apply your changes to the latest version and try again'));
        }
      } else {
        return send(405, status(405, 'MethodNotAllowed', `${req.method ?? ''} is not supported`));
      }
      const stored: Lease = {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: leaseName ?? '', namespace: ns, resourceVersion: String(++this.rv), uid: existing?.metadata.uid ?? `lease-${this.rv}`, creationTimestamp: existing?.metadata.creationTimestamp ?? new Date().toISOString() },
        spec: obj.spec ?? {},
      };
      this.leases.set(key, stored);
      send(req.method === 'POST' ? 201 : 200, stored);
    });
    return true;
  }
}
