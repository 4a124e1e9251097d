/**
 * Compatibility matrix: real third-party applications and the socket
 * behaviours applications rely on, each run three times over the same pods,
 * worker and iptables rules:
 *
 *   plain     the kill switch off and no endpoints: nothing is paired
 *   default   the endpoints the control plane computes for an unannotated
 *             pod (appSockets "auto": the kernel side decides per socket)
 *   opted-in  meshlane.io/app-sockets: "true" (appSockets "always")
 *
 * Every case must behave in "default" exactly as in "plain" (bytes, return
 * values, errno, timing class), the one exception being a sidecar that
 * splices (HAProxy, not Envoy). In "opted-in" a case may differ only as the
 * KNOWN_HAZARDS table below says: each entry is asserted exactly, so a
 * kernel that fixes one (or a change that breaks another) fails loudly and
 * the table is updated. The counters of the node's worker are read around
 * every case and recorded: which hops were paired and how many bytes the
 * fast lane carried. The whole matrix is written to build/compat/matrix.md.
 *
 * Topology (one simulated node, every pod meshed):
 *   a  client pod, mesh-proxy sidecar
 *   b  server pod, mesh-proxy sidecar: nginx :8081, Python http.server :8082,
 *      Go net/http :8083, Node http :8084, compat-probe servers :9000
 *   r  nginx as a reverse proxy :8080 -> b:8081, mesh-proxy sidecar
 *   h  HAProxy as the sidecar (uid 1337, static backends: 15001 -> b:8081,
 *      15006 -> h:8081 from 127.0.0.6), nginx :8081
 *   s  the same with HAProxy splicing responses (option splice-response),
 *      nginx :8081
 *
 * Socket behaviours run compat-probe (test/tools/compat-probe.c) between a
 * and b, observed once on the client's socket (hop app -> own sidecar) and
 * once on the server's (hop sidecar -> app), with a blocking fd and with a
 * non-blocking one driven like an event loop (poll, then the call). The HTTP
 * rows check status codes and the sha256 of every body.
 *
 * COMPAT_ONLY=<regex> runs only the rows whose id matches (debugging).
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Endpoint } from '@meshlane/proto';
import { ROOT, TOOLS, TestCluster, waitForFile, type Pod } from '../harness/cluster.js';
import { measure, type Counters } from '../harness/counters.js';
import { sh } from '../harness/exec.js';

const APPS = join(import.meta.dirname, 'apps');
const OUT = join(ROOT, 'build/compat');
const PROBE = join(TOOLS, 'compat-probe');
const GO_BIN = join(OUT, 'compat-http-go');
const JAVA_CP = join(OUT, 'java');
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const APP_UID = 1000;
const PROXY_UID = 1337;

type Mode = 'plain' | 'default' | 'opted-in';
const MODES: Mode[] = ['plain', 'default', 'opted-in'];

/**
 * Where a meshlane mode may differ from "plain" on today's kernels: row id
 * -> the modes, the fields of the observation that differ (dotted paths,
 * with the value seen; undefined: the field is absent) and why. Everything
 * not listed must be identical. Seen on 6.18. "default" appears only for
 * the splicing HAProxy, a sidecar hazard (Envoy never splices): the
 * sidecar -> sidecar hop is redirected whatever the app-socket policy says.
 */
