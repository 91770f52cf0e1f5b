package plugin_test

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/scrimplb/scrimp/plugin"
)

func TestRegistry(t *testing.T) {
	r := plugin.NewRegistry[int]("widget")
	if names := r.Names(); len(names) != 0 {
		t.Errorf("Names() of an empty registry = %v", names)
	}
	r.Register("b", 2)
	r.Register("c", 3)
	r.Register("a", 1)
	if got, want := r.Names(), []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	tests := []struct {
		name   string
		want   int
		wantOK bool
	}{
		{"a", 1, true},
		{"c", 3, true},
		{"d", 0, false},
		{"", 0, false},
		{"A", 0, false},
	}
	for _, tt := range tests {
		t.Run("lookup "+tt.name, func(t *testing.T) {
			v, ok := r.Lookup(tt.name)
			if v != tt.want || ok != tt.wantOK {
				t.Errorf("Lookup(%q) = %d, %v; want %d, %v", tt.name, v, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestRegistryPanics(t *testing.T) {
	tests := []struct {
		name      string
		register  string
		wantPanic string
	}{
		{"duplicate", "a", `plugin: widget "a" registered twice`},
		{"empty name", "", "plugin: widget registered without a name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := plugin.NewRegistry[int]("widget")
			r.Register("a", 1)
			defer func() {
				got, _ := recover().(string)
				if got != tt.wantPanic {
					t.Errorf("panic %q, want %q", got, tt.wantPanic)
				}
				// The registry keeps what it had.
				if v, ok := r.Lookup("a"); v != 1 || !ok {
					t.Errorf("after the panic Lookup(a) = %d, %v", v, ok)
				}
			}()
			r.Register(tt.register, 2)
		})
	}
}

// TestRegistryConcurrent is for the race detector: lookups while
// registering.
func TestRegistryConcurrent(t *testing.T) {
	r := plugin.NewRegistry[string]("widget")
	var wg sync.WaitGroup
	for i := range 4 {
		name := string(rune('a' + i))
		wg.Go(func() { r.Register(name, name) })
		wg.Go(func() { r.Lookup(name); r.Names() })
	}
	wg.Wait()
	if got := r.Names(); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Errorf("Names() = %v", got)
	}
}

func TestDecodeOptions(t *testing.T) {
	type opts struct {
		A int `json:"a"`
	}
	tests := []struct {
		name    string
		raw     string
		want    int
		wantErr string
	}{
		{name: "absent keeps defaults", raw: "", want: 7},
		{name: "set", raw: `{"a": 3}`, want: 3},
		{name: "trailing white space", raw: "{\"a\": 3}\n ", want: 3},
		{name: "unknown field", raw: `{"b": 3}`, wantErr: "unknown field"},
		{name: "trailing object", raw: `{"a": 3} {"a": 4}`, wantErr: "unexpected data"},
		{name: "trailing garbage", raw: `{"a": 3} x`, wantErr: "unexpected data"},
		{name: "not an object", raw: `[1]`, wantErr: "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := opts{A: 7}
			err := plugin.DecodeOptions(json.RawMessage(tt.raw), &o)
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case o.A != tt.want:
				t.Errorf("a = %d, want %d", o.A, tt.want)
			}
		})
	}
}
