// A reference renderer for deploy/render.ts: Go's text/template with helm's
// engine options and the helm/sprig functions the chart uses, copied from
// helm v3.21 pkg/engine (include, toYaml, toJson) and sprig v3.3.0 (quote,
// indent, nindent, dict, list, hasKey, until, int, b64enc); values read by
// sigs.k8s.io/yaml as helm's chartutil.ReadValues reads them (values.go:
// that behaviour over Debian's yaml.v2, as sigs.k8s.io/yaml is not packaged
// in Debian 12). lookup, genCA,
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
		if err := sigsUnmarshal(data, &v); err != nil {
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
	if err := sigsUnmarshal(cdata, &meta); err != nil {
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
			data, err := sigsMarshal(v)
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
