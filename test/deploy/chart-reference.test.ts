/**
 * deploy/render.ts against Go's own text/template: a reference renderer in
 * Go (below) with helm's engine options (missingkey=zero, "<no value>"
 * removed), helm's include/toYaml/toJson and sprig's quote, indent,
 * nindent, dict, list, hasKey, until, int, b64enc as helm v3.21 and sprig
 * v3.3.0 define them, values read by sigs.k8s.io/yaml (v1.6.0, over
 * yaml.v2 v2.4.0) as helm reads them. Both render the chart with several
 * sets of values; every output must be byte-identical.
 *
 * It needs Go and those two modules, so it runs only when asked:
 *   MESHLANE_HELMREF=1            fetch them through the Go module proxy, or
 *   MESHLANE_HELMREF_DEPS=DIR     use DIR/sigsyaml (sigs.k8s.io/yaml v1.6.0's
 *                                 yaml.go and fields.go) and DIR/yamlv2
 *                                 (go-yaml v2.4.0), e.g. git archives of them.
 * Not a helm binary: the functions helm and sprig implement are copies of
 * their few lines; text/template, encoding/json and yaml.v2 are the real ones.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CHART_DIR, GoStruct, MANIFEST_VALUES, loadValues, parseValues, renderChart, renderTemplate, type HelmOnly, type Value } from '../../deploy/render.js';

const DEPS = process.env.MESHLANE_HELMREF_DEPS;
const ENABLED = DEPS !== undefined || process.env.MESHLANE_HELMREF === '1';

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

const GO_MAIN = String.raw`// A reference renderer for deploy/render.ts: Go's text/template with helm's
// engine options and the helm/sprig functions the chart uses, copied from
// helm v3.21 pkg/engine (include, toYaml, toJson) and sprig v3.3.0 (quote,
// indent, nindent, dict, list, hasKey, until, int, b64enc); values read by
// sigs.k8s.io/yaml as helm's chartutil.ReadValues reads them. lookup, genCA,
// genSignedCert and buildCustomCert are deterministic stand-ins, the same
// ones the TypeScript side passes as helmOnly.
//
// Usage: ref CHART_DIR NAMESPACE VALUES.yaml [OVERLAY.yaml...] > {"file": "output" | {"error": "..."}}
package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"sigs.k8s.io/yaml"
)

type certificate struct{ Cert, Key string }

type chartMeta struct{ Name, Version, AppVersion string }

func strval(v interface{}) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case error:
		return v.Error()
	case fmt.Stringer:
		return v.String()
	default:
		return fmt.Sprintf("%v", v)
	}
}

// cast.ToInt for the kinds the chart passes.
func toInt(v interface{}) int {
	switch s := v.(type) {
	case int:
		return s
	case int64:
		return int(s)
	case float64:
		return int(s)
	case string:
		i, err := strconv.ParseInt(s, 0, 0)
		if err != nil {
			return 0
		}
		return int(i)
	case nil:
		return 0
	}
	panic(fmt.Sprintf("toInt of %T", v))
}

func coalesce(dst, src map[string]interface{}) {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				coalesce(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

func main() {
	chartDir, ns := os.Args[1], os.Args[2]
	var values map[string]interface{}
	for i, f := range os.Args[3:] {
		data, err := os.ReadFile(f)
		if err != nil {
			panic(err)
		}
		var v map[string]interface{}
		if err := yaml.Unmarshal(data, &v); err != nil {
			panic(err)
		}
		if i == 0 {
			values = v
		} else {
			coalesce(values, v)
		}
	}
	cdata, _ := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	var meta map[string]interface{}
	if err := yaml.Unmarshal(cdata, &meta); err != nil {
		panic(err)
	}
	top := map[string]interface{}{
		"Values":  values,
		"Release": map[string]interface{}{"Name": "meshlane", "Namespace": ns, "Service": "Helm"},
		"Chart":   &chartMeta{Name: meta["name"].(string), Version: meta["version"].(string), AppVersion: meta["appVersion"].(string)},
	}
	t := template.New("gotpl")
	t.Option("missingkey=zero")
	funcs := template.FuncMap{
		"quote": func(str ...interface{}) string {
			out := make([]string, 0, len(str))
			for _, s := range str {
				if s != nil {
					out = append(out, fmt.Sprintf("%q", strval(s)))
				}
			}
			return strings.Join(out, " ")
		},
		"indent": func(spaces int, v string) string {
			pad := strings.Repeat(" ", spaces)
			return pad + strings.Replace(v, "\n", "\n"+pad, -1)
		},
		"nindent": func(spaces int, v string) string {
			pad := strings.Repeat(" ", spaces)
			return "\n" + pad + strings.Replace(v, "\n", "\n"+pad, -1)
		},
		"dict": func(v ...interface{}) map[string]interface{} {
			dict := map[string]interface{}{}
			for i := 0; i < len(v); i += 2 {
				key := strval(v[i])
				if i+1 >= len(v) {
					dict[key] = ""
					continue
				}
				dict[key] = v[i+1]
			}
			return dict
		},
		"list":   func(v ...interface{}) []interface{} { return v },
		"hasKey": func(d map[string]interface{}, key string) bool { _, ok := d[key]; return ok },
		"until": func(count int) []int {
			v := []int{}
			for i := 0; i < count; i++ {
				v = append(v, i)
			}
			return v
		},
		"int":    toInt,
		"b64enc": func(v string) string { return base64.StdEncoding.EncodeToString([]byte(v)) },
		"toYaml": func(v interface{}) string {
			data, err := yaml.Marshal(v)
			if err != nil {
				return ""
			}
			return strings.TrimSuffix(string(data), "\n")
		},
		"toJson": func(v interface{}) string {
			data, err := json.Marshal(v)
			if err != nil {
				return ""
			}
			return string(data)
		},
		"fail":    func(msg string) (string, error) { return "", errors.New(msg) },
		"include": func(string, interface{}) string { return "not implemented" },
		"lookup": func(apiVersion, kind, namespace, name string) (map[string]interface{}, error) {
			return map[string]interface{}{}, nil
		},
		"genCA": func(cn string, days int) (certificate, error) {
			return certificate{Cert: fmt.Sprintf("CA %s %d\n", cn, days), Key: "CA KEY\n"}, nil
		},
		"genSignedCert": func(cn string, ips []interface{}, alt []interface{}, days int, ca certificate) (certificate, error) {
			names := make([]string, 0, len(alt))
			for _, a := range alt {
				names = append(names, strval(a))
			}
			return certificate{Cert: fmt.Sprintf("CERT %s %v %s %d by %s", cn, ips == nil, strings.Join(names, ","), days, ca.Cert), Key: "CERT KEY\n"}, nil
		},
		"buildCustomCert": func(c, k string) (certificate, error) { return certificate{Cert: c, Key: k}, nil },
	}
	t.Funcs(funcs)
	t.Funcs(template.FuncMap{"include": func(name string, data interface{}) (string, error) {
		var buf strings.Builder
		err := t.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}})
	dir := filepath.Join(chartDir, "templates")
	entries, _ := os.ReadDir(dir)
	names := []string{}
	for _, e := range entries {
		name := "meshlane/templates/" + e.Name()
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		if _, err := t.New(name).Parse(string(data)); err != nil {
			out, _ := json.Marshal(map[string]interface{}{"error": err.Error()})
			os.Stdout.Write(out)
			return
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	result := map[string]interface{}{}
	for _, n := range names {
		if strings.HasPrefix(n, "_") {
			continue
		}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, "meshlane/templates/"+n, top); err != nil {
			result[n] = map[string]interface{}{"error": err.Error()}
			continue
		}
		result[n] = strings.ReplaceAll(buf.String(), "<no value>", "")
	}
	out, _ := json.Marshal(result)
	os.Stdout.Write(out)
}
`;

const tmp = mkdtempSync(join(tmpdir(), 'mlt-helmref-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function buildReference(): string {
  const dir = join(tmp, 'ref');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'main.go'), GO_MAIN);
  const replace = DEPS ? `replace sigs.k8s.io/yaml => ${join(DEPS, 'sigsyaml')}\n\nreplace go.yaml.in/yaml/v2 => ${join(DEPS, 'yamlv2')}\n` : '';
  writeFileSync(join(dir, 'go.mod'), `module meshlane.test/helmref\n\ngo 1.19\n\nrequire sigs.k8s.io/yaml v1.6.0\n\nrequire go.yaml.in/yaml/v2 v2.4.2 // indirect\n\n${replace}`);
  const env = { ...process.env, GOFLAGS: '-mod=mod', GOTOOLCHAIN: 'local', ...(DEPS ? { GOPROXY: 'off', GOSUMDB: 'off' } : {}) };
  execFileSync('go', ['build', '-o', 'ref', '.'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 240_000 });
  return join(dir, 'ref');
}

describe.skipIf(!ENABLED)('render.ts against Go text/template with helm\'s functions (MESHLANE_HELMREF=1 or MESHLANE_HELMREF_DEPS=DIR)', () => {
  it('renders the chart byte for byte as the reference does, for every set of values', { timeout: 300_000 }, () => {
    const ref = buildReference();
    for (const [name, over] of Object.entries(CASES)) {
      const file = join(tmp, `${name}.yaml`);
      writeFileSync(file, over);
      const go = JSON.parse(execFileSync(ref, [CHART_DIR, 'istio-system', join(CHART_DIR, 'values.yaml'), file], { encoding: 'utf8', timeout: 60_000 })) as Record<string, string | { error: string }>;
      const ts = renderChart({ values: parseValues(over, file), helmOnly: STANDINS });
      expect(Object.keys(go).length, name).toBeGreaterThan(4);
      for (const [f, out] of Object.entries(go)) {
        expect(typeof out, `${name} ${f}: ${JSON.stringify(out)}`).toBe('string');
        if (typeof out !== 'string') continue;
        // render.ts leaves out what renders to whitespace only, as helm does after rendering.
        if (out.trim() === '') expect(ts.has(f), `${name} ${f}`).toBe(false);
        else expect(ts.get(f), `${name} ${f}`).toBe(out);
      }
    }
  });

  it('renders a chart of the constructs render.ts implements byte for byte as the reference does', { timeout: 300_000 }, () => {
    const ref = buildReference();
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
    const go = JSON.parse(execFileSync(ref, [chart, 'ns', join(chart, 'values.yaml')], { encoding: 'utf8', timeout: 60_000 })) as Record<string, unknown>;
    const ts = renderTemplate(readFileSync(join(chart, 'templates', 't.yaml'), 'utf8'), loadValues(join(chart, 'values.yaml')), { Name: 'meshlane', Namespace: 'ns' }, 'templates/t.yaml', {
      partials: { 'templates/_h.tpl': readFileSync(join(chart, 'templates', '_h.tpl'), 'utf8') },
      chart: { Name: 'c', Version: '1.2.3', AppVersion: '4.5' },
    });
    expect(ts).toBe(go['t.yaml']);
  });

  it('and the reference fails where render.ts refuses because helm fails (fail)', () => {
    const ref = buildReference();
    const file = join(tmp, 'bad.yaml');
    writeFileSync(file, 'worker: { namespace: istio-system }');
    const go = JSON.parse(execFileSync(ref, [CHART_DIR, 'istio-system', join(CHART_DIR, 'values.yaml'), file], { encoding: 'utf8' })) as Record<string, unknown>;
    expect(JSON.stringify(go['worker.yaml'])).toMatch(/worker\.createNamespace: the worker's namespace is the release's/);
    expect(() => renderChart({ values: parseValues('worker: { namespace: istio-system }', file), helmOnly: STANDINS })).toThrow(/worker\.createNamespace: the worker's namespace is the release's/);
  });
});