interface Hazard {
  modes: Mode[];
  differs: Record<string, unknown>;
  why: string;
}
const KNOWN_HAZARDS: Record<string, Hazard> = {};
function hazard(ids: string[], h: Hazard): void {
  for (const id of ids) KNOWN_HAZARDS[id] = h;
}
const both = (c: string, fds: string[]) => ['client', 'server'].flatMap((o) => fds.map((fd) => `${c}/${o}/${fd}`));
const OPTED_IN: Mode[] = ['opted-in'];
hazard(both('fionread-mixed', ['blocking', 'non-blocking']), {
  modes: OPTED_IN,
  differs: { 'observer.fionread': 1000 },
  why: 'FIONREAD counts only the redirected bytes when TCP bytes queue behind them (here after a half-close, peer_half_closed); every byte still arrives, in order',
});
hazard(both('splice', ['blocking']), {
  modes: OPTED_IN,
  differs: { 'observer.spliced': 0, 'observer.end': 'EAGAIN', 'observer.recv_after': 'n=65536' },
  why: 'tcp_splice_read reads only the TCP receive queue: redirected bytes are invisible to splice (it waits for its SO_RCVTIMEO; without one it blocks forever), recv() has them all',
});
hazard(both('splice', ['non-blocking']), {
  modes: OPTED_IN,
  differs: { 'observer.spliced': 0, 'observer.end': 'timeout', 'observer.recv_after': 'n=65536' },
  why: 'poll says readable (redirected bytes), splice says EAGAIN for ever: an event loop that splices spins',
});
hazard(both('rcvlowat', ['blocking', 'non-blocking']), {
  modes: OPTED_IN,
  differs: { 'observer.poll_when': 'at once', 'observer.recv': 'n=100', 'observer.recv_when': 'at once' },
  why: 'SO_RCVLOWAT is ignored for redirected bytes: poll reports readable and recv returns at the first 100 B',
});
hazard(both('signal-restart', ['blocking']), {
  modes: OPTED_IN,
  differs: { 'observer.recv': 'EAGAIN', 'observer.recv_when': '~250ms', 'observer.second_recv': 'late', 'observer.second_recv_when': '~700ms' },
  why: 'tcp_bpf_recvmsg answers a blocking recv woken by a signal with EAGAIN, even with SA_RESTART (plain TCP restarts the call)',
});
hazard(both('signal-intr', ['blocking']), {
  modes: OPTED_IN,
  differs: { 'observer.recv': 'EAGAIN' },
  why: 'tcp_bpf_recvmsg answers a blocking recv interrupted by a signal with EAGAIN, not EINTR',
});
hazard(both('close-unread', ['blocking', 'non-blocking']), {
  modes: OPTED_IN,
  differs: { 'peer.end': 'eof', 'peer.send_after': 'n=4' },
  why: 'close() with unread redirected bytes sends FIN, not RST (tcp_close looks only at the TCP receive queue): the peer sees a clean EOF and can still write',
});
const HTTP_TIMEOUT = { status: undefined, bytes: undefined, sha256: undefined, exit: 28 };
hazard(['curl->haproxy splice sidecar->nginx'], {
  modes: ['default', 'opted-in'],
  differs: HTTP_TIMEOUT,
  why: "SIDECAR HAZARD: HAProxy splices the response from its upstream socket, which the sidecar -> sidecar hop fills by redirect; splice never sees those bytes and curl times out (exit 28). A sidecar must read with recv, as Envoy does",
});
hazard(['curl->mesh-proxy->haproxy splice sidecar->nginx'], {
  modes: OPTED_IN,
  differs: HTTP_TIMEOUT,
  why: "HAProxy (sidecar of the server) splices nginx's response, which the sidecar -> app hop fills by redirect once app sockets are opted in: curl times out (exit 28)",
});

interface Obs {
  /** What is compared between modes. */
  obs: Record<string, unknown>;
  /** Raw measurements (timings) for the report only. */
  raw: Record<string, unknown>;
}

interface Run extends Obs {
  d: Counters;
}

interface Row {
  id: string;
  group: 'socket behaviour' | 'HTTP application';
  /** The app socket whose behaviour is observed, or the app chain. */
  where: string;
  run: () => Promise<Obs>;
  results: Partial<Record<Mode, Run>>;
  failures: Partial<Record<Mode, string>>;
}

