/**
 * Renders deploy/helm/meshlane/templates/*.yaml with values.yaml into
 * deploy/manifests/*.yaml, without helm: the templates keep to a small,
 * Helm-compatible subset of Go templates that this file evaluates exactly
 * as helm would (and refuses anything else, loudly):
 *
 *   {{ .Values.a.b }}  {{ .Release.Namespace }}  {{ .Release.Name }}
 *   {{ X | quote }}  {{ toYaml X | nindent N }}  {{ toJson X }}  {{ X | indent N }}
 *   {{ if X }} ... {{ else }} ... {{ end }}  (Go's truth: false, 0, "", null,
 *                                            empty list or map are false)
 *   {{- ... -}}  (whitespace trimming)
 *
 * Stricter than helm in one way: a value a template names must exist in
 * values.yaml (also in `if`), so a typo fails instead of rendering nothing.
 *
 * Usage: node --import tsx deploy/render.ts [--check] [--namespace NS]
 *   --check  render to memory and exit 1 if deploy/manifests/ differs
 */
import { readFileSync, readdirSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';

const HERE = dirname(fileURLToPath(import.meta.url));
export const CHART_DIR = join(HERE, 'helm', 'meshlane');
export const MANIFEST_DIR = join(HERE, 'manifests');

type Value = string | number | boolean | null | Value[] | { [k: string]: Value };
export interface Release {
  Name: string;
  Namespace: string;
}

function lookup(root: Record<string, Value>, path: string, where: string): Value {
  let v: Value = root;
  for (const k of path.split('.').filter((s) => s !== '')) {
    if (v === null || typeof v !== 'object' || Array.isArray(v) || !(k in v)) throw new Error(`${where}: no value at ${path}`);
    v = v[k] as Value;
  }
  return v;
}

function scalar(v: Value): string {
  if (v === null) return '';
  if (typeof v === 'object') throw new Error(`a map or list printed as a scalar: ${JSON.stringify(v)}`);
  return String(v);
}

/** helm's toYaml: block style, no trailing newline. */
function toYaml(v: Value): string {
  return yaml.dump(v, { lineWidth: -1, noRefs: true, sortKeys: false }).replace(/\n$/, '');
}

function indent(s: string, n: number): string {
  const pad = ' '.repeat(n);
  return s
    .split('\n')
    .map((l) => pad + l)
    .join('\n');
}

function evalAction(action: string, ctx: { Values: Record<string, Value>; Release: Release }, where: string): string {
  const stages = action.split('|').map((s) => s.trim());
  let cur: Value | undefined;
  const operand = (tok: string): Value => {
    if (tok.startsWith('.Values')) return lookup(ctx.Values, tok.slice('.Values'.length), where);
    if (tok === '.Release.Namespace') return ctx.Release.Namespace;
    if (tok === '.Release.Name') return ctx.Release.Name;
    throw new Error(`${where}: unsupported operand ${tok}`);
  };
  const apply = (fn: string, args: string[], input: Value | undefined): Value => {
    const arg = input === undefined ? (args.length ? operand(args.shift() as string) : undefined) : input;
    if (arg === undefined) throw new Error(`${where}: ${fn} without an argument`);
    switch (fn) {
      case 'quote':
        return JSON.stringify(scalar(arg));
      case 'toYaml':
        return toYaml(arg);
      case 'toJson':
        return JSON.stringify(arg);
      case 'nindent':
      case 'indent': {
        const n = Number(args[0]);
        if (!Number.isInteger(n)) throw new Error(`${where}: ${fn} needs a width`);
        const s = typeof arg === 'string' ? arg : scalar(arg);
        return (fn === 'nindent' ? '\n' : '') + indent(s, n);
      }
      default:
        throw new Error(`${where}: unsupported function ${fn}`);
    }
  };
  for (const stage of stages) {
    const toks = stage.split(/\s+/);
    const head = toks[0] ?? '';
    if (head.startsWith('.')) {
      if (cur !== undefined || toks.length !== 1) throw new Error(`${where}: unsupported pipeline ${action}`);
      cur = operand(head);
    } else {
      cur = apply(head, toks.slice(1), cur);
    }
  }
  if (cur === undefined) throw new Error(`${where}: empty action`);
  return typeof cur === 'string' ? cur : scalar(cur);
}

/** Go template truth: false, 0, "", null and empty lists and maps are false. */
function truthy(v: Value): boolean {
  if (v === null || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

type Piece = { lit: string } | { action: string; where: string };

/** Evaluates one template. */
export function renderTemplate(text: string, values: Record<string, Value>, release: Release, name = 'template'): string {
  // Lexing first: trimming is lexical in Go templates (it applies in branches not taken too).
  const re = /\{\{(-?)\s*(.*?)\s*(-?)\}\}/g;
  const pieces: Piece[] = [];
  let last = 0;
  let trimNext = false;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    let lit = text.slice(last, m.index);
    if (trimNext) lit = lit.replace(/^\s+/, '');
    if (m[1] === '-') lit = lit.replace(/\s+$/, '');
    pieces.push({ lit });
    pieces.push({ action: m[2] ?? '', where: `${name}:${text.slice(0, m.index).split('\n').length}` });
    trimNext = m[3] === '-';
    last = re.lastIndex;
  }
  let tail = text.slice(last);
  if (trimNext) tail = tail.replace(/^\s+/, '');
  pieces.push({ lit: tail });

  const ctx = { Values: values, Release: release };
  // One frame per open `if`: its condition, and whether its `else` was reached.
  const stack: Array<{ cond: boolean; inElse: boolean; where: string }> = [];
  const active = (): boolean => stack.every((f) => (f.inElse ? !f.cond : f.cond));
  let out = '';
  for (const p of pieces) {
    if ('lit' in p) {
      if (active()) out += p.lit;
      continue;
    }
    const [kw, ...rest] = p.action.split(/\s+/);
    if (kw === 'if') {
      if (rest.length !== 1) throw new Error(`${p.where}: unsupported condition ${p.action}`);
      const tok = rest[0] ?? '';
      // The condition must name an existing value; as in Go, actions in a branch not taken are not evaluated.
      const v = tok.startsWith('.Values') ? lookup(values, tok.slice('.Values'.length), p.where) : undefined;
      if (v === undefined) throw new Error(`${p.where}: unsupported condition ${p.action}`);
      stack.push({ cond: truthy(v), inElse: false, where: p.where });
    } else if (kw === 'else') {
      const f = stack.at(-1);
      if (!f || f.inElse || rest.length) throw new Error(`${p.where}: unexpected ${p.action}`);
      f.inElse = true;
    } else if (kw === 'end') {
      if (!stack.pop() || rest.length) throw new Error(`${p.where}: unexpected ${p.action}`);
    } else if (active()) {
      out += evalAction(p.action, ctx, p.where);
    }
  }
  const open = stack.at(-1);
  if (open) throw new Error(`${open.where}: if without end`);
  return out;
}

export function loadValues(file = join(CHART_DIR, 'values.yaml')): Record<string, Value> {
  const v = yaml.load(readFileSync(file, 'utf8'));
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${file}: not a map`);
  return v as Record<string, Value>;
}

/** Every template rendered: file name -> YAML text. */
export function renderChart(release: Release = { Name: 'meshlane', Namespace: 'istio-system' }, values = loadValues()): Map<string, string> {
  const out = new Map<string, string>();
  const dir = join(CHART_DIR, 'templates');
  for (const f of readdirSync(dir).sort()) {
    if (!f.endsWith('.yaml')) continue;
    const text = renderTemplate(readFileSync(join(dir, f), 'utf8'), values, release, `templates/${f}`);
    out.set(f, `# Rendered by deploy/render.ts from deploy/helm/meshlane/templates/${f}. Do not edit.\n${text}`);
  }
  return out;
}

function main(): void {
  const args = process.argv.slice(2);
  const check = args.includes('--check');
  const nsIdx = args.indexOf('--namespace');
  const ns = nsIdx >= 0 ? args[nsIdx + 1] : undefined;
  const rendered = renderChart({ Name: 'meshlane', Namespace: ns ?? 'istio-system' });
  let stale = 0;
  mkdirSync(MANIFEST_DIR, { recursive: true });
  for (const [f, text] of rendered) {
    const target = join(MANIFEST_DIR, f);
    const old = existsSync(target) ? readFileSync(target, 'utf8') : undefined;
    if (old === text) continue;
    if (check) {
      process.stderr.write(`deploy/manifests/${f} is stale: run node --import tsx deploy/render.ts\n`);
      stale++;
    } else {
      writeFileSync(target, text);
      process.stdout.write(`wrote deploy/manifests/${f}\n`);
    }
  }
  if (stale) process.exit(1);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
