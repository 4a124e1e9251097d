/**
 * Renders the chart deploy/helm/meshlane/ without helm, into deploy/manifests/.
 *
 * The chart is a real Helm chart; this file is a second renderer of it, for
 * the committed manifests and for the tests. It implements a subset of Go
 * templates and of helm's functions, each exactly as helm (Go text/template,
 * sprig, sigs.k8s.io/yaml) evaluates it, and REFUSES everything else with
 * file:line and the construct: a template or a value that helm would render
 * differently from this file is an error here, never a different output.
 *
 *   text/template: {{ pipeline }}, {{- -}} trimming, {{/* comments *\/}},
 *     if / else if / else / end, range over a list or a map (one or two
 *     variables, else), define (in _*.tpl) and include, $x := / $x =,
 *     fields of maps and of .Release / .Chart, string and decimal integer
 *     literals, nil, true, false, ( ) sub-pipelines, pipelines with |.
 *     Builtins: and or not eq ne index len printf (%s %d %v %%).
 *   sprig/helm: quote toYaml toJson indent nindent int until dict list
 *     hasKey b64enc include fail.
 *   Refused when evaluated (their output is random or depends on the
 *   cluster): lookup genCA genSignedCert buildCustomCert genPrivateKey
 *   randAlphaNum now uuidv4. Tests may pass stand-ins (RenderOptions.helmOnly).
 *
 * Printing follows Go: numbers from values files are float64 in helm (so
 * {{ 1048576 from values }} prints 1.048576e+06, as helm does: use `int`).
 * toYaml and toJson accept the values whose output is certain (plain-safe
 * strings, integers, maps with digit-free keys), and refuse others. A value
 * a template names must exist (helm would print nothing), values files may
 * not contain plain scalars YAML 1.1 (helm) reads differently from YAML 1.2
 * (js-yaml: yes/no/on/off, 0755, 1_000, dates, ...), and values are
 * validated against values.schema.json first, as helm does.
 *
 * Usage: node --import tsx deploy/render.ts [--check]
 *   renders deploy/manifests/ with values.yaml and MANIFEST_VALUES (below);
 *   --check renders to memory and exits 1 if deploy/manifests/ differs.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import AjvModule from 'ajv';

const HERE = dirname(fileURLToPath(import.meta.url));
export const CHART_DIR = join(HERE, 'helm', 'meshlane');
export const MANIFEST_DIR = join(HERE, 'manifests');

/**
 * The values deploy/manifests/ is rendered with, over values.yaml: plain
 * `kubectl apply` has no hooks (the pre-delete Job would run at once and
 * delete the worker) and cannot generate certificates (a private key would
 * be committed), so the manifests take the certificate from an existing
 * Secret (cert-manager or openssl: deploy/README.md).
 */
export const MANIFEST_VALUES = {
  nats: { tls: { source: 'existing' } },
  worker: { uninstallHook: { enabled: false } },
};

// ---------------------------------------------------------------- values

/** A Go value: number is float64 (what helm makes of every number in a values file), bigint is int. */
export type Value = string | number | bigint | boolean | null | Value[] | { [k: string]: Value } | GoStruct;

/** A Go struct: only the named fields exist (.Release, .Chart, a sprig certificate). */
export class GoStruct {
  constructor(
    readonly type: string,
    readonly fields: Record<string, Value>,
  ) {}
}

export interface Release {
  Name: string;
  Namespace: string;
  /** What helm sets: "Helm". */
  Service?: string;
}

export type HelmOnly = (...args: Value[]) => Value;

export interface RenderOptions {
  release?: Release;
  /** Values over values.yaml (merged as helm merges -f files: maps recursively, null deletes). */
  values?: Record<string, unknown>;
  /** Stand-ins for the functions render.ts refuses (lookup, genCA, ...), for tests only. */
  helmOnly?: Record<string, HelmOnly>;
  /** Skip the values.schema.json validation (tests of the renderer itself). */
  noSchema?: boolean;
}

export class RenderError extends Error {}

const isMap = (v: unknown): v is { [k: string]: Value } => v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof GoStruct);

