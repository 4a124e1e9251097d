/**
 * deploy/render.ts against Go's own text/template: a reference renderer in
 * Go (helmref/main.go) with helm's engine options (missingkey=zero,
 * "<no value>" removed), helm's include/toYaml/toJson and sprig's quote,
 * indent, nindent, dict, list, hasKey, until, int, b64enc as helm v3.21 and
 * sprig v3.3.0 define them, values read as helm reads them through
 * sigs.k8s.io/yaml v1.6.0 (helmref/values.go: that behaviour over yaml.v2,
 * since Debian 12 does not package sigs.k8s.io/yaml). Both render the chart
 * with several sets of values; every output must be byte-identical.
 *
 * It needs Debian's golang-go and golang-gopkg-yaml.v2-dev (yaml.v2 2.4.0
 * sources in /usr/share/gocode/src), which scripts/lib/setup.sh
 * (ensure_helmref) installs; it builds offline in GOPATH mode, never through
 * the module proxy, and keeps the binary in build/helmref/<hash of the
 * sources and Go>/. With CI=true a missing Go or yaml.v2 fails the suite;
 * elsewhere it skips, saying what to install. MESHLANE_HELMREF_DEPS=DIR
 * takes yaml.v2's sources from DIR/yamlv2 instead.
 * Not a helm binary: the functions helm and sprig implement are copies of
 * their few lines; text/template, encoding/json and yaml.v2 are the real ones.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CHART_DIR, GoStruct, MANIFEST_VALUES, loadValues, parseValues, renderChart, renderTemplate, type HelmOnly, type Value } from '../../deploy/render.js';

const ROOT = resolve(import.meta.dirname, '../..');
const SRC = join(import.meta.dirname, 'helmref');
const GO_FILES = ['main.go', 'values.go'];
const CACHE = join(ROOT, 'build', 'helmref');
const DEPS = process.env.MESHLANE_HELMREF_DEPS;
const YAMLV2 = DEPS ? resolve(DEPS, 'yamlv2') : '/usr/share/gocode/src/gopkg.in/yaml.v2';
const IN_CI = process.env.CI === 'true' || process.env.CI === '1';
/** GOPATH mode: imports from GOPATH/src only, no go.mod, no module proxy, no network. */
const GO_ENV = { ...process.env, GO111MODULE: 'off', GOFLAGS: '', GOPROXY: 'off', GOTOOLCHAIN: 'local', GOCACHE: process.env.GOCACHE ?? join(CACHE, 'go-build') };

function goVersion(): string | undefined {
  try {
    return execFileSync('go', ['version'], { env: GO_ENV, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 }).trim();
  } catch {
    return undefined;
  }
}
const GO_VERSION = goVersion();
const MISSING = [
  ...(GO_VERSION === undefined ? ['golang-go (no `go` on PATH)'] : []),
  ...(existsSync(join(YAMLV2, 'yaml.go')) ? [] : [DEPS ? `yaml.v2 sources in ${YAMLV2} (MESHLANE_HELMREF_DEPS)` : `golang-gopkg-yaml.v2-dev (no ${YAMLV2}/yaml.go)`]),
];
const WHY = MISSING.length
  ? `the chart reference renderer needs ${MISSING.join(' and ')}: apt-get install --no-install-recommends golang-go golang-gopkg-yaml.v2-dev` +
    ` (bash scripts/test installs them: scripts/lib/setup.sh ensure_helmref)${DEPS ? ', or unset MESHLANE_HELMREF_DEPS' : ''}`
  : '';
/** Outside CI a machine without Go may skip, saying why; in CI the tests run and fail with WHY. */
const SKIP = MISSING.length > 0 && !IN_CI;

/** The stand-ins for what helm computes at install, the same on both sides. */
const STANDINS: Record<string, HelmOnly> = {
  lookup: () => ({}),
  genCA: (cn: Value, days: Value) => new GoStruct('certificate', { Cert: `CA ${cn} ${days}\n`, Key: 'CA KEY\n' }),
  genSignedCert: (cn: Value, ips: Value, alt: Value, days: Value, ca: Value) =>
    new GoStruct('certificate', { Cert: `CERT ${cn} ${ips === null} ${(alt as string[]).join(',')} ${days} by ${(ca as GoStruct).fields.Cert}`, Key: 'CERT KEY\n' }),
};

