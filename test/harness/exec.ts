/** Runs system commands for the harness; failures carry the command and its stderr. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';

export function sh(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr?.trim() || e.message}`);
  }
}

export function trySh(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error('datapath tests need root (BPF, network namespaces, iptables): run the README test command as root');
  }
}

/**
 * Starts a process inside a network namespace and a cgroup, as a given uid:
 * the shell joins the cgroup first so that every socket the program opens
 * belongs to it, then ip-netns-exec and setpriv exec in place (same pid).
 */
export function spawnIn(opts: { netns: string; cgroup: string; uid: number; cmd: string[]; env?: Record<string, string> }): ChildProcess {
  const script = 'echo $$ > "$0/cgroup.procs" && exec ip netns exec "$1" setpriv --reuid "$2" --regid "$2" --clear-groups "$@"';
  const args = ['-c', script.replace('"$@"', '"${@:3}"'), opts.cgroup, opts.netns, String(opts.uid), ...opts.cmd];
  return spawn('bash', args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
}

/** A child that has exited, by code or by signal (exitCode stays null for a signal). */
export function exited(p: { exitCode: number | null; signalCode: NodeJS.Signals | null }): boolean {
  return p.exitCode !== null || p.signalCode !== null;
}

/** Whether a process id is alive (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
