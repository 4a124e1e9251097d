/**
 * A real nats-server (Debian's package) with JetStream, for tests and the
 * demo: its own port on 127.0.0.1, its own store directory, stopped and
 * removed by stop() (and on process exit). Never mocked.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection, type ConnectionOptions } from '@nats-io/transport-node';
import { alive, exited } from './exec.js';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export interface NatsServerOptions {
  /** Extra nats-server configuration (accounts, authorization, tls blocks). */
  config?: string;
  port?: number;
}


/** Stops nats-servers of test runs that died, and removes their stores. Only ours: mlt-nats-<pid>-*. */
export function sweepStaleServers(): void {
  for (const d of readdirSync(tmpdir())) {
    const m = /^mlt-nats-(\d+)-/.exec(d);
    if (!m || alive(Number(m[1]))) continue;
    const dir = join(tmpdir(), d);
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        if (cmd.startsWith('nats-server') && cmd.includes(`${dir}/`)) process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

export class NatsServer {
  private proc: ChildProcess | undefined;
  private log = '';
  private readonly onExit = () => this.proc?.kill('SIGKILL');

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly configText: string,
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  static async start(opts: NatsServerOptions = {}): Promise<NatsServer> {
    sweepStaleServers();
    const port = opts.port ?? (await freePort());
    // The owner's pid is in the name, so a later run can tell a server whose
    // test process died by a signal (no exit handler ran) and stop it.
    const dir = mkdtempSync(join(tmpdir(), `mlt-nats-${process.pid}-`));
    const config = [`listen: 127.0.0.1:${port}`, `jetstream { store_dir: "${join(dir, 'js')}", max_memory_store: 256MB, max_file_store: 4GB }`, opts.config ?? ''].join('\n');
    const s = new NatsServer(port, dir, config);
    await s.boot();
    return s;
  }

  private async boot(): Promise<void> {
    const conf = join(this.dir, 'nats.conf');
    writeFileSync(conf, this.configText);
    this.log = '';
    const p = spawn('nats-server', ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout?.on('data', (d: Buffer) => (this.log += d.toString()));
    p.stderr?.on('data', (d: Buffer) => (this.log += d.toString()));
    this.proc = p;
    process.once('exit', this.onExit);
    const end = Date.now() + 10000;
    while (!/Server is ready/.test(this.log)) {
      if (exited(p)) throw new Error(`nats-server exited ${p.exitCode}: ${this.log}`);
      if (Date.now() > end) throw new Error(`nats-server not ready: ${this.log}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  connect(opts: Partial<ConnectionOptions> = {}): Promise<NatsConnection> {
    return connect({ servers: this.url, ...opts });
  }

  /** Stops the server keeping its JetStream store (a restart). */
  async kill(): Promise<void> {
    const p = this.proc;
    if (!p || exited(p)) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await gone;
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.boot();
  }

  async stop(): Promise<void> {
    await this.kill();
    process.removeListener('exit', this.onExit);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