/** Values over values.yaml, as YAML (each side parses it its own way). */
const CASES: Record<string, string> = {
  defaults: '{}',
  manifests: JSON.stringify(MANIFEST_VALUES),
  small: [
    'nats:',
    '  replicas: 1',
    '  storage: { storageClassName: "", size: 2Gi }',
    '  nodeSelector: { disk: ssd, node-role.kubernetes.io/infra: "" }',
    'controlplane:',
    '  nodeSelector: { zone: a }',
    '  resources: { requests: { cpu: "1", memory: 1Gi, ephemeral-storage: 1Gi }, limits: { memory: 2Gi } }',
    'worker:',
    '  nodeSelector: { enabled: "true", flag: "yes", num: "12", f: "1.5", e: "" }',
  ].join('\n'),
  sameNamespace: [
    'worker:',
    '  namespace: istio-system',
    '  createNamespace: false',
    '  maxPods: 250',
    '  capabilities: [SYS_ADMIN, NET_ADMIN, SYS_RESOURCE]',
    '  uninstallHook: { enabled: true, timeoutSeconds: 600 }',
    'nats: { tls: { source: existing, secretName: my-tls, caConfigMap: my-ca } }',
  ].join('\n'),
  large: 'nats: { replicas: 5, maxPayload: 8388608, storage: { storageClassName: fast-ssd } }\ncontrolplane: { replicas: 3, metricsPort: 19465 }',
};


