/** A meshlane-controlplane process for end-to-end tests and the demo. */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './cluster.js';
import { exited } from './exec.js';

export const CONTROLPLANE_CLI = join(ROOT, 'controlplane/dist/cli.js');

export class ControlPlaneProc {
  proc: ChildProcess | undefined;
  log = '';
  constructor(
    readonly id: string,
    readonly args: string[],
  ) {}

  start(): void {
    this.log = '';
    const p = spawn(process.execPath, [CONTROLPLANE_CLI, '--pod-name', this.id, '--pod-namespace', 'istio-system', '--metrics-addr', '127.0.0.1:0', '--log-level', 'debug', ...this.args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    p.stdout?.on('data', (d: Buffer) => (this.log += d.toString()));
    p.stderr?.on('data', (d: Buffer) => (this.log += d.toString()));
    this.proc = p;
  }

  leading(): boolean {
    const i = this.log.lastIndexOf('"msg":"leading');
    return i >= 0 && this.log.lastIndexOf('stopped leading') < i;
  }

  async waitFor(re: RegExp, ms = 15000): Promise<void> {
    const end = Date.now() + ms;
    while (!re.test(this.log)) {
      if (this.proc && exited(this.proc)) throw new Error(`controlplane ${this.id} exited: ${this.log}`);
      if (Date.now() > end) throw new Error(`controlplane ${this.id}: no ${re} in ${ms} ms:\n${this.log.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.proc;
    if (!p || exited(p)) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill(signal);
    await gone;
  }
}
