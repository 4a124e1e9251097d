/**
 * deploy/render.ts: Go template semantics where it implements them (as Go's
 * text/template, sprig and sigs.k8s.io/yaml do: test/deploy/chart-reference
 * compares it with them), and a refusal naming file:line and the construct
 * everywhere else, never an output helm would not produce.
 */
import { describe, expect, it } from 'vitest';
import { GoStruct, goFloat, parseValues, renderTemplate, type Value } from '../../deploy/render.js';

const rel = { Name: 'meshlane', Namespace: 'ns' };
const r = (t: string, v: Record<string, unknown> = {}, partials?: Record<string, string>) => renderTemplate(t, v as never, rel, 'templates/t.yaml', partials ? { partials } : {});

describe('render.ts: what it renders, as helm does', () => {
  it('if / else if / else / end with Go truth, and trim markers that apply in branches not taken too', () => {
    const t = 'a:\n  x: 1\n  {{- if .Values.c }}\n  c: {{ .Values.c | quote }}\n  {{- else }}\n  c: none\n  {{- end }}\n  y: 2\n';
    expect(r(t, { c: 'v' })).toBe('a:\n  x: 1\n  c: "v"\n  y: 2\n');
    expect(r(t, { c: '' })).toBe('a:\n  x: 1\n  c: none\n  y: 2\n');
    for (const falsy of [false, 0, null, '', [], {}]) expect(r('{{ if .Values.c }}yes{{ end }}', { c: falsy })).toBe('');
    for (const truthy of [true, 1, 'x', [0], { a: null }]) expect(r('{{ if .Values.c }}yes{{ end }}', { c: truthy })).toBe('yes');
    const elif = '{{ if eq .Values.a "x" }}X{{ else if eq .Values.a "y" }}Y{{ else }}Z{{ end }}.';
    expect(['x', 'y', 'z'].map((a) => r(elif, { a }))).toEqual(['X.', 'Y.', 'Z.']);
    // A branch not taken is not evaluated (a missing value there is no error).
    expect(r('{{ if .Values.a }}A{{ if .Values.b }}B{{ .Values.missing }}{{ else }}b{{ end }}{{ end }}.', { a: 1, b: false })).toBe('Ab.');
    // Trimming: "{{- " and " -}}" eat spaces, tabs and newlines; "{{-3}}" is a number.
    expect(r('a \t\n {{- "b" -}} \n\t c')).toBe('abc');
    expect(r('a {{-3}}')).toBe('a -3');
    expect(r('a\n{{- /* a comment */ -}}\nb {{/* another */}}c')).toBe('ab c');
  });

  it('prints numbers from values files as Go prints a float64 (helm reads every one as a float64): 1048576 is 1.048576e+06 unless `int`', () => {
    const v = parseValues('a: 1048576\nb: 3\nc: 123456\nd: 0.5\ne: 1000000\nf: 0.00001\n', 'values.yaml');
    expect(r('{{ .Values.a }} {{ .Values.b }} {{ .Values.c }} {{ .Values.d }} {{ .Values.e }} {{ .Values.f }}', v)).toBe('1.048576e+06 3 123456 0.5 1e+06 1e-05');
    expect(r('{{ int .Values.a }} {{ .Values.a | int }} {{ .Values.a | quote }} {{ int .Values.d }}', v)).toBe('1048576 1048576 "1.048576e+06" 0');
    expect([1e21, 1e20, 123456789, -2.5e-7, 100].map(goFloat)).toEqual(['1e+21', '1e+20', '1.23456789e+08', '-2.5e-07', '100']);
    // toJson and toYaml go through encoding/json: integers print whole.
    expect(r('{{ toJson .Values.a }} {{ toYaml .Values.a }}', v)).toBe('1048576 1048576');
  });

  it('range over lists (one or two variables, $ inside), maps in key order, else; variables declared and assigned', () => {
    expect(r('{{ range $i := until 3 }}[{{ $i }}]{{ end }}')).toBe('[0][1][2]');
    expect(r('{{ range $i, $e := .Values.l }}{{ $i }}={{ $e }}@{{ $.Release.Namespace }} {{ end }}', { l: ['a', 'b'] })).toBe('0=a@ns 1=b@ns ');
    expect(r('{{ range $k, $v := .Values.m }}{{ $k }}:{{ $v }},{{ end }}', { m: { b: '2', a: '1', B: '3' } })).toBe('B:3,a:1,b:2,');
    expect(r('{{ range .Values.l }}{{ . }}{{ else }}none{{ end }}', { l: [] })).toBe('none');
    expect(r('{{ $x := "a" }}{{ if true }}{{ $x = "b" }}{{ $y := "c" }}{{ end }}{{ $x }}')).toBe('b');
    expect(() => r('{{ if true }}{{ $y := "c" }}{{ end }}{{ $y }}')).toThrow(/templates\/t\.yaml:1: undefined variable \$y/);
  });

  it('define/include with dict, nindent and toYaml in yaml.v2 form (sorted keys, lists not indented, quoting of what would read as another type)', () => {
    const partials = { 'templates/_h.tpl': '{{- define "l" -}}\nname: {{ .n }}\nns: {{ .root.Release.Namespace }}\n{{- end }}' };
    expect(r('m:\n  labels:\n    {{- include "l" (dict "n" "x" "root" $) | nindent 4 }}\n', {}, partials)).toBe('m:\n  labels:\n    name: x\n    ns: ns\n');
    const v = { limits: { memory: '1Gi' }, requests: { memory: '64Mi', cpu: '50m' }, caps: ['BPF', 'NET_ADMIN'], sel: { 'node-role.kubernetes.io/infra': '', zone: 'a', a_b: 'yes', Z: '12' }, e: {}, l: [] };
    expect(r('{{ toYaml .Values }}', v)).toBe(
      ['caps:', '- BPF', '- NET_ADMIN', 'e: {}', 'l: []', 'limits:', '  memory: 1Gi', 'requests:', '  cpu: 50m', '  memory: 64Mi', 'sel:', '  Z: "12"', '  a_b: "yes"', '  node-role.kubernetes.io/infra: ""', '  zone: a'].join('\n'),
    );
    expect(r('{{ toJson .Values.v }}', { v: { b: ['x<y&z>'], a: 1, B: null } })).toBe('{"B":null,"a":1,"b":["x\\u003cy\\u0026z\\u003e"]}');
    expect(r('{{ printf "%s-%d-%v" "a" 3 true }} {{ len .Values.l }} {{ index .Values.m "k.x" }} {{ hasKey .Values.m "k.x" }} {{ not (hasKey .Values.m "z") }}', { l: [1, 2], m: { 'k.x': 'v' } })).toBe('a-3-true 2 v true true');
    expect(r('{{ and 1 0 }} {{ or 0 "" "x" }}')).toBe('0 x');
    // and short-circuits (Go >= 1.18): hasKey never sees the nil.
    const guard = '{{ if and .Values.a (hasKey .Values.a "b") }}y{{ else }}n{{ end }}';
    expect([null, { c: 1 }, { b: 1 }].map((a) => r(guard, { a }))).toEqual(['n', 'n', 'y']);
  });
});

