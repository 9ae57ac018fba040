package tools

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// params reads tool parameters as they arrive from JSON (map[string]any):
// numbers may be float64 or json.Number, booleans may be strings ("true"),
// lists may be a comma-separated string. Names are matched ignoring case,
// '_' and '-', so file_path, filePath and FilePath are one parameter — models
// and clients spell them all three ways.
type params map[string]any

func normKey(k string) string {
	return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(k))
}

// get returns the first present, non-null value among names.
func (p params) get(names ...string) (any, string, bool) {
	for _, n := range names {
		if v, ok := p[n]; ok && v != nil {
			return v, n, true
		}
	}
	for _, n := range names {
		want := normKey(n)
		for k, v := range p {
			if v != nil && normKey(k) == want {
				return v, n, true
			}
		}
	}
	return nil, "", false
}

func badParam(name, want string, v any) error {
	return fmt.Errorf("%w: %s must be %s, got %T", ErrInvalidParameter, name, want, v)
}

// str returns a string parameter; numbers and booleans are formatted.
func (p params) str(names ...string) (string, bool, error) {
	v, n, ok := p.get(names...)
	if !ok {
		return "", false, nil
	}
	switch x := v.(type) {
	case string:
		return x, true, nil
	case json.Number:
		return x.String(), true, nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true, nil
	case int:
		return strconv.Itoa(x), true, nil
	case int64:
		return strconv.FormatInt(x, 10), true, nil
	case bool:
		return strconv.FormatBool(x), true, nil
	}
	return "", false, badParam(n, "a string", v)
}

// required returns a non-empty string parameter.
func (p params) required(names ...string) (string, error) {
	s, ok, err := p.str(names...)
	if err != nil {
		return "", err
	}
	if !ok || s == "" {
		return "", fmt.Errorf("%w: %s is required", ErrInvalidParameter, names[0])
	}
	return s, nil
}

// boolean returns a boolean parameter, or def when it is absent.
func (p params) boolean(def bool, names ...string) (bool, error) {
	v, n, ok := p.get(names...)
	if !ok {
		return def, nil
	}
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "true", "1", "yes", "y", "on":
			return true, nil
		case "false", "0", "no", "n", "off", "":
			return false, nil
		}
	case float64:
		return x != 0, nil
	case int:
		return x != 0, nil
	case int64:
		return x != 0, nil
	case json.Number:
		f, err := x.Float64()
		if err == nil {
			return f != 0, nil
		}
	}
	return false, badParam(n, "a boolean", v)
}

// integer returns an integer parameter, or def when it is absent. Floats
// must be whole numbers; strings are parsed.
func (p params) integer(def int, names ...string) (int, error) {
	v, n, ok := p.get(names...)
	if !ok {
		return def, nil
	}
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case float32:
		f = float64(x)
	case int:
		return x, nil
	case int64:
		f = float64(x)
	case json.Number:
		var err error
		if f, err = x.Float64(); err != nil {
			return 0, badParam(n, "an integer", v)
		}
	case string:
		s := strings.TrimSpace(x)
		if s == "" {
			return def, nil
		}
		var err error
		if f, err = strconv.ParseFloat(s, 64); err != nil {
			return 0, badParam(n, "an integer", v)
		}
	default:
		return 0, badParam(n, "an integer", v)
	}
	if f != math.Trunc(f) || math.IsInf(f, 0) || math.IsNaN(f) || math.Abs(f) > 1<<31 {
		return 0, badParam(n, "an integer", v)
	}
	return int(f), nil
}

// list returns a list of strings: a JSON array of strings, or one string
// split at commas. Empty items are dropped.
func (p params) list(names ...string) ([]string, error) {
	v, n, ok := p.get(names...)
	if !ok {
		return nil, nil
	}
	var raw []string
	switch x := v.(type) {
	case string:
		raw = strings.Split(x, ",")
	case []string:
		raw = x
	case []any:
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, badParam(n, "a list of strings", v)
			}
			raw = append(raw, s)
		}
	default:
		return nil, badParam(n, "a list of strings", v)
	}
	out := raw[:0:0]
	for _, s := range raw {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}