const tmp = mkdtempSync(join(tmpdir(), 'mlt-helmref-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** The reference binary, built once per source/Go/yaml.v2 hash into build/helmref/HASH/ref. */
let built: string | undefined;
function buildReference(): string {
  if (MISSING.length) throw new Error(WHY);
  if (built) return built;
  const h = createHash('sha256').update(`${GO_VERSION}\0${YAMLV2}\0`);
  for (const f of GO_FILES) h.update(`${f}\0`).update(readFileSync(join(SRC, f))).update('\0');
  for (const f of readdirSync(YAMLV2).filter((n) => n.endsWith('.go') && !n.endsWith('_test.go')).sort()) h.update(`${f}\0`).update(readFileSync(join(YAMLV2, f))).update('\0');
  const key = h.digest('hex').slice(0, 16);
  const bin = join(CACHE, key, 'ref');
  if (!existsSync(bin)) {
    mkdirSync(CACHE, { recursive: true });
    const work = mkdtempSync(join(CACHE, 'tmp-'));
    try {
      mkdirSync(join(work, 'src'));
      for (const f of GO_FILES) cpSync(join(SRC, f), join(work, 'src', f));
      mkdirSync(join(work, 'gopath', 'src', 'gopkg.in'), { recursive: true });
      symlinkSync(YAMLV2, join(work, 'gopath', 'src', 'gopkg.in', 'yaml.v2'));
      try {
        execFileSync('go', ['build', '-o', join(work, 'ref'), '.'], { cwd: join(work, 'src'), env: { ...GO_ENV, GOPATH: join(work, 'gopath') }, stdio: ['ignore', 'pipe', 'pipe'], timeout: 240_000 });
      } catch (err) {
        const e = err as { stderr?: Buffer; message: string };
        throw new Error(`go build of the chart reference renderer (${GO_VERSION}, yaml.v2 from ${YAMLV2}) failed: ${e.stderr?.toString() || e.message}`);
      }
      mkdirSync(join(CACHE, key), { recursive: true });
      renameSync(join(work, 'ref'), bin);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
    // Binaries of earlier sources are of no further use.
    for (const d of readdirSync(CACHE)) if (/^[0-9a-f]{16}$/.test(d) && d !== key) rmSync(join(CACHE, d), { recursive: true, force: true });
  }
  return (built = bin);
}

type RefOutput = Record<string, string | { error: string }>;

function runReference(chartDir: string, namespace: string, ...valueFiles: string[]): RefOutput {
  return JSON.parse(execFileSync(buildReference(), [chartDir, namespace, ...valueFiles], { encoding: 'utf8', timeout: 60_000 })) as RefOutput;
}

/** Where render.ts's chart differs from the reference's: [file, reference's output, render.ts's]. */
function differences(go: RefOutput, ts: Map<string, string>): [string, unknown, string | undefined][] {
  const out: [string, unknown, string | undefined][] = [];
  for (const [f, g] of Object.entries(go)) {
    // render.ts leaves out what renders to whitespace only, as helm does after rendering.
    if (typeof g !== 'string') out.push([f, g, ts.get(f)]);
    else if (g.trim() === '' ? ts.has(f) : ts.get(f) !== g) out.push([f, g, ts.get(f)]);
  }
  for (const [f, t] of ts) if (!(f in go)) out.push([f, undefined, t]);
  return out;
}

describe.skipIf(SKIP)(`render.ts against Go text/template with helm's functions${SKIP ? ` (skipped: ${WHY})` : ''}`, () => {
  it('renders the chart byte for byte as the reference does, for every set of values', { timeout: 300_000 }, () => {
    for (const [name, over] of Object.entries(CASES)) {
      const file = join(tmp, `${name}.yaml`);
      writeFileSync(file, over);
      const go = runReference(CHART_DIR, 'istio-system', join(CHART_DIR, 'values.yaml'), file);
      const ts = renderChart({ values: parseValues(over, file), helmOnly: STANDINS });
      expect(Object.keys(go).length, name).toBeGreaterThan(4);
      for (const [f, g, t] of differences(go, ts)) {
        if (typeof g === 'string' && g.trim() !== '') expect(t, `${name} ${f}`).toBe(g);
        else throw new Error(`${name} ${f}: the reference renders ${JSON.stringify(g) ?? 'no such file'}, render.ts ${JSON.stringify(t) ?? 'nothing'}`);
      }
    }
  });

  it('and the comparison fails where the two differ (planted mutations of the values and of a template)', { timeout: 300_000 }, () => {
    const file = join(tmp, 'mutation-base.yaml');
    const small = CASES.small ?? '';
    writeFileSync(file, small);
    const ts = renderChart({ values: parseValues(small, file), helmOnly: STANDINS });
    const base = runReference(CHART_DIR, 'istio-system', join(CHART_DIR, 'values.yaml'), file);
    expect(differences(base, ts)).toEqual([]);
    // The reference alone sees one more value: only the file that uses it differs.
    const planted = join(tmp, 'mutation-values.yaml');
    writeFileSync(planted, 'controlplane: { resources: { requests: { cpu: 1m } } }\n');
    const values = differences(runReference(CHART_DIR, 'istio-system', join(CHART_DIR, 'values.yaml'), file, planted), ts);
    expect(values.map(([f]) => f)).toEqual(['controlplane.yaml']);
    expect(values[0]?.[1]).toMatch(/cpu: 1m\n/);
    // The reference alone renders a chart whose controlplane.yaml has one more line.
    const chart = join(tmp, 'mutated-chart');
    cpSync(CHART_DIR, chart, { recursive: true });
    writeFileSync(join(chart, 'templates', 'controlplane.yaml'), `${readFileSync(join(CHART_DIR, 'templates', 'controlplane.yaml'), 'utf8')}# planted\n`);
    const template = differences(runReference(chart, 'istio-system', join(chart, 'values.yaml'), file), ts);
    expect(template.map(([f]) => f)).toEqual(['controlplane.yaml']);
    expect(template[0]?.[1]).toBe(`${ts.get('controlplane.yaml')}# planted\n`);
  });

  it('renders a chart of the constructs render.ts implements byte for byte as the reference does', { timeout: 300_000 }, () => {
    const chart = join(tmp, 'constructs');
    mkdirSync(join(chart, 'templates'), { recursive: true });
    writeFileSync(join(chart, 'Chart.yaml'), 'apiVersion: v2\nname: c\nversion: 1.2.3\nappVersion: "4.5"\n');
    const values = [
      'big: 1048576',
      'small: 3',
      'half: 0.5',
      'tiny: 0.00001',
      'str: "a b"',
      'empty: ""',
      'list: [a, b]',
      'nested: { z: { b: [x, { k: v, a: "1" }], a: [] }, a-b: "yes", a.c: "", A: {}, u_v: true, n-x: null, U_v: 0 }',
      'm: { b: "2", a: "1", B: "3" }',
    ].join('\n');
    writeFileSync(join(chart, 'values.yaml'), values);
    writeFileSync(join(chart, 'templates', '_h.tpl'), '{{- define "h" -}}\nname: {{ .n }}\nchart: {{ .root.Chart.Name }}-{{ .root.Chart.Version }} {{ .root.Chart.AppVersion | quote }}\n{{- end }}\n');
    writeFileSync(
      join(chart, 'templates', 't.yaml'),
      [
        'floats: {{ .Values.big }} {{ .Values.small }} {{ .Values.half }} {{ .Values.tiny }} {{ int .Values.big }} {{ .Values.big | quote }} {{ toJson .Values.big }}',
        'quote: {{ quote .Values.str .Values.empty }} {{ .Values.small | quote }} {{ quote true }}',
        'yaml:',
        '  {{- toYaml .Values.nested | nindent 2 }}',
        'json: {{ toJson .Values.nested }} {{ toJson .Values.list }}',
        'range: {{ range $i, $e := .Values.list }}{{ $i }}={{ $e }},{{ end }} {{ range $k, $v := .Values.m }}{{ $k }}{{ $v }}{{ end }} {{ range until 3 }}{{ . }}{{ end }} {{ range .Values.nested.z.a }}x{{ else }}none{{ end }}',
        '{{- $x := "a" }}{{ if true }}{{ $x = "b" }}{{ end }}',
        'vars: {{ $x }} {{ $.Release.Namespace }} {{ .Release.Name }} {{ .Release.Service }}',
        'elif: {{ if eq .Values.str "x" }}X{{ else if eq .Values.str "a b" }}AB{{ else }}Z{{ end }}',
        'logic: {{ and 1 0 }} {{ or 0 "" "x" }} {{ not .Values.empty }} {{ ne .Values.str "a" }} {{ eq (int .Values.small) 3 }} {{ hasKey .Values.nested "a.c" }} {{ index .Values.nested "a-b" }} {{ len .Values.list }}',
        'printf: {{ printf "%s-%d-%v-%v" "a" 3 .Values.half true }} {{ b64enc "meshlane" }}',
        'include:',
        '  {{- include "h" (dict "n" "x" "root" $) | nindent 2 }}',
        'indent: |',
        '{{ "one\\ntwo\\n" | indent 2 }}',
        'trim: a \t',
        ' {{- "b" -}} ',
        '  c {{-3}} {{/* c */}} d',
        '{{- /* c2 */}}',
        '',
      ].join('\n'),
    );
    const go = runReference(chart, 'ns', join(chart, 'values.yaml'));
    const ts = renderTemplate(readFileSync(join(chart, 'templates', 't.yaml'), 'utf8'), loadValues(join(chart, 'values.yaml')), { Name: 'meshlane', Namespace: 'ns' }, 'templates/t.yaml', {
      partials: { 'templates/_h.tpl': readFileSync(join(chart, 'templates', '_h.tpl'), 'utf8') },
      chart: { Name: 'c', Version: '1.2.3', AppVersion: '4.5' },
    });
    expect(ts).toBe(go['t.yaml']);
  });

  it('and the reference fails where render.ts refuses because helm fails (fail)', { timeout: 300_000 }, () => {
    const file = join(tmp, 'bad.yaml');
    writeFileSync(file, 'worker: { namespace: istio-system }');
    const go = runReference(CHART_DIR, 'istio-system', join(CHART_DIR, 'values.yaml'), file);
    expect(JSON.stringify(go['worker.yaml'])).toMatch(/worker\.createNamespace: the worker's namespace is the release's/);
    expect(() => renderChart({ values: parseValues('worker: { namespace: istio-system }', file), helmOnly: STANDINS })).toThrow(/worker\.createNamespace: the worker's namespace is the release's/);
  });
});
