/**
 * Helpers of test/deploy/staged-install.test.ts: what an image's runtime
 * stage says (deploy/images/*.Dockerfile), what the chart gives its pod
 * (deploy/manifests), and the scripts/stage-sandbox command that runs a
 * staged tree the way a container runtime would run the image.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';

export const ROOT = join(import.meta.dirname, '../..');
export const STAGE = join(ROOT, 'build/stage');
export const SANDBOX = join(ROOT, 'scripts/stage-sandbox');

/** The final stage of a Dockerfile: what it copies and how the image runs. */
export interface RuntimeStage {
  from: string;
  copies: string[];
  env: Record<string, string>;
  user: string | undefined;
  workdir: string;
  entrypoint: string[];
  /** The `scripts/stage` command of its build stage. */
  stageCommand: string | undefined;
}

export function runtimeStage(dockerfile: string): RuntimeStage {
  const text = readFileSync(dockerfile, 'utf8').replace(/\\\n/g, ' ');
  const lines = text.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
  const lastFrom = lines.map((l, i) => (/^FROM\s/i.test(l) ? i : -1)).filter((i) => i >= 0).pop();
  if (lastFrom === undefined) throw new Error(`${dockerfile}: no FROM`);
  const args: Record<string, string> = {};
  for (const l of lines.slice(0, lines.findIndex((x) => /^FROM\s/i.test(x)))) {
    const m = /^ARG\s+(\w+)=(\S+)/.exec(l);
    if (m) args[m[1]!] = m[2]!;
  }
  const st: RuntimeStage = {
    from: lines[lastFrom]!.split(/\s+/)[1]!.replace(/\$\{(\w+)\}/g, (_, k: string) => args[k] ?? ''),
    copies: [],
    env: {},
    user: undefined,
    workdir: '/',
    entrypoint: [],
    stageCommand: lines.find((l) => /^RUN\s+.*scripts\/stage\s/.test(l))?.replace(/^RUN\s+/, ''),
  };
  for (const l of lines.slice(lastFrom + 1)) {
    const [ins, ...rest] = l.trim().split(/\s+/);
    const arg = rest.join(' ');
    switch (ins!.toUpperCase()) {
      case 'COPY':
        st.copies.push(arg);
        break;
      case 'ENV':
        for (const kv of arg.match(/\w+=("[^"]*"|\S+)/g) ?? []) {
          const i = kv.indexOf('=');
          st.env[kv.slice(0, i)] = kv.slice(i + 1).replace(/^"|"$/g, '');
        }
        break;
      case 'USER':
        st.user = arg;
        break;
      case 'WORKDIR':
        st.workdir = arg;
        break;
      case 'ENTRYPOINT':
        st.entrypoint = JSON.parse(arg) as string[];
        break;
    }
  }
  return st;
}

interface Container {
  name: string;
  image?: string;
  securityContext?: { readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean; runAsUser?: number; capabilities?: { add?: string[]; drop?: string[] } };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface PodSpec {
  securityContext?: { runAsUser?: number; runAsGroup?: number };
  containers: Container[];
  volumes?: { name: string; hostPath?: { path: string }; emptyDir?: object }[];
}

/** The pod spec of the DaemonSet / Deployment in a rendered manifest. */
export function workload(manifest: string, kind: 'DaemonSet' | 'Deployment'): PodSpec {
  const docs = yaml.loadAll(readFileSync(join(ROOT, 'deploy/manifests', manifest), 'utf8')) as { kind?: string; spec?: { template: { spec: PodSpec } } }[];
  const d = docs.find((x) => x?.kind === kind);
  if (!d?.spec) throw new Error(`${manifest}: no ${kind}`);
  return d.spec.template.spec;
}

export interface SandboxOptions {
  stage: string;
  /** stage is a whole image root (a mounted image), not a scripts/stage tree. */
  rootfs?: boolean;
  uid: number;
  gid?: number;
  caps: string[];
  binds: string[];
  env: Record<string, string>;
  cwd: string;
}

/** argv of scripts/stage-sandbox running `cmd` in a staged tree. */
export function sandboxArgv(o: SandboxOptions, cmd: string[]): string[] {
  const a = ['bash', SANDBOX, o.rootfs ? '--rootfs' : '--stage', o.stage, '--uid', String(o.uid), '--gid', String(o.gid ?? o.uid), '--cwd', o.cwd];
  if (o.caps.length) a.push('--caps', o.caps.join(','));
  for (const b of o.binds) a.push('--bind', b);
  for (const [k, v] of Object.entries(o.env)) a.push('--env', `${k}=${v}`);
  return [...a, '--', ...cmd];
}

export function runSandbox(o: SandboxOptions, cmd: string[]): { code: number | null; stdout: string; stderr: string } {
  const [c, ...args] = sandboxArgv(o, cmd);
  const r = spawnSync(c!, args, { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Capability numbers (linux/capability.h) of the names the manifests use. */
export const CAP_BITS: Record<string, number> = { NET_ADMIN: 12, SYS_ADMIN: 21, SYS_RESOURCE: 24, PERFMON: 38, BPF: 39 };

export function capMask(names: string[]): bigint {
  return names.reduce((m, n) => {
    const bit = CAP_BITS[n];
    if (bit === undefined) throw new Error(`capability ${n}: add its number to CAP_BITS`);
    return m | (1n << BigInt(bit));
  }, 0n);
}

/** Cap* lines of /proc/PID/status as masks. */
export function procCaps(pid: number): Record<string, bigint> {
  const out: Record<string, bigint> = {};
  for (const m of readFileSync(`/proc/${pid}/status`, 'utf8').matchAll(/^(Cap\w+):\s+([0-9a-f]+)$/gm)) out[m[1]!] = BigInt(`0x${m[2]}`);
  return out;
}

/** Mount points (as the process sees them) and whether each is read-only. */
export function procMounts(pid: number): { path: string; ro: boolean }[] {
  return readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
    .trim()
    .split('\n')
    .map((l) => {
      const f = l.split(' ');
      return { path: f[4]!, ro: f[5]!.split(',').includes('ro') };
    });
}

/**
 * The options a --help text defines: an indented line starting with the flag
 * (`  --nats URL   ...`, `  -h, --help`), and whether it takes a value (an
 * upper-case placeholder right after it).
 */
export function helpFlags(help: string): { flag: string; value: boolean }[] {
  const out = new Map<string, boolean>();
  for (const m of help.matchAll(/^\s{2,}(?:-\w, )?(--[a-z][a-z0-9-]*)( [^\s-]\S*)?/gm)) out.set(m[1]!, m[2] !== undefined);
  return [...out].map(([flag, value]) => ({ flag, value }));
}

/** Splits at `sep` outside brackets and parentheses. */
function splitTop(s: string, sep: string): string[] {
  const out = [''];
  let depth = 0;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch === '[' || ch === '(') depth++;
    if (ch === ']' || ch === ')') depth--;
    if (depth === 0 && s.startsWith(sep, i)) {
      out.push('');
      i += sep.length - 1;
    } else out[out.length - 1] += ch;
  }
  return out;
}

export interface ReadmeCommand {
  bin: string;
  sub: string[];
  /** Each flag written for it, and whether a value follows it there. */
  flags: { flag: string; value: boolean }[];
}

/**
 * The README's command synopsis (the fenced block of `meshlane-controlplane`,
 * `meshlane-worker ...`, `meshlane ...` lines): each program with its
 * subcommand words and the flags written for it. `a | b` at the top level
 * are two commands (`meshlane audit tail | status | pairs --node N`); an
 * alternative that starts with a flag keeps the subcommand before it.
 */
export function readmeCommands(readme: string): ReadmeCommand[] {
  const block = [...readme.matchAll(/```[a-z]*\n([\s\S]*?)```/g)].map((m) => m[1]!).find((b) => /^meshlane-worker run /m.test(b));
  if (!block) throw new Error('README: no synopsis block with "meshlane-worker run"');
  const entries: string[] = [];
  for (const l of block.split('\n')) {
    if (/^meshlane(-\w+)?\b/.test(l)) entries.push(l);
    else if (/^\s+\S/.test(l) && entries.length) entries[entries.length - 1] += ` ${l.trim()}`;
  }
  const out: ReadmeCommand[] = [];
  for (const e of entries) {
    const [bin, ...rest] = e.split(/\s+/);
    let sub: string[] = [];
    for (const alt of splitTop(rest.join(' '), ' | ')) {
      const words = alt.split(/\s+/).filter(Boolean);
      if (!words[0]?.startsWith('-') && !/^[[(]/.test(words[0] ?? '')) {
        sub = [];
        for (const w of words) {
          if (!/^[a-z][a-z-]*$/.test(w)) break;
          sub.push(w);
        }
      }
      const flags = new Map<string, boolean>();
      const toks = alt.replace(/[[\]()|]/g, ' ').split(/\s+/).filter(Boolean);
      toks.forEach((t, i) => {
        if (/^--[a-z][a-z0-9-]*$/.test(t)) flags.set(t, toks[i + 1] !== undefined && !toks[i + 1]!.startsWith('-') && !/^\.\.\.$/.test(toks[i + 1]!));
      });
      const prev = out.find((o) => o.bin === bin && o.sub.join(' ') === sub.join(' '));
      if (prev) {
        for (const [flag, value] of flags) if (!prev.flags.some((f) => f.flag === flag)) prev.flags.push({ flag, value });
      } else out.push({ bin: bin!, sub: [...sub], flags: [...flags].map(([flag, value]) => ({ flag, value })) });
    }
  }
  return out;
}
