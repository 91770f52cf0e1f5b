package config

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	// File is the configuration file's path.
	File string
	// Path is the JSON path of the offending value, e.g.
	// "backend.applications[0].listen-port"; empty for the whole file.
	Path string
	// Reason says what is wrong.
	Reason string
}

// String formats the problem as FILE: PATH: REASON.
func (p Problem) String() string {
	if p.Path == "" {
		return fmt.Sprintf("%s: %s", p.File, p.Reason)
	}
	return fmt.Sprintf("%s: %s: %s", p.File, p.Path, p.Reason)
}

// Problems is every problem found in one file; as an error it prints one
// problem per line.
type Problems []Problem

// Error joins the problems, one per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Duration is a time.Duration written in JSON as a string such as "200ms".
// A string that does not parse is kept and reported by Validate with its
// path, so that one bad duration does not hide the file's other problems.
type Duration struct {
	time.Duration
	bad string
}

// D wraps a time.Duration.
func D(d time.Duration) Duration { return Duration{Duration: d} }

// UnmarshalJSON accepts a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		d.bad = string(b)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.bad = s
		return nil
	}
	*d = Duration{Duration: v}
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// check reports a duration that did not parse or is negative.
func (d Duration) check() string {
	if d.bad != "" {
		return fmt.Sprintf("%s is not a duration (write e.g. \"200ms\", \"5s\")", d.bad)
	}
	if d.Duration < 0 {
		return "must not be negative"
	}
	return ""
}

var typeOfConfig = reflect.TypeFor[Config]()

// unknownFields walks the generic JSON value v alongside the Go type t and
// reports every object key that t has no field for. Maps and raw messages
// accept any key: plugins validate their own sections.
func unknownFields(file, path string, v any, t reflect.Type) Problems {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[json.RawMessage]() || t == reflect.TypeFor[Seed]() {
		return nil
	}
	var out Problems
	switch val := v.(type) {
	case map[string]any:
		if t.Kind() != reflect.Struct {
			return nil
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if f.Anonymous && name == "" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			fields[name] = f.Type
		}
		keys := make([]string, 0, len(val))
		for k := range val {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := join(path, k)
			ft, ok := fields[k]
			if !ok {
				out = append(out, Problem{File: file, Path: p, Reason: "unknown field" + suggest(k, fields)})
				continue
			}
			out = append(out, unknownFields(file, p, val[k], ft)...)
		}
	case []any:
		if t.Kind() != reflect.Slice {
			return nil
		}
		for i, e := range val {
			out = append(out, unknownFields(file, fmt.Sprintf("%s[%d]", path, i), e, t.Elem())...)
		}
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// suggest names a known field that differs from k only in case or
// separators, the usual slip ("bindPort" for "bind-port").
func suggest(k string, fields map[string]reflect.Type) string {
	norm := func(s string) string { return strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(s)) }
	for name := range fields {
		if norm(name) == norm(k) {
			return fmt.Sprintf(" (did you mean %q?)", name)
		}
	}
	return ""
}
