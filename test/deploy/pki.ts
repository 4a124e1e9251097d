/**
 * TLS helpers of the deploy and bus tests. Throwaway TLS material made with
 * the openssl CLI, the way deploy/README.md tells an operator to: a CA, and
 * a server certificate it signs with the given subject alternative names,
 * usable for both TLS ends (NATS routes are mutual TLS with the same
 * certificate). Files: ca.crt, ca.key, tls.crt, tls.key in `dir` (the
 * layout of the meshlane-nats-tls Secret). And a plain-text NATS client.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';

export interface CertFiles {
  dir: string;
  ca: string;
  caKey: string;
  cert: string;
  key: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
}

/** A self-signed CA in `dir` (ca.crt, ca.key). */
export function makeCa(dir: string, cn = 'meshlane-test-ca'): { ca: string; caKey: string } {
  mkdirSync(dir, { recursive: true });
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=${cn}`, '-keyout', 'ca.key', '-out', 'ca.crt'], dir);
  return { ca: join(dir, 'ca.crt'), caKey: join(dir, 'ca.key') };
}

/** A CA and a certificate it signed for `sans` (e.g. `DNS:localhost`, `IP:127.0.0.1`). */
export function makeCerts(dir: string, sans: readonly string[]): CertFiles {
  const { ca, caKey } = makeCa(dir);
  writeFileSync(
    join(dir, 'ext.cnf'),
    [
      'basicConstraints = critical, CA:FALSE',
      'keyUsage = critical, digitalSignature, keyEncipherment',
      'extendedKeyUsage = serverAuth, clientAuth',
      `subjectAltName = ${sans.join(', ')}`,
      '',
    ].join('\n'),
  );
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=meshlane-nats', '-keyout', 'tls.key', '-out', 'tls.csr'], dir);
  openssl(['x509', '-req', '-in', 'tls.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'ext.cnf', '-out', 'tls.crt'], dir);
  return { dir, ca, caKey, cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key') };
}

/** The names the chart's NATS certificate must carry in namespace `ns` (clients use the Service, routes the pods). */
export function chartSans(ns: string): string[] {
  return [`meshlane-nats`, `meshlane-nats.${ns}`, `meshlane-nats.${ns}.svc`, `meshlane-nats.${ns}.svc.cluster.local`, `*.meshlane-nats-headless.${ns}.svc`].map((n) => `DNS:${n}`);
}

/**
 * A client speaking plain text with valid credentials: the server's INFO,
 * what came after our CONNECT and PING (a server without TLS answers +OK and
 * PONG), and whether it hung up (within 5 s).
 */
export function plainText(port: number, user: string, pass: string, host = '127.0.0.1'): Promise<{ info: string; after: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    let info = '';
    let after = '';
    let sent = false;
    const sock = tcpConnect(port, host);
    const done = (closed: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ info, after, closed });
    };
    const timer = setTimeout(() => done(false), 5000);
    sock.on('data', (d) => {
      if (sent) after += d.toString();
      else {
        info += d.toString();
        if (info.includes('\r\n')) {
          sock.write(`CONNECT ${JSON.stringify({ verbose: true, pedantic: false, user, pass })}\r\nPING\r\n`);
          sent = true;
        }
      }
    });
    sock.on('close', () => done(true));
    sock.on('error', (e) => (info ? done(true) : (clearTimeout(timer), reject(e))));
  });
}