describe('render.ts: refuses, naming file:line and the construct', () => {
  const refuses: Array<[string, string, Record<string, unknown>, RegExp]> = [
    ['a function it does not implement (even in a branch not taken: Go parses everything)', 'x\n{{ if false }}{{ upper "a" }}{{ end }}', {}, /templates\/t\.yaml:2: function upper: not implemented by render\.ts/],
    ['with', '{{ with .Values.a }}{{ . }}{{ end }}', { a: 1 }, /templates\/t\.yaml:1: with: not supported by render\.ts/],
    ['template', '{{ template "x" . }}', {}, /:1: template: not supported/],
    ['a missing value (helm prints nothing)', 'a: {{ .Values.nope }}', {}, /templates\/t\.yaml:1: no value at \.Values\.nope \(helm would render nothing\)/],
    ['a missing value in a condition', '\n\n{{ if .Values.a.b }}x{{ end }}', { a: {} }, /templates\/t\.yaml:3: no value at \.Values\.a\.b/],
    ['a value that is nil', '{{ .Values.a }}', { a: null }, /prints a nil value/],
    ['a map printed', '{{ .Values.a }}', { a: { b: 1 } }, /prints a map \(Go's map\[k:v\] form\): refused, use toYaml/],
    ['eq of a float64 and an int (helm fails)', '{{ if eq .Values.a 1 }}x{{ end }}', { a: 1 }, /incompatible types for comparison \(float64, int\)/],
    ['nindent with a float64 width', '{{ "a" | nindent .Values.n }}', { n: 2 }, /nindent: wrong type for value; expected int; got float64/],
    ['a string toYaml cannot be sure of', '{{ toYaml .Values.a }}', { a: { k: 'a: b' } }, /toYaml of the string "a: b": refused/],
    ['a map key with digits in toYaml (yaml.v2 sorts digit runs numerically)', '{{ toYaml .Values.a }}', { a: { k10: 'x' } }, /key "k10": refused/],
    ['a non-integer in toJson', '{{ toJson .Values.a }}', { a: 0.5 }, /toJson of the number 0\.5: refused/],
    ['quote of non-ASCII', '{{ quote .Values.a }}', { a: 'é' }, /quote of a string with non-ASCII/],
    ['a function whose output is random (genCA)', 'x: 1\n{{ $ca := genCA "x" 365 }}', {}, /templates\/t\.yaml:2: genCA: its output is random or comes from the cluster; render\.ts refuses it/],
    ['lookup', '{{ $s := lookup "v1" "Secret" "ns" "x" }}', {}, /lookup: its output is random or comes from the cluster/],
    ['an unterminated action', 'a {{ .Values.a', { a: 1 }, /templates\/t\.yaml:1: unclosed action/],
    ['if without end', '{{ if .Values.a }}x', { a: 1 }, /templates\/t\.yaml:1: if without end/],
    ['end without if', 'x\n{{ end }}', {}, /templates\/t\.yaml:2: unexpected \{\{ end \}\}/],
    ['a raw string', '{{ `x` }}', {}, /"`" in an action is not supported/],
    ['a number form other than decimal', '{{ 0x10 }}', {}, /number 0x10: only decimal integers/],
    ['a field of a function result', '{{ (dict "a" 1).a }}', {}, /\(\.\.\.\)\.a: fields of a parenthesized result are not supported/],
    ['an argument to a non-function', '{{ .Values.a "b" }}', { a: 1 }, /can't give argument to non-function/],
    ['printf with a verb it does not know', '{{ printf "%q" "a" }}', {}, /printf %q of a string: refused/],
    ['"<no value>" in the output (helm deletes it)', 'a: <no value>', {}, /contains "<no value>", which helm deletes/],
    ['a define outside a _*.tpl', '{{ define "x" }}y{{ end }}', {}, /define outside a _\*\.tpl file/],
    ['fail', '{{ fail "no way" }}', {}, /templates\/t\.yaml:1: fail: no way/],
  ];
  for (const [what, tpl, values, err] of refuses) it(what, () => expect(() => r(tpl, values)).toThrow(err));

  it('values files: plain scalars YAML 1.1 (helm) reads otherwise than YAML 1.2 (js-yaml), each named', () => {
    for (const [text, why] of [
      ['a: yes', /plain scalar "yes" is a boolean in YAML 1\.1/],
      ['a: off', /"off" is a boolean/],
      ['n: 1', /"n" is a boolean/],
      ['a: 0755', /"0755" is an octal number in YAML 1\.1/],
      ['a: 1_000', /"1_000" is a number in YAML 1\.1/],
      ['a: 1:30', /"1:30" is a base-60 number/],
      ['a: 2024-01-02', /"2024-01-02" is a timestamp/],
      ['a: +Inf', /"\+Inf" is a float in Go/],
    ] as const) expect(() => parseValues(text, 'values.yaml'), text).toThrow(why);
    // Quoted, they are strings in both; ordinary scalars pass.
    expect(parseValues('a: "yes"\nb: \'0755\'\nc: 10Gi\nd: 0\ne: 1.5\nf: 0x1F\ng: true\nh: ~\ni: -3\n', 'values.yaml')).toEqual({ a: 'yes', b: '0755', c: '10Gi', d: 0, e: 1.5, f: 31, g: true, h: null, i: -3 });
  });

  it('helm-only functions render only with stand-ins a test passes (never from the CLI)', () => {
    const helmOnly = { genCA: (cn: Value, days: Value) => new GoStruct('certificate', { Cert: `C ${cn} ${days}`, Key: 'K' }) };
    expect(renderTemplate('{{ $ca := genCA "x" 3 }}{{ $ca.Cert }} {{ $ca.Key }}', {}, rel, 't', { helmOnly })).toBe('C x 3 K');
    expect(() => renderTemplate('{{ $ca := genCA "x" 3 }}{{ $ca.Nope }}', {}, rel, 't', { helmOnly })).toThrow(/certificate has no field Nope/);
  });
});
