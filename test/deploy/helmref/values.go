// YAML in and out as helm does it through sigs.k8s.io/yaml (v1.6.0), which
// Debian 12 does not package: these are not its code, but the behaviour its
// documentation gives, over the real yaml.v2 and encoding/json.
//
//   - Unmarshal: yaml.v2 decodes the document into interface{}; its maps
//     (map[interface{}]interface{}) become map[string]interface{}, keys that
//     are not strings written as text; that is marshalled with encoding/json
//     and decoded again with encoding/json into the target. So a values map
//     holds float64 for every number, string keys only, as helm sees it.
//   - Marshal (helm's toYaml): encoding/json marshals the value, yaml.v2
//     decodes that JSON into interface{} (so 1048576 is an int again, not
//     1.048576e+06) and yaml.v2 marshals it (sorted keys, compact lists).
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"gopkg.in/yaml.v2"
)

// keyText is how a non-string YAML map key is written as a JSON object key.
func keyText(k interface{}) (string, error) {
	switch k := k.(type) {
	case string:
		return k, nil
	case bool:
		return strconv.FormatBool(k), nil
	case int:
		return strconv.FormatInt(int64(k), 10), nil
	case int64:
		return strconv.FormatInt(k, 10), nil
	case uint64:
		return strconv.FormatUint(k, 10), nil
	case float64:
		// YAML's spelling of the specials, shortest text otherwise (float32 precision).
		if math.IsInf(k, 1) {
			return ".inf", nil
		}
		if math.IsInf(k, -1) {
			return "-.inf", nil
		}
		if math.IsNaN(k) {
			return ".nan", nil
		}
		return strconv.FormatFloat(k, 'g', -1, 32), nil
	}
	return "", fmt.Errorf("unsupported map key of type %T: %#v", k, k)
}

// jsonable turns what yaml.v2 decodes into what encoding/json can marshal.
func jsonable(v interface{}) (interface{}, error) {
	switch v := v.(type) {
	case map[interface{}]interface{}:
		out := make(map[string]interface{}, len(v))
		for k, e := range v {
			ks, err := keyText(k)
			if err != nil {
				return nil, err
			}
			if out[ks], err = jsonable(e); err != nil {
				return nil, err
			}
		}
		return out, nil
	case []interface{}:
		out := make([]interface{}, len(v))
		for i, e := range v {
			var err error
			if out[i], err = jsonable(e); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return v, nil
}

func sigsUnmarshal(data []byte, target interface{}) error {
	var doc interface{}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("error converting YAML to JSON: %w", err)
	}
	plain, err := jsonable(doc)
	if err != nil {
		return fmt.Errorf("error converting YAML to JSON: %w", err)
	}
	j, err := json.Marshal(plain)
	if err != nil {
		return fmt.Errorf("error converting YAML to JSON: %w", err)
	}
	if err := json.NewDecoder(bytes.NewReader(j)).Decode(target); err != nil {
		return fmt.Errorf("error unmarshaling JSON: while decoding JSON: %w", err)
	}
	return nil
}

func sigsMarshal(v interface{}) ([]byte, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("error marshaling into JSON: %w", err)
	}
	var doc interface{}
	if err := yaml.Unmarshal(j, &doc); err != nil {
		return nil, fmt.Errorf("error converting JSON to YAML: %w", err)
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("error converting JSON to YAML: %w", err)
	}
	return out, nil
}