describe('compat - real applications and socket behaviours, plain vs meshlane', () => {
  let c: TestCluster;
  let a: Pod, b: Pod, r: Pod, h: Pod, sp: Pod;
  let www: string;
  let blobSha = '';
  let blobSize = 0;
  let generation = 1;
  /** The worker's decision for app sockets of "auto" pods (its behaviour probe), from its log. */
  let autoDecision: string | undefined;
  let seq = 0;
  const rows: Row[] = [];
  const notes: string[] = [];

  // ---- helpers -------------------------------------------------------

  /** Waits until something listens on a TCP port in the pod's netns. */
  async function waitListen(pod: Pod, port: number, ms = 15000): Promise<void> {
    const end = Date.now() + ms;
    for (;;) {
      const out = sh('ip', ['netns', 'exec', pod.netns, 'ss', '-Htln', `sport = :${port}`]);
      if (out.trim()) return;
      if (Date.now() > end) throw new Error(`nothing listens on ${pod.name}:${port} after ${ms} ms`);
      await sleep(20);
    }
  }

  /** Pod.run resolves on 'close', once every byte of stdout is read. */
  const run = (pod: Pod, cmd: string[], uid: number, timeoutMs: number) => pod.run(cmd, uid, timeoutMs);

  function strip(o: Record<string, unknown>): Obs {
    const obs: Record<string, unknown> = {};
    const raw: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(o)) (k.startsWith('_') ? raw : obs)[k] = v;
    return { obs, raw };
  }

  /**
   * One compat-probe connection a -> b:9000, both sides' reports. A side
   * that fails or hangs (killed after 8 s) is part of the observation
   * ({exit}), so that a hazard can be asserted like any other result.
   */
  async function probe(name: string, observer: 'client' | 'server', fd: 'blocking' | 'non-blocking'): Promise<Obs> {
    const ready = join(c.tmp, `probe-${seq++}.ready`);
    const common = ['--port', '9000', '--case', name, '--observer', observer, ...(fd === 'non-blocking' ? ['--nonblock'] : [])];
    const srv = run(b, [PROBE, 'server', ...common, '--ready-file', ready], APP_UID, 8000);
    await waitForFile(ready);
    const cli = await run(a, [PROBE, 'client', '--host', b.ip4, ...common], APP_UID, 8000);
    const s = await srv;
    const side = (res: { code: number | null; stdout: string; stderr: string }): Obs => {
      let o: Obs = { obs: {}, raw: {} };
      try {
        o = strip(JSON.parse(res.stdout) as Record<string, unknown>);
      } catch {
        // no report: it failed or was killed before printing
      }
      if (res.code !== 0) {
        o.obs.exit = res.code ?? 'killed (hung)';
        o.raw._stderr = res.stderr.slice(0, 300);
      }
      return o;
    };
    const [o, p] = observer === 'client' ? [side(cli), side(s)] : [side(s), side(cli)];
    return { obs: { observer: o.obs, peer: p.obs }, raw: { ...o.raw, ...(p.raw._stderr ? { _peer_stderr: p.raw._stderr } : {}) } };
  }

  /** An HTTP client's JSON report (status, bytes, sha256), or its failure ({exit}). */
  async function http(pod: Pod, cmd: string[], timeoutMs = 20000): Promise<Obs> {
    const t = Date.now();
    const res = await run(pod, cmd, APP_UID, timeoutMs);
    if (res.code !== 0) return { obs: { exit: res.code ?? 'killed (hung)' }, raw: { _ms: Date.now() - t, _stderr: res.stderr.slice(0, 300) } };
    const j = JSON.parse(res.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
    return { obs: j, raw: { _ms: Date.now() - t } };
  }

  /** curl: status and sha256 of what it saved. */
  async function curl(pod: Pod, url: string, extra: string[] = [], maxTime = 10): Promise<Obs> {
    const file = join(c.tmp, `curl-${seq++}.out`);
    const t = Date.now();
    const res = await run(pod, ['curl', '-sS', '--noproxy', '*', '--max-time', String(maxTime), '-o', file, '-w', '%{http_code}', ...extra, url], APP_UID, 15000);
    if (res.code !== 0) {
      rmSync(file, { force: true });
      return { obs: { exit: res.code ?? 'killed (hung)' }, raw: { _ms: Date.now() - t, _stderr: res.stderr.slice(0, 300) } };
    }
    const code = res.stdout;
    const body = readFileSync(file);
    rmSync(file, { force: true });
    const obs: Record<string, unknown> = { status: Number(code), bytes: body.length, sha256: createHash('sha256').update(body).digest('hex') };
    if (body.length <= 128) obs.body = body.toString();
    return { obs, raw: { _ms: Date.now() - t } };
  }

  function nginxConf(name: string, port: number, body: string): string {
    const dir = join(c.tmp, `nginx-${name}`);
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o777);
    const conf = join(dir, 'nginx.conf');
    writeFileSync(
      conf,
      [
        'daemon off;',
        'master_process off;',
        'worker_processes 1;',
        `pid ${dir}/nginx.pid;`,
        `error_log ${dir}/error.log warn;`,
        'events { worker_connections 256; }',
        'http {',
        '  access_log off;',
        '  sendfile on;',
        '  default_type application/octet-stream;',
        ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/${t};`),
        `  server { listen ${port}; listen [::]:${port}; ${body} }`,
        '}',
        '',
      ].join('\n'),
    );
    return conf;
  }

  function startNginx(pod: Pod, name: string, port: number, body: string): Promise<void> {
    const conf = nginxConf(name, port, body);
    pod.spawn(['/usr/sbin/nginx', '-p', join(c.tmp, `nginx-${name}`), '-e', join(c.tmp, `nginx-${name}`, 'error.log'), '-c', conf]);
    return waitListen(pod, port);
  }

  function haproxyConf(pod: Pod, outbound: string, inbound: string, splice = false): string {
    const dir = join(c.tmp, `haproxy-${pod.name}`);
    mkdirSync(dir, { recursive: true });
    const conf = join(dir, 'haproxy.cfg');
    // A sidecar in TCP mode with static backends: HAProxy has no
    // SO_ORIGINAL_DST, so each capture port goes to the one target the
    // test uses. 127.0.0.6 is the inbound source Envoy uses.
    writeFileSync(
      conf,
      [
        'global',
        '  maxconn 256',
        'defaults',
        '  mode tcp',
        '  timeout connect 5s',
        '  timeout client 30s',
        '  timeout server 30s',
        // Kernel splicing of responses only: whether HAProxy splices a
        // request or reads it with recv depends on when its bytes arrive,
        // and the case must be deterministic.
        ...(splice ? ['  option splice-response'] : []),
        'frontend outbound',
        '  bind 0.0.0.0:15001',
        '  default_backend outbound_static',
        'backend outbound_static',
        `  server target ${outbound}`,
        'frontend inbound',
        '  bind 0.0.0.0:15006',
        '  default_backend inbound_static',
        'backend inbound_static',
        `  server app ${inbound} source 127.0.0.6`,
        '',
      ].join('\n'),
    );
    chmodSync(conf, 0o644);
    return conf;
  }

  function endpointsFor(mode: Mode): { endpoints: Endpoint[]; enabled: boolean } {
    if (mode === 'plain') return { endpoints: [], enabled: false };
    const pods = [a, b, r, h, sp];
    // Pod.endpoint() is the opted-in form the datapath suites use; the
    // control plane's default for an unannotated pod is "auto". (Before
    // appSockets became a policy it was a boolean, and true was the only
    // accelerated form: then default and opted-in are the same.)
    const policy = pods[0]!.endpoint().appSockets as unknown;
    const optedIn = (typeof policy === 'string' ? 'always' : true) as Endpoint['appSockets'];
    const auto = (typeof policy === 'string' ? 'auto' : true) as Endpoint['appSockets'];
    return { endpoints: pods.map((p) => p.endpoint({ appSockets: mode === 'default' ? auto : optedIn })), enabled: true };
  }

  // ---- the rows -------------------------------------------------------

  const B = 'blocking' as const;
  const NB = 'non-blocking' as const;
  const PROBES: Array<[string, string, Array<typeof B | typeof NB>]> = [
    ['fionread', 'FIONREAD / SIOCINQ / SIOCOUTQ, whole and after a partial read', [B, NB]],
    ['fionread-mixed', 'FIONREAD and order with 1000 B queued, a half-close, then 1000 B more behind them', [B, NB]],
    ['peek', 'MSG_PEEK: empty, waiting, partial, whole, drained', [B, NB]],
    ['splice', 'splice(socket -> pipe) of 64 KiB (blocking: SO_RCVTIMEO 1.5 s)', [B, NB]],
    ['sendfile', 'sendfile(memfd -> socket) of 256 KiB', [B, NB]],
    ['rcvlowat', 'SO_RCVLOWAT 1000: poll and recv with 100 B, then 900 B at 700 ms', [B, NB]],
    ['rdhup', 'epoll EPOLLRDHUP on half-close, then a reply after the FIN', [NB]],
    ['duplex', 'recv waiting while another thread writes 2 MiB', [B, NB]],
    ['signal-restart', 'SIGALRM (SA_RESTART) at 250 ms during a blocking recv, data at 700 ms', [B]],
    ['signal-intr', 'SIGALRM (no SA_RESTART) at 250 ms during a waiting recv, data at 700 ms', [B, NB]],
    ['rcvtimeo', 'SO_RCVTIMEO 250 ms, then data at 700 ms', [B]],
    ['rst-linger0', 'the peer writes 100 B then closes with SO_LINGER 0', [B, NB]],
    ['close-unread', 'close() with 100 B unread (plain TCP: RST), as the peer sees it', [B, NB]],
    ['peer-first', 'the peer speaks first (a banner), recv waiting for it', [B, NB]],
  ];
  for (const [name, what, fds] of PROBES) {
    for (const fd of fds) {
      for (const observer of ['client', 'server'] as const) {
        rows.push({
          id: `${name}/${observer}/${fd}`,
          group: 'socket behaviour',
          where: `${what}; ${fd} fd of the ${observer === 'client' ? 'client app (hop app -> own sidecar)' : 'server app (hop sidecar -> app)'}`,
          run: () => probe(name, observer, fd),
          results: {},
          failures: {},
        });
      }
    }
  }
  const httpRow = (id: string, where: string, run: () => Promise<Obs>) => rows.push({ id, group: 'HTTP application', where, run, results: {}, failures: {} });
  const url = (pod: () => Pod, port: number, path: string) => () => `http://${pod().ip4}:${port}${path}`;
  const bUrl = (port: number, path = '/blob') => url(() => b, port, path)();
  httpRow('curl->nginx GET', 'curl in a -> nginx in b (sendfile on), 1 MiB', () => curl(a, bUrl(8081)));
  httpRow('curl->nginx 404', 'curl in a -> nginx in b, missing path', () => curl(a, bUrl(8081, '/missing')));
  httpRow('curl->python GET', 'curl -> Python http.server (blocking, threads)', () => curl(a, bUrl(8082)));
  httpRow('curl->python POST', 'curl POST 1 MiB -> Python http.server, sha256 of the body back', () => curl(a, bUrl(8082, '/sha'), ['--data-binary', `@${www}/blob`]));
  httpRow('curl->go GET', 'curl -> Go net/http server', () => curl(a, bUrl(8083)));
  httpRow('curl->go POST', 'curl POST 1 MiB -> Go net/http server', () => curl(a, bUrl(8083, '/sha'), ['--data-binary', `@${www}/blob`]));
  httpRow('curl->node GET', 'curl -> Node http server', () => curl(a, bUrl(8084)));
  httpRow('curl->node POST', 'curl POST 1 MiB -> Node http server', () => curl(a, bUrl(8084, '/sha'), ['--data-binary', `@${www}/blob`]));
  httpRow('python http.client->nginx', 'Python http.client in a -> nginx', () => http(a, [PYTHON, join(APPS, 'compat_http.py'), 'get', bUrl(8081)]));
  httpRow('python socket->nginx', 'Python blocking socket.socket, HTTP/1.0 by hand -> nginx', () => http(a, [PYTHON, join(APPS, 'compat_http.py'), 'rawget', b.ip4, '8081', '/blob']));
  httpRow('java Socket->nginx', 'JVM blocking java.net.Socket -> nginx', () => http(a, ['java', '-XX:-UsePerfData', '-Xshare:auto', '-XX:TieredStopAtLevel=1', '-cp', JAVA_CP, 'CompatHttp', 'socket', b.ip4, '8081', '/blob']));
  httpRow('java HttpClient->nginx', 'JVM java.net.http.HttpClient -> nginx', () => http(a, ['java', '-XX:-UsePerfData', '-Xshare:auto', '-XX:TieredStopAtLevel=1', '-cp', JAVA_CP, 'CompatHttp', 'httpclient', bUrl(8081)]));
  httpRow('go client->nginx', 'Go net/http client -> nginx', () => http(a, [GO_BIN, 'get', bUrl(8081)]));
  httpRow('node client->nginx', 'Node http.get -> nginx', () => http(a, [process.execPath, join(APPS, 'compat-http.mjs'), 'get', bUrl(8081)]));
  httpRow('curl->nginx proxy->nginx', 'curl in a -> nginx reverse proxy in r -> nginx in b (6 hops)', () => curl(a, `http://${r.ip4}:8080/blob`));
  httpRow('curl->haproxy sidecar->nginx', 'curl in h -> HAProxy sidecar of h (15001) -> mesh-proxy of b -> nginx in b', () => curl(h, bUrl(8081)));
  httpRow('curl->mesh-proxy->haproxy sidecar->nginx', 'curl in a -> mesh-proxy of a -> HAProxy sidecar of h (15006) -> nginx in h', () => curl(a, `http://${h.ip4}:8081/blob`));
  httpRow('curl->haproxy splice sidecar->nginx', 'curl in s -> HAProxy sidecar of s splicing (15001) -> mesh-proxy of b -> nginx in b', () => curl(sp, bUrl(8081), [], 3));
  httpRow('curl->mesh-proxy->haproxy splice sidecar->nginx', 'curl in a -> mesh-proxy of a -> HAProxy sidecar of s splicing (15006) -> nginx in s', () => curl(a, `http://${sp.ip4}:8081/blob`, [], 3));
  const only = process.env.COMPAT_ONLY ? new RegExp(process.env.COMPAT_ONLY) : undefined;
  if (only) rows.splice(0, rows.length, ...rows.filter((row) => only.test(row.id)));

  // ---- setup ----------------------------------------------------------

  beforeAll(async () => {
    const t0 = Date.now();
    for (const [bin, why] of [
      ['/usr/sbin/nginx', 'nginx-light'],
      ['/usr/sbin/haproxy', 'haproxy'],
      ['curl', 'curl'],
      ['java', 'openjdk-17-jdk-headless'],
      ['javac', 'openjdk-17-jdk-headless'],
      ['go', 'golang-go'],
    ]) {
      try {
        execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
      } catch {
        throw new Error(`compat suite: ${bin} missing (Debian package ${why}; scripts/lib/setup.sh ensure_compat installs it)`);
      }
    }
    if (!existsSync(PROBE)) throw new Error(`${PROBE} missing: make -s -C test/tools OUT=$PWD/build/tools`);
    mkdirSync(OUT, { recursive: true });
    // Build the Go and Java programs once (again only when the source is newer).
    const goSrc = join(APPS, 'compat-http.go');
    if (!existsSync(GO_BIN) || statSync(GO_BIN).mtimeMs < statSync(goSrc).mtimeMs) {
      execFileSync('go', ['build', '-o', GO_BIN, goSrc], { cwd: APPS, env: { ...process.env, GO111MODULE: 'off', GOFLAGS: '' }, stdio: 'pipe' });
    }
    const javaSrc = join(APPS, 'CompatHttp.java');
    const javaCls = join(JAVA_CP, 'CompatHttp.class');
    if (!existsSync(javaCls) || statSync(javaCls).mtimeMs < statSync(javaSrc).mtimeMs) {
      execFileSync('javac', ['-d', JAVA_CP, javaSrc], { stdio: 'pipe' });
    }

    c = new TestCluster(['n1']);
    www = join(c.tmp, 'www');
    mkdirSync(www);
    chmodSync(www, 0o755);
    const blob = randomBytes(1 << 20);
    writeFileSync(join(www, 'blob'), blob);
    chmodSync(join(www, 'blob'), 0o644);
    blobSha = createHash('sha256').update(blob).digest('hex');
    blobSize = blob.length;

    a = await c.addPod({ name: 'a', node: 'n1', index: 1, meshed: true });
    b = await c.addPod({ name: 'b', node: 'n1', index: 2, meshed: true });
    r = await c.addPod({ name: 'r', node: 'n1', index: 3, meshed: true });
    h = await c.addPod({ name: 'h', node: 'n1', index: 4, meshed: true, sidecar: 'none' });
    sp = await c.addPod({ name: 's', node: 'n1', index: 5, meshed: true, sidecar: 'none' });

    const root = `root ${www};`;
    await startNginx(b, 'b', 8081, root);
    await startNginx(h, 'h', 8081, root);
    await startNginx(sp, 's', 8081, root);
    await startNginx(r, 'r', 8080, `location / { proxy_pass http://${b.ip4}:8081; }`);
    const ready = (n: string) => join(c.tmp, `${n}.ready`);
    b.spawn([PYTHON, join(APPS, 'compat_http.py'), 'server', '8082', www, ready('py')]);
    b.spawn([GO_BIN, 'server', '8083', www, ready('go')]);
    b.spawn([process.execPath, join(APPS, 'compat-http.mjs'), 'server', '8084', www, ready('node')]);
    for (const n of ['py', 'go', 'node']) await waitForFile(ready(n), 15000);
    h.spawn(['/usr/sbin/haproxy', '-db', '-f', haproxyConf(h, `${b.ip4}:8081`, `${h.ip4}:8081`)], PROXY_UID);
    sp.spawn(['/usr/sbin/haproxy', '-db', '-f', haproxyConf(sp, `${b.ip4}:8081`, `${sp.ip4}:8081`, true)], PROXY_UID);
    for (const p of [h, sp]) for (const port of [15001, 15006]) await waitListen(p, port);

    await c.startWorker('n1', c.state('n1', { generation: generation++, ...endpointsFor('plain') }));
    notes.push(`setup ${Date.now() - t0} ms`);
  });

  afterAll(async () => {
    try {
      writeMatrix();
    } finally {
      // TestCluster.cleanup kills every process started in the pods (nginx,
      // HAProxy, the app servers) and removes netns, cgroups, pins and c.tmp.
      await c?.cleanup();
    }
  });

  // ---- the runs -------------------------------------------------------

  for (const mode of MODES) {
    describe(mode, () => {
      beforeAll(async () => {
        const w = c.worker('n1');
        await w.apply(c.state('n1', { generation: generation++, ...endpointsFor(mode) }));
        expect([...w.log.matchAll(/desired state (applied|refused)/g)].at(-1)?.[1], w.log.slice(-2000)).toBe('applied');
        if (mode === 'plain') {
          const auto = /"appSocketsAuto":"([^"]*)"(?:,"reason":"((?:[^"\\]|\\.)*)")?/.exec(w.log);
          autoDecision = auto?.[1];
          notes.push(`worker's decision for app sockets of "auto" pods on this kernel: ${auto ? `${auto[1]}${auto[2] ? ` (${auto[2]})` : ''}` : 'not in its log'}`);
        }
      });

      for (const row of rows) {
        it(`${row.id}`, async () => {
          let run: Run;
          try {
            const { result, d } = await measure(c.worker('n1'), row.run);
            run = { ...result, d };
          } catch (e) {
            row.failures[mode] = (e as Error).message;
            throw e;
          }
          row.results[mode] = run;
          const { d } = run;
          if (mode === 'plain') {
            // The reference ran to completion on both sides.
            expect(JSON.stringify(run.obs), JSON.stringify(run.raw)).not.toMatch(/"exit":/);
            // Nothing is paired and nothing rides the fast lane.
            expect([d.paired_outbound, d.paired_mesh, d.paired_inbound, d.bytes_redirected]).toEqual([0, 0, 0, 0]);
            if (row.group === 'HTTP application') {
              // The reference itself is right: real bytes, by sha256.
              const o = run.obs as { status: number; bytes: number; sha256: string };
              if (row.id.includes('404')) expect(o.status).toBe(404);
              else if (row.id.includes('POST')) expect([o.status, (run.obs as { body?: string }).body]).toEqual([200, blobSha]);
              else expect([o.status, o.bytes, o.sha256]).toEqual([200, blobSize, blobSha]);
            }
            return;
          }
          // meshlane really ran: the sidecar -> sidecar hop is always paired.
          expect(d.paired_mesh, 'sidecar -> sidecar paired').toBeGreaterThanOrEqual(1);
          expect(d.bytes_redirected, 'bytes on the fast lane').toBeGreaterThan(0);
          if (mode === 'default' && autoDecision === 'off') {
            // The kernel side keeps every app socket of an "auto" pod out.
            expect([d.paired_outbound, d.paired_inbound], 'auto is off here: no app hop paired').toEqual([0, 0]);
          }
          if (mode === 'opted-in') {
            // app sockets "always": both app hops are paired as well.
            expect(d.paired_outbound, 'app -> sidecar paired').toBeGreaterThanOrEqual(1);
            expect(d.paired_inbound, 'sidecar -> app paired').toBeGreaterThanOrEqual(1);
          }
          const plain = row.results.plain;
          expect(plain, 'the plain run of this case succeeded').toBeDefined();
          const hz = KNOWN_HAZARDS[row.id]?.modes.includes(mode) ? KNOWN_HAZARDS[row.id] : undefined;
          const expected = hz ? applyDiff(plain!.obs, hz.differs) : plain!.obs;
          expect(run.obs, hz ? `${mode}: the known hazard (${hz.why})` : `${mode} behaves exactly as plain TCP`).toEqual(expected);
        });
      }
    });
  }

  // ---- the report -----------------------------------------------------

  function writeMatrix(): void {
    if (!rows.some((r) => Object.keys(r.results).length)) return;
    mkdirSync(OUT, { recursive: true });
    const hops = (d: Counters) => {
      const h: string[] = [];
      if (d.paired_outbound) h.push(`app->sidecar x${d.paired_outbound}`);
      if (d.paired_mesh) h.push(`sidecar->sidecar x${d.paired_mesh}`);
      if (d.paired_inbound) h.push(`sidecar->app x${d.paired_inbound}`);
      const kb = (n: number) => (n >= 1024 ? `${(n / 1024).toFixed(0)} KiB` : `${n} B`);
      return `${h.length ? h.join(', ') : 'no hop paired'}; ${kb(d.bytes_redirected)} redirected, ${kb(d.bytes_tcp)} TCP${d.app_sockets_off ? `, app_sockets_off ${d.app_sockets_off}` : ''}`;
    };
    const cell = (row: Row, mode: Mode) => {
      const run = row.results[mode];
      if (!run) return row.failures[mode] ? `FAILED: ${esc(row.failures[mode]!.slice(0, 200))}` : 'not run';
      if (mode === 'plain') return `reference (${hops(run.d)})`;
      const plain = row.results.plain;
      if (!plain) return `no reference (${hops(run.d)})`;
      const diffs = diff(plain.obs, run.obs);
      const verdict = diffs.length ? `**differs**: ${esc(diffs.join('; '))}` : 'same';
      const known = KNOWN_HAZARDS[row.id]?.modes.includes(mode) ? ' (known hazard)' : '';
      return `${verdict}${known} (${hops(run.d)})`;
    };
    const lines = [
      '# meshlane compatibility matrix',
      '',
      `Generated by test/compat/matrix.test.ts on ${new Date().toISOString()}, kernel ${sh('uname', ['-r']).trim()}.`,
      'plain: kill switch off, no endpoints. default: the control plane\'s endpoints for an unannotated pod (appSockets "auto").',
      'opted-in: meshlane.io/app-sockets "true" (appSockets "always"). Hops and bytes are the node\'s counters around the case.',
      '',
      '| case | what | plain | default | opted-in |',
      '|---|---|---|---|---|',
      ...rows.map((row) => `| ${esc(row.id)} | ${esc(row.where)} | ${MODES.map((m) => cell(row, m)).join(' | ')} |`),
      '',
      '## Known hazards (asserted exactly)',
      '',
      ...Object.entries(KNOWN_HAZARDS).map(([id, hz]) => `- **${id}** (${hz.modes.join(', ')}): ${hz.why} (${JSON.stringify(hz.differs)})`),
      '',
      '## Plain reference observations',
      '',
      ...rows.map((row) => `- ${row.id}: \`${JSON.stringify(row.results.plain?.obs ?? null)}\` ${JSON.stringify(row.results.plain?.raw ?? {})}`),
      '',
      ...notes.map((n) => `- ${n}`),
      '',
    ];
    writeFileSync(join(OUT, 'matrix.md'), lines.join('\n'));
  }
});

function esc(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** Leaf differences "path: plain -> other". */
function diff(a: unknown, b: unknown, path = ''): string[] {
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].flatMap((k) => diff((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], path ? `${path}.${k}` : k));
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [`${path}: ${JSON.stringify(a)} -> ${JSON.stringify(b)}`];
}

/** plain with the dotted-path fields of `differs` replaced. */
function applyDiff(plain: Record<string, unknown>, differs: Record<string, unknown>): Record<string, unknown> {
  const out = structuredClone(plain);
  for (const [path, v] of Object.entries(differs)) {
    const parts = path.split('.');
    let o = out as Record<string, unknown>;
    for (const p of parts.slice(0, -1)) o = o[p] as Record<string, unknown>;
    o[parts.at(-1)!] = v;
  }
  return out;
}
