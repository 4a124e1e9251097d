/** Runs one role of test/tools/edge.py (plain blocking BSD sockets) inside a pod. */
import { type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { ROOT, type Pod } from './cluster.js';

const EDGE = join(ROOT, 'test/tools/edge.py');
const PY = '/usr/bin/python3';
export const PROXY_UID = 1337;

export type Result = Record<string, unknown>;

/** Resolves `done` with the role's last JSON line; servers resolve `ready` once they listen. */
export function role(pod: Pod, uid: number, args: string[], timeoutMs = 60_000): { ready: Promise<void>; done: Promise<Result>; proc: ChildProcess } {
  const proc = pod.spawn([PY, EDGE, ...args], uid);
  let last: Result | undefined;
  let stderr = '';
  let readyFn: () => void = () => {};
  const ready = new Promise<void>((r) => (readyFn = r));
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    const m = JSON.parse(line) as Result;
    if (m.ready) readyFn();
    else last = m;
  });
  const done = new Promise<Result>((res, rej) => {
    const t = setTimeout(() => {
      proc.kill('SIGKILL');
      rej(new Error(`edge.py ${args.join(' ')} in ${pod.name} timed out; stderr: ${stderr}`));
    }, timeoutMs);
    // 'close', not 'exit': the last JSON line may still be unread at exit.
    proc.once('close', (code) => {
      clearTimeout(t);
      if (code !== 0 || !last) rej(new Error(`edge.py ${args.join(' ')} in ${pod.name} exited ${code}: ${stderr}`));
      else res(last);
    });
  });
  return { ready, done, proc };
}

