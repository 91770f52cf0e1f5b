package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

var (
	typeOfDuration   = reflect.TypeFor[Duration]()
	typeOfSeed       = reflect.TypeFor[Seed]()
	typeOfLB         = reflect.TypeFor[LB]()
	typeOfRawMessage = reflect.TypeFor[json.RawMessage]()
	typeOfString     = reflect.TypeFor[string]()
	typeOfStatuses   = reflect.TypeFor[StatusCodes]()
	typeOfPortRange  = reflect.TypeFor[PortRange]()
)

// shape is what shape.check found wrong with the form of a JSON document,
// before any value is looked at.
type shape struct {
	// unknown are keys the Go types have no field for.
	unknown Problems
	// mistyped are values of the wrong JSON type. check replaces each
	// with null in the tree, so decoding the tree keeps that field's default
	// and Validate does not report it a second time.
	mistyped Problems
	// moved is set when check moved a value to another key: the tree, not
	// the file's bytes, must then be decoded.
	moved bool
}

// check walks the generic JSON value v (decoded with UseNumber)
// alongside the Go type t, reporting every object key t has no field for
// and every value whose JSON type cannot decode into its field. Unknown keys
// are deleted from v and mistyped values inside it replaced by null, so v then
// decodes without error and, since encoding/json matches keys without
// regard to case, an unknown "Role" cannot set Role. It returns false if v
// itself has the wrong type; the caller must then replace it by null.
//
// Raw messages accept anything and seed sections any object: plugins
// decode and check their own options.
func (s *shape) check(file, path string, v any, t reflect.Type) bool {
	if v == nil {
		return true // null leaves a value as it is, or sets a pointer to nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	mistyped := func(want string) bool {
		s.mistyped = append(s.mistyped, Problem{File: file, Path: path, Reason: fmt.Sprintf("expected %s, got %s", want, describe(v))})
		return false
	}
	switch t {
	case typeOfRawMessage:
		return true
	case typeOfDuration:
		if _, ok := v.(string); !ok {
			return mistyped(`a duration string such as "5s"`)
		}
		return true
	case typeOfStatuses:
		// One status code or a list of them.
		list, ok := v.([]any)
		if !ok {
			if n, ok := v.(json.Number); ok {
				if _, err := strconv.Atoi(string(n)); err == nil {
					return true
				}
			}
			return mistyped("a status code or a list of them")
		}
		for i, e := range list {
			if !s.check(file, fmt.Sprintf("%s[%d]", path, i), e, t.Elem()) {
				list[i] = nil
			}
		}
		return true
	case typeOfPortRange:
		switch v.(type) {
		case json.Number, string:
			return true
		}
		return mistyped(`a port or a range "lo-hi"`)
	case typeOfSeed:
		obj, ok := v.(map[string]any)
		if !ok {
			return mistyped("an object")
		}
		s.checkSeed(file, path, obj)
		return true
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return mistyped("an object")
		}
		if t == typeOfLB {
			s.liftGeneratorSection(file, path, obj)
		}
		fields := jsonFields(t)
		for _, k := range sortedKeys(obj) {
			p := join(path, k)
			ft, ok := fields[k]
			if !ok {
				s.unknown = append(s.unknown, Problem{File: file, Path: p, Reason: "unknown field" + suggest(k, fields)})
				delete(obj, k)
				continue
			}
			if !s.check(file, p, obj[k], ft) {
				obj[k] = nil
			}
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			return mistyped("an object")
		}
		for _, k := range sortedKeys(obj) {
			if !s.check(file, join(path, k), obj[k], t.Elem()) {
				obj[k] = nil
			}
		}
	case reflect.Slice, reflect.Array:
		list, ok := v.([]any)
		if !ok {
			return mistyped("a list")
		}
		for i, e := range list {
			if !s.check(file, fmt.Sprintf("%s[%d]", path, i), e, t.Elem()) {
				list[i] = nil
			}
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			return mistyped("a string")
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return mistyped("true or false")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			return mistyped("an integer")
		}
		if _, err := strconv.ParseInt(string(n), 10, t.Bits()); err != nil {
			return mistyped("an integer")
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			return mistyped("a non-negative integer")
		}
		if _, err := strconv.ParseUint(string(n), 10, t.Bits()); err != nil {
			return mistyped("a non-negative integer")
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := v.(json.Number); !ok {
			return mistyped("a number")
		}
	}
	return true
}