/** YAML 1.1 (helm's sigs.k8s.io/yaml) reads these plain scalars differently from js-yaml's YAML 1.2. */
const YAML11_DIFFERS: Array<[RegExp, string]> = [
  [/^(y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$/, 'a boolean in YAML 1.1'],
  [/^[-+]?0[0-7_]+$/, 'an octal number in YAML 1.1'],
  [/^[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?$/, 'a base-60 number in YAML 1.1'],
  [/^[-+]?(0b[01_]*|0x[0-9a-fA-F_]*|[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?)$/, 'a number in YAML 1.1'],
  [/^[-+]?(\.?inf(inity)?|\.?nan)$/i, 'a float in Go'],
  [/^[-+]?0x[0-9a-f_.]*p/i, 'a hex float in Go'],
  [/^\d{4}-\d\d?-\d\d?([Tt ]|$)/, 'a timestamp'],
];
const yaml11Guard = new yaml.Type('tag:meshlane/yaml11-guard', {
  kind: 'scalar',
  resolve: (data: string) => YAML11_DIFFERS.some(([re]) => re.test(data)) && !/^[-+]?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$/.test(data) && !/^[-+]?0x[0-9a-fA-F]+$/.test(data),
  construct: (data: string) => {
    const why = YAML11_DIFFERS.find(([re]) => re.test(data))?.[1];
    throw new RenderError(`plain scalar ${JSON.stringify(data)} is ${why}, not what js-yaml reads: quote it`);
  },
});
// js-yaml 4 exports its types (@types/js-yaml does not say so).
const T = (yaml as unknown as { types: Record<'null' | 'bool' | 'int' | 'float' | 'merge', InstanceType<typeof yaml.Type>> }).types;
const VALUES_SCHEMA = yaml.FAILSAFE_SCHEMA.extend({ implicit: [yaml11Guard, T.null, T.bool, T.int, T.float, T.merge] });

/** Parses a values file as helm does (or refuses it). */
export function parseValues(text: string, file: string): Record<string, Value> {
  let v: unknown;
  try {
    v = yaml.load(text, { schema: VALUES_SCHEMA, filename: file });
  } catch (err) {
    throw new RenderError(`${file}: ${(err as Error).message}`);
  }
  if (v === undefined || v === null) return {};
  if (!isMap(v)) throw new RenderError(`${file}: not a map`);
  return v as Record<string, Value>;
}

export function loadValues(file = join(CHART_DIR, 'values.yaml')): Record<string, Value> {
  return parseValues(readFileSync(file, 'utf8'), file);
}

/** helm's coalescing of a values file over the chart's: maps merge, null removes the key, anything else replaces. */
export function mergeValues(base: Record<string, Value>, over: Record<string, unknown>): Record<string, Value> {
  const out: Record<string, Value> = structuredClone(base);
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else if (isMap(v) && isMap(out[k])) out[k] = mergeValues(out[k] as Record<string, Value>, v);
    else out[k] = structuredClone(v) as Value;
  }
  return out;
}

type AjvClass = typeof AjvModule.default;
const Ajv = ((AjvModule as unknown as { default?: AjvClass }).default ?? AjvModule) as AjvClass;

/** values.schema.json's verdict on `values`: [] or one line per error, each naming the field. */
const validators = new Map<string, { text: string; validate: ReturnType<InstanceType<AjvClass>['compile']> }>();
export function schemaErrors(values: unknown, schemaFile = join(CHART_DIR, 'values.schema.json')): string[] {
  const text = readFileSync(schemaFile, 'utf8');
  let v = validators.get(schemaFile);
  if (v?.text !== text) {
    v = { text, validate: new Ajv({ allErrors: true, strict: true }).compile(JSON.parse(text) as object) };
    validators.set(schemaFile, v);
  }
  const validate = v.validate;
  if (validate(values)) return [];
  return (validate.errors ?? []).map((e) => {
    const field = e.instancePath.replace(/^\//, '').replaceAll('/', '.') || '(root)';
    const extra = e.keyword === 'additionalProperties' ? ` (${(e.params as { additionalProperty: string }).additionalProperty})` : e.keyword === 'enum' ? ` (${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')})` : '';
    return `${field}: ${e.message}${extra}`;
  });
}

// ---------------------------------------------------------------- lexer

type Tok =
  | { t: 'field'; path: string[]; line: number } // .a.b ; path [] is the dot
  | { t: 'var'; name: string; path: string[]; line: number } // $x.a ; name '' is $
  | { t: 'ident'; v: string; line: number }
  | { t: 'string'; v: string; line: number }
  | { t: 'int'; v: bigint; line: number }
  | { t: 'punct'; v: '(' | ')' | '|' | ',' | ':=' | '='; line: number };

interface Action {
  toks: Tok[];
  line: number;
  src: string;
}
type Item = { text: string } | { action: Action };

const SPACE = ' \t\r\n';
const isSpace = (c: string | undefined): boolean => c !== undefined && c !== '' && SPACE.includes(c);
const trimRight = (s: string): string => {
  let i = s.length;
  while (i > 0 && isSpace(s[i - 1])) i--;
  return s.slice(0, i);
};
const trimLeft = (s: string): string => {
  let i = 0;
  while (i < s.length && isSpace(s[i])) i++;
  return s.slice(i);
};

function lex(text: string, file: string): Item[] {
  const items: Item[] = [];
  let pos = 0;
  let line = 1;
  let trimNext = false;
  const lineAt = (p: number): number => line + (text.slice(pos, p).match(/\n/g)?.length ?? 0);
  const fail = (l: number, msg: string): never => {
    throw new RenderError(`${file}:${l}: ${msg}`);
  };
  while (pos <= text.length) {
    const open = text.indexOf('{{', pos);
    let lit = open < 0 ? text.slice(pos) : text.slice(pos, open);
    if (trimNext) lit = trimLeft(lit);
    if (open < 0) {
      items.push({ text: lit });
      break;
    }
    let p = open + 2;
    const leftTrim = text[p] === '-' && isSpace(text[p + 1]);
    if (leftTrim) {
      lit = trimRight(lit);
      p += 2;
    }
    items.push({ text: lit });
    const aLine = lineAt(open);
    // Comments: {{/* ... */}} with optional trim markers, nothing else inside the delimiters.
    if (text.startsWith('/*', p)) {
      const end = text.indexOf('*/', p + 2);
      if (end < 0) fail(aLine, 'unclosed comment');
      let q = end + 2;
      let rightTrim = false;
      if (isSpace(text[q]) && text.startsWith('-}}', q + 1)) {
        rightTrim = true;
        q += 1;
      }
      if (rightTrim) q += 1;
      if (!text.startsWith('}}', q)) fail(aLine, 'comment ends before closing delimiter');
      line = lineAt(q + 2);
      pos = q + 2;
      trimNext = rightTrim;
      continue;
    }
    const toks: Tok[] = [];
    let rightTrim = false;
    for (;;) {
      const c = text[p] ?? '';
      const l = lineAt(p);
      if (c === '') fail(aLine, 'unclosed action');
      if (isSpace(c)) {
        if (text.startsWith('-}}', p + 1)) {
          rightTrim = true;
          p += 4;
          break;
        }
        p++;
        continue;
      }
      if (text.startsWith('}}', p)) {
        p += 2;
        break;
      }
      if (c === '-' && text.startsWith('-}}', p)) fail(l, 'a trim marker needs a space before it: " -}}"');
      const idMatch = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(p));
      const pathAt = (q: number): [string[], number] => {
        const path: string[] = [];
        for (;;) {
          const m = /^\.([A-Za-z_][A-Za-z0-9_]*)/.exec(text.slice(q));
          if (!m) break;
          path.push(m[1] as string);
          q += m[0].length;
        }
        return [path, q];
      };
      if (c === '.') {
        if (/^\.[0-9]/.test(text.slice(p))) fail(l, 'number literal form not supported by render.ts');
        if (text[p - 1] === ')') fail(l, `(...)${text.slice(p).split(/[^A-Za-z0-9_.]/)[0]}: fields of a parenthesized result are not supported by render.ts`);
        const [path, q] = pathAt(p);
        if (path.length === 0) {
          if (text[p + 1] !== undefined && /[A-Za-z0-9_.]/.test(text[p + 1] as string)) fail(l, `bad field ${text.slice(p, p + 10)}`);
          toks.push({ t: 'field', path: [], line: l });
          p++;
        } else {
          toks.push({ t: 'field', path, line: l });
          p = q;
        }
      } else if (c === '$') {
        const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?/.exec(text.slice(p));
        const [path, q] = pathAt(p + (m?.[0].length ?? 1));
        toks.push({ t: 'var', name: m?.[1] ?? '', path, line: l });
        p = q;
      } else if (idMatch) {
        toks.push({ t: 'ident', v: idMatch[0], line: l });
        p += idMatch[0].length;
        if (text[p] === '.' && /[A-Za-z_]/.test(text[p + 1] ?? '')) fail(l, `${idMatch[0]}.${text.slice(p + 1).split(/[^A-Za-z0-9_]/)[0]}: fields of a function's result are not supported by render.ts`);
      } else if (c === '"') {
        let q = p + 1;
        let s = '';
        for (;;) {
          const d = text[q];
          if (d === undefined || d === '\n') fail(l, 'unterminated quoted string');
          if (d === '"') break;
          if (d === '\\') {
            const e = text[q + 1] ?? '';
            const map: Record<string, string> = { n: '\n', t: '\t', '"': '"', '\\': '\\' };
            if (!(e in map)) fail(l, `string escape \\${e} not supported by render.ts`);
            s += map[e];
            q += 2;
            continue;
          }
          s += d;
          q++;
        }
        toks.push({ t: 'string', v: s, line: l });
        p = q + 1;
      } else if (/[0-9]/.test(c) || (c === '-' && /[0-9]/.test(text[p + 1] ?? ''))) {
        const m = /^-?[0-9A-Za-z_.+]+/.exec(text.slice(p))?.[0] ?? '';
        const num = /^-?[0-9A-Za-z_.]+/.exec(m)?.[0] ?? m;
        if (!/^-?(0|[1-9][0-9]*)$/.test(num)) fail(l, `number ${num}: only decimal integers are supported by render.ts`);
        toks.push({ t: 'int', v: BigInt(num), line: l });
        p += num.length;
      } else if (text.startsWith(':=', p)) {
        toks.push({ t: 'punct', v: ':=', line: l });
        p += 2;
      } else if ('()|,='.includes(c)) {
        toks.push({ t: 'punct', v: c as '(' | ')' | '|' | ',' | '=', line: l });
        p++;
      } else {
        fail(l, `${JSON.stringify(c)} in an action is not supported by render.ts`);
      }
    }
    items.push({ action: { toks, line: aLine, src: text.slice(open, p) } });
    line = lineAt(p);
    pos = p;
    trimNext = rightTrim;
  }
  return items;
}

// ---------------------------------------------------------------- parser

type Node =
  | { k: 'field'; path: string[]; line: number }
  | { k: 'var'; name: string; path: string[]; line: number }
  | { k: 'lit'; v: Value; line: number }
  | { k: 'fn'; name: string; line: number }
  | { k: 'pipe'; pipe: Pipe; line: number };
interface Cmd {
  args: Node[];
  line: number;
}
interface Pipe {
  decl: string[];
  assign: boolean; // = rather than :=
  cmds: Cmd[];
  line: number;
}
type Stmt =
  | { k: 'text'; v: string }
  | { k: 'action'; pipe: Pipe; line: number }
  | { k: 'if'; pipe: Pipe; body: Stmt[]; orelse: Stmt[]; line: number }
  | { k: 'range'; pipe: Pipe; body: Stmt[]; orelse: Stmt[]; line: number };

/** The functions render.ts implements (exactly), and those it refuses to evaluate. */
const BUILTINS = new Set(['and', 'or', 'not', 'eq', 'ne', 'index', 'len', 'printf']);
const IMPLEMENTED = new Set([...BUILTINS, 'quote', 'toYaml', 'toJson', 'indent', 'nindent', 'int', 'until', 'dict', 'list', 'hasKey', 'b64enc', 'include', 'fail']);
export const HELM_ONLY = new Set(['lookup', 'genCA', 'genSignedCert', 'buildCustomCert', 'genPrivateKey', 'randAlphaNum', 'now', 'uuidv4']);

class Parser {
  private i = 0;
  private items: Item[];
  private scopes: Set<string>[] = [new Set([''])];
  constructor(
    items: Item[],
    private file: string,
    private defines: Map<string, { body: Stmt[]; where: string }>,
    private isPartial: boolean,
  ) {
    this.items = items;
  }

  fail(line: number, msg: string): never {
    throw new RenderError(`${this.file}:${line}: ${msg}`);
  }

  /** Statements until one of `stops` (returned, not consumed) or the end. */
  list(stops: string[], top = false): { body: Stmt[]; stop?: Action } {
    const body: Stmt[] = [];
    while (this.i < this.items.length) {
      const it = this.items[this.i] as Item;
      if ('text' in it) {
        if (it.text) body.push({ k: 'text', v: it.text });
        this.i++;
        continue;
      }
      const a = it.action;
      const kw = a.toks[0]?.t === 'ident' ? (a.toks[0] as { v: string }).v : '';
      if (stops.includes(kw)) return { body, stop: a };
      this.i++;
      if (a.toks.length === 0) this.fail(a.line, 'missing value for command');
      switch (kw) {
        case 'if':
        case 'range':
          body.push(this.control(kw, a));
          break;
        case 'define': {
          if (!top || !this.isPartial) this.fail(a.line, 'define outside a _*.tpl file, or nested: not supported by render.ts');
          const name = a.toks[1];
          if (a.toks.length !== 2 || name?.t !== 'string') this.fail(a.line, `unsupported ${a.src}`);
          const saved = this.scopes;
          this.scopes = [new Set([''])];
          const inner = this.list(['end']);
          this.scopes = saved;
          if (!inner.stop || inner.stop.toks.length !== 1) this.fail(a.line, 'define without end');
          this.i++;
          if (this.defines.has(name.v)) this.fail(a.line, `template ${JSON.stringify(name.v)} defined twice (also at ${this.defines.get(name.v)?.where})`);
          this.defines.set(name.v, { body: inner.body, where: `${this.file}:${a.line}` });
          break;
        }
        case 'else':
        case 'end':
          this.fail(a.line, `unexpected ${a.src}`);
          break;
        case 'with':
        case 'template':
        case 'block':
        case 'break':
        case 'continue':
          this.fail(a.line, `${kw}: not supported by render.ts`);
          break;
        default:
          body.push({ k: 'action', pipe: this.pipe(a.toks, a, false), line: a.line });
      }
    }
    return { body };
  }

  /** if/range, with its else (and else if) branches, through its end. */
  private control(kw: 'if' | 'range', a: Action): Stmt {
    this.scopes.push(new Set());
    const pipe = this.pipe(a.toks.slice(1), a, kw === 'range');
    const inner = this.list(['else', 'end']);
    let orelse: Stmt[] = [];
    const stop = inner.stop ?? this.fail(a.line, `${kw} without end`);
    this.i++;
    if ((stop.toks[0] as { v: string }).v === 'else') {
      if (stop.toks.length > 1) {
        // {{ else if X }}...{{ end }} is {{ else }}{{ if X }}...{{ end }}{{ end }} with one end.
        if (kw !== 'if' || (stop.toks[1] as { v?: string }).v !== 'if') this.fail(stop.line, `unsupported ${stop.src}`);
        orelse = [this.control('if', { toks: stop.toks.slice(1), line: stop.line, src: stop.src })];
        this.scopes.pop();
        return { k: kw, pipe, body: inner.body, orelse, line: a.line };
      }
      const rest = this.list(['end', 'else']);
      const end = rest.stop ?? this.fail(a.line, `${kw} without end`);
      if ((end.toks[0] as { v: string }).v === 'else') this.fail(end.line, `unexpected ${end.src}`);
      if (end.toks.length !== 1) this.fail(end.line, `unexpected ${end.src}`);
      this.i++;
      orelse = rest.body;
    } else if (stop.toks.length !== 1) this.fail(stop.line, `unexpected ${stop.src}`);
    this.scopes.pop();
    return { k: kw, pipe, body: inner.body, orelse, line: a.line };
  }

  private declared(name: string): boolean {
    return this.scopes.some((s) => s.has(name));
  }

  pipe(toks: Tok[], a: Action, inRange: boolean): Pipe {
    let decl: string[] = [];
    let assign = false;
    // $x := ... | $x = ... | $i, $v := ... (range only)
    const t0 = toks[0];
    const isDecl = (ts: Tok[], at: number): boolean => ts[at]?.t === 'punct' && ((ts[at] as { v: string }).v === ':=' || (ts[at] as { v: string }).v === '=');
    if (t0?.t === 'var' && t0.path.length === 0 && t0.name !== '') {
      if (isDecl(toks, 1)) {
        decl = [t0.name];
        assign = (toks[1] as { v: string }).v === '=';
        toks = toks.slice(2);
      } else if (inRange && toks[1]?.t === 'punct' && (toks[1] as { v: string }).v === ',' && toks[2]?.t === 'var' && isDecl(toks, 3)) {
        decl = [t0.name, (toks[2] as { name: string }).name];
        if ((toks[3] as { v: string }).v === '=') this.fail(a.line, `unsupported ${a.src}`);
        toks = toks.slice(4);
      }
    }
    if (assign) {
      if (!this.declared(decl[0] as string)) this.fail(a.line, `undefined variable $${decl[0]}`);
    }
    const cmds: Cmd[] = [];
    let cur: Node[] = [];
    let k = 0;
    const operand = (): Node => {
      const t = toks[k++] as Tok;
      switch (t.t) {
        case 'field':
          return { k: 'field', path: t.path, line: t.line };
        case 'var':
          if (!this.declared(t.name)) this.fail(t.line, `undefined variable $${t.name}`);
          return { k: 'var', name: t.name, path: t.path, line: t.line };
        case 'string':
          return { k: 'lit', v: t.v, line: t.line };
        case 'int':
          return { k: 'lit', v: t.v, line: t.line };
        case 'ident':
          if (t.v === 'nil') return { k: 'lit', v: null, line: t.line };
          if (t.v === 'true' || t.v === 'false') return { k: 'lit', v: t.v === 'true', line: t.line };
          if (IMPLEMENTED.has(t.v) || HELM_ONLY.has(t.v)) return { k: 'fn', name: t.v, line: t.line };
          if (['if', 'else', 'end', 'range', 'with', 'define', 'template', 'block', 'break', 'continue'].includes(t.v)) this.fail(t.line, `unexpected ${t.v} in ${a.src}`);
          return this.fail(t.line, `function ${t.v}: not implemented by render.ts (${a.src})`);
        case 'punct': {
          if (t.v !== '(') this.fail(t.line, `unexpected ${t.v} in ${a.src}`);
          let depth = 1;
          const start = k;
          while (k < toks.length && depth > 0) {
            const u = toks[k++] as Tok;
            if (u.t === 'punct' && u.v === '(') depth++;
            if (u.t === 'punct' && u.v === ')') depth--;
          }
          if (depth !== 0) this.fail(t.line, `unclosed ( in ${a.src}`);
          const inner = toks.slice(start, k - 1);
          if (inner.length === 0) this.fail(t.line, `missing value for command in ${a.src}`);
          return { k: 'pipe', pipe: this.pipe(inner, a, false), line: t.line };
        }
      }
    };
    while (k < toks.length) {
      const t = toks[k] as Tok;
      if (t.t === 'punct' && t.v === '|') {
        if (cur.length === 0) this.fail(t.line, `missing command before | in ${a.src}`);
        cmds.push({ args: cur, line: cur[0]?.line ?? t.line });
        cur = [];
        k++;
        continue;
      }
      cur.push(operand());
    }
    if (cur.length === 0) this.fail(a.line, `missing value for command in ${a.src}`);
    cmds.push({ args: cur, line: cur[0]?.line ?? a.line });
    for (const [ci, c] of cmds.entries()) {
      const head = c.args[0] as Node;
      if (head.k !== 'fn' && c.args.length > 1) this.fail(c.line, `can't give argument to non-function in ${a.src}`);
      if (head.k === 'lit' && head.v === null) this.fail(c.line, `nil is not a command in ${a.src}`);
      if (ci > 0 && head.k !== 'fn') this.fail(c.line, `non-function in a pipeline stage in ${a.src}`);
      for (const arg of c.args.slice(1)) if (arg.k === 'fn') this.fail(arg.line, `function ${arg.name} as an argument (without parentheses) is not supported by render.ts`);
    }
    if (!assign) for (const d of decl) (this.scopes.at(-1) as Set<string>).add(d);
    return { decl, assign, cmds, line: a.line };
  }
}

export interface Template {
  file: string;
  body: Stmt[];
}

/** Parses one template file (Go parses every template before executing any). */
export function parseTemplate(text: string, file: string, defines = new Map<string, { body: Stmt[]; where: string }>()): Template {
  const isPartial = /(^|\/)_[^/]*$/.test(file);
  const p = new Parser(lex(text, file), file, defines, isPartial);
  const { body, stop } = p.list([], true);
  if (stop) p.fail(stop.line, `unexpected ${stop.src}`);
  if (isPartial && body.some((s) => s.k !== 'text' || s.v.trim() !== '')) {
    const s = body.find((x) => x.k !== 'text' || x.v.trim() !== '') as Stmt;
    p.fail('line' in s ? s.line : 1, 'a _*.tpl file holds defines only here');
  }
  return { file, body };
}

// ---------------------------------------------------------------- evaluation

interface Ctx {
  file: string;
  defines: Map<string, { body: Stmt[]; where: string }>;
  helmOnly: Record<string, HelmOnly>;
  depth: number;
}
type Scope = Map<string, Value>[];

const kind = (v: Value | undefined): string =>
  v === undefined ? 'nothing' : v === null ? 'nil' : typeof v === 'number' ? 'float64' : typeof v === 'bigint' ? 'int' : typeof v === 'string' ? 'string' : typeof v === 'boolean' ? 'bool' : Array.isArray(v) ? 'list' : v instanceof GoStruct ? v.type : 'map';

/** Go's truth (text/template's `if`, `and`, `or`, `not`). */
export function truth(v: Value): boolean {
  if (v === null || v === false || v === 0 || v === 0n || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (v instanceof GoStruct) return true;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

/**
 * fmt's %v of a float64 (what helm prints for a number from a values file):
 * strconv.FormatFloat(f, 'g', -1, 64), the shortest digits that round-trip,
 * in exponent form when the exponent is < -4 or >= 6 (`if shortest { eprec = 6 }`):
 * 123456 prints as 123456, 1048576 as 1.048576e+06, 1000000 as 1e+06.
 */
export function goFloat(f: number): string {
  if (Number.isNaN(f)) return 'NaN';
  if (f === Infinity) return '+Inf';
  if (f === -Infinity) return '-Inf';
  if (f === 0) return Object.is(f, -0) ? '-0' : '0';
  // JavaScript's toExponential() without digits is the shortest round-trip form too.
  const [mant, expS] = f.toExponential().split('e') as [string, string];
  const exp = Number(expS);
  const neg = mant.startsWith('-');
  const digits = mant.replace('-', '').replace('.', '');
  let s: string;
  if (exp < -4 || exp >= 6) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    s = `${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  } else if (exp < 0) {
    s = `0.${'0'.repeat(-exp - 1)}${digits}`;
  } else {
    s = digits.length > exp + 1 ? `${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}` : digits + '0'.repeat(exp + 1 - digits.length);
  }
  return neg ? `-${s}` : s;
}

/** fmt's %v, where render.ts is sure of it. */
function sprint(v: Value, where: string): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return goFloat(v);
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (v === null) throw new RenderError(`${where}: prints a nil value (helm prints nothing there): refused`);
  throw new RenderError(`${where}: prints a ${kind(v)} (Go's ${Array.isArray(v) ? '[a b]' : 'map[k:v]'} form): refused, use toYaml or toJson`);
}

/** strconv.Quote, for the strings where it equals JSON's quoting (printable ASCII, \n, \t, \r). */
function goQuote(s: string, where: string): string {
  if (!/^[\x20-\x7e\n\t\r]*$/.test(s)) throw new RenderError(`${where}: quote of a string with non-ASCII or control characters: refused (Go's escapes differ)`);
  return JSON.stringify(s);
}

/** yaml.v2's map key order (sorter.go), for keys without digits. */
function yamlKeyLess(a: string, b: string): boolean {
  const letter = (c: string): boolean => /\p{L}/u.test(c);
  const ar = [...a];
  const br = [...b];
  for (let i = 0; i < ar.length && i < br.length; i++) {
    const x = ar[i] as string;
    const y = br[i] as string;
    if (x === y) continue;
    const al = letter(x);
    const bl = letter(y);
    if (al && bl) return (x.codePointAt(0) as number) < (y.codePointAt(0) as number);
    if (al || bl) return bl;
    return (x.codePointAt(0) as number) < (y.codePointAt(0) as number);
  }
  return ar.length < br.length;
}

const PLAIN_SAFE = /^[A-Za-z][A-Za-z0-9._/-]*$|^[0-9]+(\.[0-9]+)?[A-Za-z]+$/;
const YAML11_WORDS = /^(y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF|null|Null|NULL)$/;

/** helm's toYaml (json.Marshal, then yaml.v2): the forms whose output render.ts is certain of. */
function toYaml(v: Value, where: string): string {
  const scalar = (x: Value): string => {
    if (x === null) return 'null';
    if (typeof x === 'boolean') return x ? 'true' : 'false';
    if (typeof x === 'bigint') return x.toString();
    if (typeof x === 'number') {
      if (!Number.isSafeInteger(x) || Object.is(x, -0)) throw new RenderError(`${where}: toYaml of the number ${x}: refused (only integers)`);
      return String(x);
    }
    if (typeof x === 'string') {
      // yaml.v2 double-quotes a string that would read as another type: the empty string (null) ...
      // ... and what would read as a number or a YAML 1.1 boolean or null.
      if (x === '' || YAML11_WORDS.test(x) || /^[0-9]+(\.[0-9]+)?$/.test(x)) return `"${x}"`;
      if (!PLAIN_SAFE.test(x) || /^[0-9]+[eE][0-9]*$/.test(x)) throw new RenderError(`${where}: toYaml of the string ${JSON.stringify(x)}: refused (yaml.v2 may quote or fold it)`);
      return x;
    }
    throw new RenderError(`${where}: toYaml of a ${kind(x)}: refused`);
  };
  const block = (x: Value, ind: string): string[] => {
    if (Array.isArray(x)) {
      if (x.length === 0) return ['[]'];
      const lines: string[] = [];
      for (const e of x) {
        if (Array.isArray(e)) throw new RenderError(`${where}: toYaml of a list in a list: refused`);
        if (isMap(e) && Object.keys(e).length > 0) {
          const inner = block(e, ind + '  ');
          lines.push(`${ind}- ${(inner[0] as string).slice(ind.length + 2)}`, ...inner.slice(1));
        } else lines.push(`${ind}- ${isMap(e) ? '{}' : scalar(e)}`);
      }
      return lines;
    }
    if (isMap(x)) {
      const keys = Object.keys(x);
      if (keys.length === 0) return ['{}'];
      for (const k of keys) if (!/^[A-Za-z][A-Za-z._/-]*$/.test(k) || YAML11_WORDS.test(k)) throw new RenderError(`${where}: toYaml of a map with key ${JSON.stringify(k)}: refused (keys: letters . _ / - only)`);
      keys.sort((a, b) => (yamlKeyLess(a, b) ? -1 : yamlKeyLess(b, a) ? 1 : 0));
      const lines: string[] = [];
      for (const k of keys) {
        const e = x[k] as Value;
        if (Array.isArray(e) && e.length > 0) lines.push(`${ind}${k}:`, ...block(e, ind));
        else if (isMap(e) && Object.keys(e).length > 0) lines.push(`${ind}${k}:`, ...block(e, ind + '  '));
        else lines.push(`${ind}${k}: ${Array.isArray(e) ? '[]' : isMap(e) ? '{}' : scalar(e)}`);
      }
      return lines;
    }
    return [ind + scalar(x)];
  };
  return block(v, '').join('\n');
}

/** helm's toJson (json.Marshal): sorted keys, Go's escapes of < > &; refuses what Go encodes differently from this. */
function toJson(v: Value, where: string): string {
  const str = (s: string): string => {
    if (/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\uffff]/.test(s)) throw new RenderError(`${where}: toJson of a string with control or non-ASCII characters: refused`);
    return JSON.stringify(s).replaceAll('<', '\\u003c').replaceAll('>', '\\u003e').replaceAll('&', '\\u0026');
  };
  const enc = (x: Value): string => {
    if (x === null) return 'null';
    if (typeof x === 'boolean') return String(x);
    if (typeof x === 'bigint') return x.toString();
    if (typeof x === 'number') {
      if (!Number.isSafeInteger(x) || Object.is(x, -0)) throw new RenderError(`${where}: toJson of the number ${x}: refused (only integers)`);
      return String(x);
    }
    if (typeof x === 'string') return str(x);
    if (Array.isArray(x)) return `[${x.map(enc).join(',')}]`;
    if (x instanceof GoStruct) throw new RenderError(`${where}: toJson of a ${x.type}: refused`);
    const keys = Object.keys(x).sort((a, b) => (Buffer.compare(Buffer.from(a), Buffer.from(b))));
    return `{${keys.map((k) => `${str(k)}:${enc(x[k] as Value)}`).join(',')}}`;
  };
  return enc(v);
}

function field(v: Value, path: string[], what: string, where: string): Value {
  let cur = v;
  let name = what;
  for (const k of path) {
    name += `.${k}`;
    if (cur instanceof GoStruct) {
      if (!(k in cur.fields)) throw new RenderError(`${where}: ${name}: ${cur.type} has no field ${k} in render.ts`);
      cur = cur.fields[k] as Value;
    } else if (isMap(cur)) {
      if (!(k in cur)) throw new RenderError(`${where}: no value at ${name} (helm would render nothing): refused`);
      cur = cur[k] as Value;
    } else throw new RenderError(`${where}: ${name}: field of a ${kind(cur)}`);
  }
  return cur;
}

function lookupVar(scope: Scope, name: string, where: string): Value {
  for (let i = scope.length - 1; i >= 0; i--) {
    const s = scope[i] as Map<string, Value>;
    if (s.has(name)) return s.get(name) as Value;
  }
  throw new RenderError(`${where}: undefined variable $${name}`);
}

const needInt = (v: Value, fn: string, where: string): bigint => {
  if (typeof v !== 'bigint') throw new RenderError(`${where}: ${fn}: wrong type for value; expected int; got ${kind(v)}`);
  return v;
};
const needString = (v: Value, fn: string, where: string): string => {
  if (typeof v !== 'string') throw new RenderError(`${where}: ${fn}: wrong type for value; expected string; got ${kind(v)}`);
  return v;
};

function goEq(a: Value, b: Value, where: string): boolean {
  const ka = kind(a);
  const kb = kind(b);
  if (!['string', 'int', 'float64', 'bool'].includes(ka) || !['string', 'int', 'float64', 'bool'].includes(kb)) throw new RenderError(`${where}: eq/ne of ${ka} and ${kb}: refused`);
  if (ka !== kb) throw new RenderError(`${where}: incompatible types for comparison (${ka}, ${kb}): helm fails here`);
  return a === b;
}

function printf(format: string, args: Value[], where: string): string {
  let i = 0;
  const out = format.replace(/%(.?)/g, (_m, verb: string) => {
    if (verb === '%') return '%';
    if (i >= args.length) throw new RenderError(`${where}: printf: missing argument for %${verb}`);
    const a = args[i++] as Value;
    if (verb === 's' && typeof a === 'string') return a;
    if (verb === 'd' && typeof a === 'bigint') return a.toString();
    if (verb === 'v' && ['string', 'int', 'float64', 'bool'].includes(kind(a))) return sprint(a, where);
    throw new RenderError(`${where}: printf %${verb} of a ${kind(a)}: refused`);
  });
  if (i !== args.length) throw new RenderError(`${where}: printf: ${args.length - i} extra argument(s) (Go prints %!(EXTRA ...))`);
  return out;
}

function evalPipe(p: Pipe, dot: Value, scope: Scope, ctx: Ctx): Value {
  let cur: Value | undefined;
  for (const c of p.cmds) cur = evalCmd(c, dot, scope, ctx, cur);
  const v = cur as Value;
  if (p.decl.length === 1 && !p.assign) (scope.at(-1) as Map<string, Value>).set(p.decl[0] as string, v);
  if (p.assign) {
    const name = p.decl[0] as string;
    for (let i = scope.length - 1; i >= 0; i--) {
      const s = scope[i] as Map<string, Value>;
      if (s.has(name)) {
        s.set(name, v);
        break;
      }
    }
  }
  return v;
}

function evalArg(n: Node, dot: Value, scope: Scope, ctx: Ctx): Value {
  const where = `${ctx.file}:${n.line}`;
  switch (n.k) {
    case 'field':
      return field(dot, n.path, '', where);
    case 'var':
      return field(lookupVar(scope, n.name, where), n.path, `$${n.name}`, where);
    case 'lit':
      return n.v;
    case 'pipe':
      return evalPipe(n.pipe, dot, scope, ctx);
    case 'fn':
      return callFn(n.name, [], [], dot, scope, ctx, where);
  }
}

function evalCmd(c: Cmd, dot: Value, scope: Scope, ctx: Ctx, piped: Value | undefined): Value {
  const head = c.args[0] as Node;
  const where = `${ctx.file}:${c.line}`;
  if (head.k !== 'fn') {
    if (piped !== undefined) throw new RenderError(`${where}: non-function in a pipeline stage`);
    return evalArg(head, dot, scope, ctx);
  }
  return callFn(head.name, c.args.slice(1), piped === undefined ? [] : [piped], dot, scope, ctx, where);
}

function callFn(name: string, argNodes: Node[], tail: Value[], dot: Value, scope: Scope, ctx: Ctx, where: string): Value {
  // and/or evaluate their arguments lazily (Go >= 1.18), returning the deciding one.
  if (name === 'and' || name === 'or') {
    const thunks: Array<() => Value> = [...argNodes.map((n) => () => evalArg(n, dot, scope, ctx)), ...tail.map((v) => () => v)];
    if (thunks.length < 1) throw new RenderError(`${where}: ${name}: wrong number of args`);
    let v: Value = null;
    for (const t of thunks) {
      v = t();
      if (name === 'and' ? !truth(v) : truth(v)) return v;
    }
    return v;
  }
  const args = [...argNodes.map((n) => evalArg(n, dot, scope, ctx)), ...tail];
  const arity = (n: number | [number, number]): void => {
    const [lo, hi] = typeof n === 'number' ? [n, n] : n;
    if (args.length < lo || args.length > hi) throw new RenderError(`${where}: ${name}: wrong number of args: want ${lo === hi ? lo : `${lo}..${hi}`}, got ${args.length}`);
  };
  const a0 = args[0] as Value;
  const a1 = args[1] as Value;
  switch (name) {
    case 'not':
      arity(1);
      return !truth(a0);
    case 'eq':
      if (args.length < 2) arity([2, Infinity]);
      return args.slice(1).some((b) => goEq(a0, b, where));
    case 'ne':
      arity(2);
      return !goEq(a0, a1, where);
    case 'len':
      arity(1);
      if (typeof a0 === 'string') {
        if (!/^[\x00-\x7f]*$/.test(a0)) throw new RenderError(`${where}: len of a non-ASCII string: refused`);
        return BigInt(a0.length);
      }
      if (Array.isArray(a0)) return BigInt(a0.length);
      if (isMap(a0)) return BigInt(Object.keys(a0).length);
      throw new RenderError(`${where}: len of ${kind(a0)}`);
    case 'index': {
      if (args.length < 2) arity([2, Infinity]);
      let v = a0;
      for (const k of args.slice(1)) {
        if (isMap(v) && typeof k === 'string') {
          if (!(k in v)) throw new RenderError(`${where}: index: no key ${JSON.stringify(k)} (helm returns nil): refused`);
          v = v[k] as Value;
        } else if (Array.isArray(v) && typeof k === 'bigint') {
          if (k < 0n || k >= BigInt(v.length)) throw new RenderError(`${where}: index out of range: ${k}`);
          v = v[Number(k)] as Value;
        } else throw new RenderError(`${where}: index of ${kind(v)} with ${kind(k)}: refused`);
      }
      return v;
    }
    case 'printf':
      if (args.length < 1) arity([1, Infinity]);
      return printf(needString(a0, name, where), args.slice(1), where);
    case 'quote':
      return args
        .filter((x) => x !== null)
        .map((x) => goQuote(sprint(x, where), where))
        .join(' ');
    case 'toYaml':
      arity(1);
      return toYaml(a0, where);
    case 'toJson':
      arity(1);
      return toJson(a0, where);
    case 'indent':
    case 'nindent': {
      arity(2);
      const n = Number(needInt(a0, name, where));
      const s = needString(a1, name, where);
      const pad = ' '.repeat(n);
      return (name === 'nindent' ? '\n' : '') + pad + s.replaceAll('\n', `\n${pad}`);
    }
    case 'int':
      arity(1);
      if (typeof a0 === 'bigint') return a0;
      if (typeof a0 === 'number' && Number.isSafeInteger(Math.trunc(a0))) return BigInt(Math.trunc(a0));
      throw new RenderError(`${where}: int of a ${kind(a0)}: refused`);
    case 'until': {
      arity(1);
      const n = needInt(a0, name, where);
      if (n < 0n || n > 10000n) throw new RenderError(`${where}: until ${n}: refused`);
      return Array.from({ length: Number(n) }, (_, i) => BigInt(i));
    }
    case 'list':
      return args;
    case 'dict': {
      if (args.length % 2 !== 0) throw new RenderError(`${where}: dict with an odd number of arguments: refused`);
      const out: Record<string, Value> = {};
      for (let i = 0; i < args.length; i += 2) out[needString(args[i] as Value, 'dict key', where)] = args[i + 1] as Value;
      return out;
    }
    case 'hasKey':
      arity(2);
      if (a0 !== null && !isMap(a0)) throw new RenderError(`${where}: hasKey of a ${kind(a0)}: wrong type for value; expected map[string]interface {}`);
      return a0 !== null && needString(a1, name, where) in a0;
    case 'b64enc':
      arity(1);
      return Buffer.from(needString(a0, name, where), 'utf8').toString('base64');
    case 'fail':
      arity(1);
      throw new RenderError(`${where}: fail: ${needString(a0, name, where)}`);
    case 'include': {
      arity(2);
      const tname = needString(a0, name, where);
      const def = ctx.defines.get(tname);
      if (!def) throw new RenderError(`${where}: include: no template ${JSON.stringify(tname)}`);
      if (ctx.depth > 100) throw new RenderError(`${where}: include nested too deep`);
      return execBody(def.body, a1, [new Map([['', a1]])], { ...ctx, file: def.where.replace(/:\d+$/, ''), depth: ctx.depth + 1 });
    }
    default: {
      const stand = ctx.helmOnly[name];
      if (HELM_ONLY.has(name) && stand) return stand(...args);
      throw new RenderError(`${where}: ${name}: its output is random or comes from the cluster; render.ts refuses it (helm evaluates it at install)`);
    }
  }
}

function execBody(body: Stmt[], dot: Value, scope: Scope, ctx: Ctx): string {
  let out = '';
  for (const s of body) {
    switch (s.k) {
      case 'text':
        out += s.v;
        break;
      case 'action': {
        const v = evalPipe(s.pipe, dot, scope, ctx);
        if (s.pipe.decl.length === 0) out += sprint(v, `${ctx.file}:${s.line}`);
        break;
      }
      case 'if': {
        const inner: Scope = [...scope, new Map()];
        const v = evalPipe(s.pipe, dot, inner, ctx);
        out += execBody(truth(v) ? s.body : s.orelse, dot, inner, ctx);
        break;
      }
      case 'range': {
        const inner: Scope = [...scope, new Map()];
        const saved = s.pipe.decl;
        const v = evalPipe({ ...s.pipe, decl: [] }, dot, inner, ctx);
        const where = `${ctx.file}:${s.line}`;
        let entries: Array<[Value, Value]>;
        if (Array.isArray(v)) entries = v.map((e, i) => [BigInt(i), e]);
        else if (isMap(v)) entries = Object.keys(v).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))).map((k) => [k, v[k] as Value]);
        else if (v === null) entries = [];
        else throw new RenderError(`${where}: range over a ${kind(v)}: refused`);
        if (entries.length === 0) {
          out += execBody(s.orelse, dot, inner, ctx);
          break;
        }
        for (const [k, e] of entries) {
          const iter: Scope = [...inner, new Map()];
          const top = inner.at(-1) as Map<string, Value>;
          if (saved.length === 1) top.set(saved[0] as string, e);
          if (saved.length === 2) {
            top.set(saved[0] as string, k);
            top.set(saved[1] as string, e);
          }
          out += execBody(s.body, e, iter, ctx);
        }
        break;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------- the chart

export interface Chart {
  Name: string;
  Version: string;
  AppVersion: string;
}

export function loadChart(dir = CHART_DIR): Chart {
  const c = yaml.load(readFileSync(join(dir, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
  for (const k of ['name', 'version', 'appVersion']) if (typeof c[k] !== 'string') throw new RenderError(`Chart.yaml: ${k} must be a string`);
  return { Name: c.name as string, Version: c.version as string, AppVersion: c.appVersion as string };
}

/** Renders template text against values (with an optional set of defines), for the tests of the renderer. */
export function renderTemplate(text: string, values: Record<string, Value>, release: Release, name = 'template', opts: { helmOnly?: Record<string, HelmOnly>; partials?: Record<string, string>; chart?: Chart } = {}): string {
  const defines = new Map<string, { body: Stmt[]; where: string }>();
  for (const [f, t] of Object.entries(opts.partials ?? {})) parseTemplate(t, f, defines);
  const tpl = parseTemplate(text, name, defines);
  return run(tpl, values, release, opts.chart ?? { Name: 'meshlane', Version: '0.0.0', AppVersion: '0.0.0' }, defines, opts.helmOnly ?? {});
}

function run(tpl: Template, values: Record<string, Value>, release: Release, chart: Chart, defines: Map<string, { body: Stmt[]; where: string }>, helmOnly: Record<string, HelmOnly>): string {
  const root = new GoStruct('root', {
    Values: values,
    Release: new GoStruct('Release', { Name: release.Name, Namespace: release.Namespace, Service: release.Service ?? 'Helm' }),
    Chart: new GoStruct('Chart', { Name: chart.Name, Version: chart.Version, AppVersion: chart.AppVersion }),
  });
  const out = execBody(tpl.body, root, [new Map([['', root]])], { file: tpl.file, defines, helmOnly, depth: 0 });
  if (out.includes('<no value>')) throw new RenderError(`${tpl.file}: the output contains "<no value>", which helm deletes: refused`);
  return out;
}

export const DEFAULT_RELEASE: Release = { Name: 'meshlane', Namespace: 'istio-system' };

/** The values helm would use: values.yaml, then `opts.values` over it, checked against values.schema.json. */
export function chartValues(opts: RenderOptions = {}): Record<string, Value> {
  const values = mergeValues(loadValues(), opts.values ?? {});
  if (!opts.noSchema) {
    const errs = schemaErrors(values);
    if (errs.length) throw new RenderError(`values don't meet the schema (values.schema.json):\n  ${errs.join('\n  ')}`);
  }
  return values;
}

/**
 * Every template rendered: output file name -> text (templates/*.yaml, and
 * NOTES.txt), as helm renders them with these values. Templates that render
 * to whitespace only are left out (helm skips them too).
 */
export function renderChart(opts: RenderOptions = {}): Map<string, string> {
  const release = opts.release ?? DEFAULT_RELEASE;
  const values = chartValues(opts);
  const chart = loadChart();
  const dir = join(CHART_DIR, 'templates');
  const defines = new Map<string, { body: Stmt[]; where: string }>();
  const files = readdirSync(dir).sort();
  for (const f of files) if (!/^_[^/]*\.tpl$|\.yaml$|^NOTES\.txt$/.test(f)) throw new RenderError(`templates/${f}: render.ts renders *.yaml, _*.tpl and NOTES.txt only`);
  // Go parses every file before executing any (a define may come from any of them).
  const parsed = files.map((f) => parseTemplate(readFileSync(join(dir, f), 'utf8'), `templates/${f}`, defines));
  const out = new Map<string, string>();
  for (const tpl of parsed) {
    const f = tpl.file.replace('templates/', '');
    if (f.startsWith('_')) continue;
    const text = run(tpl, values, release, chart, defines, opts.helmOnly ?? {});
    if (text.trim() === '') continue;
    out.set(f, text);
  }
  return out;
}

/** deploy/manifests/: the chart with MANIFEST_VALUES, NOTES.txt left out. */
export function renderManifests(release: Release = DEFAULT_RELEASE): Map<string, string> {
  const out = new Map<string, string>();
  for (const [f, text] of renderChart({ release, values: MANIFEST_VALUES })) {
    if (f === 'NOTES.txt') continue;
    out.set(f, `# Rendered by deploy/render.ts from deploy/helm/meshlane/templates/${f} (values.yaml with ${JSON.stringify(MANIFEST_VALUES)}). Do not edit.\n${text}`);
  }
  return out;
}

function main(): void {
  const args = process.argv.slice(2);
  const check = args.includes('--check');
  for (const a of args) if (a !== '--check') {
    process.stderr.write(`render.ts: unknown argument ${a}\nusage: node --import tsx deploy/render.ts [--check]\n`);
    process.exit(2);
  }
  let rendered: Map<string, string>;
  try {
    rendered = renderManifests();
  } catch (err) {
    process.stderr.write(`render.ts: ${(err as Error).message}\n`);
    process.exit(1);
  }
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
  for (const f of readdirSync(MANIFEST_DIR)) {
    if (!f.endsWith('.yaml') || rendered.has(f)) continue;
    if (check) {
      process.stderr.write(`deploy/manifests/${f} is not rendered from the chart any more: run node --import tsx deploy/render.ts\n`);
      stale++;
    } else {
      unlinkSync(join(MANIFEST_DIR, f));
      process.stdout.write(`removed deploy/manifests/${f}\n`);
    }
  }
  if (stale) process.exit(1);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
