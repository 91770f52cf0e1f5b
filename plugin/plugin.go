// Package plugin holds what every sort of scrimp plugin shares: a registry
// of implementations by name (seed providers, generators, proxy kinds),
// filled from init funcs, and the strict decoder of a plugin's JSON
// options.
package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
)

// Registry maps names to plugins of one sort. Register is meant for init
// funcs; Lookup and Names may be called from any goroutine at any time.
// The zero value is not usable: make one with NewRegistry.
type Registry[T any] struct {
	// sort names what is registered ("seed provider"), for panics.
	sort string
	mu   sync.RWMutex
	m    map[string]T
}

// NewRegistry returns an empty registry of plugins of the given sort,
// e.g. "seed provider"; the sort only appears in panic messages.
func NewRegistry[T any](sort string) *Registry[T] {
	return &Registry[T]{sort: sort, m: map[string]T{}}
}

// Register makes v available under name. It panics on an empty name or
// a name registered twice, like database/sql.Register: both are
// programming errors, best found when the program starts.
func (r *Registry[T]) Register(name string, v T) {
	if name == "" {
		panic(fmt.Sprintf("plugin: %s registered without a name", r.sort))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.m[name]; dup {
		panic(fmt.Sprintf("plugin: %s %q registered twice", r.sort, name))
	}
	r.m[name] = v
}

// Lookup returns the plugin registered as name; ok is false if there is
// none.
func (r *Registry[T]) Lookup(name string) (v T, ok bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, ok = r.m[name]
	return v, ok
}

// Names returns the registered names, sorted.
func (r *Registry[T]) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Sorted(maps.Keys(r.m))
}

// DecodeOptions decodes a plugin's raw JSON options (a seed provider's
// section, lb.generator-options) into v. Unknown fields are errors, and so
// is anything after the options object: a typo must not pass silently.
// Absent options (nil or empty raw) leave v as it is: the plugin's
// defaults.
func DecodeOptions(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the options object")
	}
	return nil
}