// liftGeneratorSection moves the options of the chosen generator, written
// as an object under the generator's name ("lb": {"generator": "haproxy",
// "haproxy": {…}}, as seed providers take theirs), to generator-options.
// Both at once are a problem: one would silently win.
func (s *shape) liftGeneratorSection(file, path string, obj map[string]any) {
	gen := DefaultLB().Generator
	if g, ok := obj["generator"].(string); ok {
		gen = g
	}
	section, ok := obj[gen]
	if !ok || gen == "" || !isIdent(gen) || slices.Contains(slices.Collect(maps.Keys(jsonFields(typeOfLB))), gen) {
		return
	}
	if _, both := obj["generator-options"]; both {
		s.mistyped = append(s.mistyped, Problem{File: file, Path: join(path, gen),
			Reason: fmt.Sprintf("the options of generator %q are given here and in %s; keep one", gen, join(path, "generator-options"))})
		delete(obj, gen)
		return
	}
	obj["generator-options"] = section
	delete(obj, gen)
	s.moved = true
}

// checkSeed checks the "seed" object: "provider" is a string and every
// other key holds one provider's options, which are an object. Options
// written straight under "seed" are the usual slip.
func (s *shape) checkSeed(file, path string, obj map[string]any) {
	provider, _ := obj["provider"].(string)
	for _, k := range sortedKeys(obj) {
		p, v := join(path, k), obj[k]
		if k == "provider" {
			if !s.check(file, p, v, typeOfString) {
				obj[k] = nil
			}
			continue
		}
		switch v.(type) {
		case nil, map[string]any:
			continue
		}
		reason := fmt.Sprintf("expected an object of options for seed provider %q, got %s", k, describe(v))
		if provider != "" && provider != k && isIdent(provider) {
			reason += fmt.Sprintf(" (did you mean %q?)", join(join(path, provider), k))
		}
		s.mistyped = append(s.mistyped, Problem{File: file, Path: p, Reason: reason})
		obj[k] = nil
	}
}

// jsonFields maps each JSON key of struct type t to its field's type. The
// fields of an embedded struct without a JSON name are promoted, as
// encoding/json promotes them, unless a field of the outer struct has the
// same key: the shallower field wins.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	var embedded []reflect.Type
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			// encoding/json promotes the fields of an unexported embedded
			// struct too, but ignores other unexported embedded types.
			if ft.Kind() == reflect.Struct {
				embedded = append(embedded, ft)
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	for _, et := range embedded {
		for name, ft := range jsonFields(et) {
			if _, ok := fields[name]; !ok {
				fields[name] = ft
			}
		}
	}
	return fields
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// describe names the JSON type of a generic value, with the value itself
// when it is short enough to help.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		if len(v) > 40 {
			return "a string"
		}
		return fmt.Sprintf("string %q", v)
	case json.Number:
		if len(v) > 40 {
			return "a number"
		}
		return "number " + string(v)
	case bool:
		return strconv.FormatBool(v)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
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

// duplicateKeys reports every key that appears twice in one object of the
// valid JSON document data. encoding/json silently keeps the last value, so
// a duplicate usually means an edit that did not take.
func duplicateKeys(file string, data []byte) Problems {
	dec := json.NewDecoder(bytes.NewReader(data))
	var out Problems
	var walk func(path string) error
	walk = func(path string) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				k, _ := kt.(string)
				p := join(path, k)
				if seen[k] {
					out = append(out, Problem{File: file, Path: p, Reason: "duplicate key: only its last value is used"})
				}
				seen[k] = true
				if err := walk(p); err != nil {
					return err
				}
			}
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		default:
			return nil
		}
		_, err = dec.Token() // the closing delimiter
		return err
	}
	walk("") // data is valid JSON, so walk cannot fail
	return out
}
