package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestPct(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		out := make([]time.Duration, len(vs))
		for i, v := range vs {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{"one sample", ms(7), .95, 7 * time.Millisecond},
		{"median of odd count", ms(5, 1, 3), .5, 3 * time.Millisecond},
		{"max", ms(5, 1, 9, 3), 1, 9 * time.Millisecond},
		{"min", ms(5, 1, 9, 3), 0, time.Millisecond},
		{"p95 of 20 is the 19th", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20), .95, 19 * time.Millisecond},
		{"p95 of 10 is the largest", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), .95, 10 * time.Millisecond},
		{"negative values", ms(-20, -5, 3), .5, -5 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := slices.Clone(tc.in)
			if got := pct(tc.in, tc.p); got != tc.want {
				t.Errorf("pct(%v, %v) = %v, want %v", tc.in, tc.p, got, tc.want)
			}
			if !slices.Equal(before, tc.in) {
				t.Errorf("pct reordered its input: %v", tc.in)
			}
		})
	}
}

func TestNiceStep(t *testing.T) {
	tests := []struct {
		name string
		span float64
		n    int
		want float64
	}{
		{"seconds", 28, 10, 5},
		{"rates", 210, 6, 50},
		{"small", 0.7, 7, 0.1},
		{"exact power", 100, 10, 10},
		{"empty span", 0, 5, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := niceStep(tc.span, tc.n); got != tc.want {
				t.Errorf("niceStep(%v, %d) = %v, want %v", tc.span, tc.n, got, tc.want)
			}
		})
	}
}

func TestRateSeries(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	rs := []response{
		{At: at(100), Backend: "a"}, {At: at(200), Backend: "b"}, {At: at(400), Backend: "a"},
		{At: at(600), Backend: "a"}, {At: at(700), Err: errors.New("refused")},
		{At: at(1200), Backend: "b"}, // in the partial last bucket: dropped
		{At: at(-5), Backend: "a"},   // before the start: dropped
	}
	got := rateSeries(rs, start, at(1100), 500*time.Millisecond)
	want := []series{
		{Name: "a", Points: []point{{0.25, 4}, {0.75, 2}}},
		{Name: "b", Points: []point{{0.25, 2}, {0.75, 0}}},
		{Name: "failed", Points: []point{{0.25, 0}, {0.75, 2}}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d series, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].Name != want[i].Name || !slices.Equal(got[i].Points, want[i].Points) {
			t.Errorf("series %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if rateSeries(rs, start, start, time.Second) != nil {
		t.Error("an empty window gave series")
	}
}

func TestLastFrom(t *testing.T) {
	t0 := time.Unix(100, 0)
	rs := []response{{At: t0, Backend: "a"}, {At: t0.Add(time.Second), Backend: "b"}, {At: t0.Add(2 * time.Second), Backend: "a"}}
	if got, ok := lastFrom(rs, "a"); !ok || !got.Equal(t0.Add(2*time.Second)) {
		t.Errorf("lastFrom(a) = %v, %v", got, ok)
	}
	if _, ok := lastFrom(rs, "c"); ok {
		t.Error("lastFrom(c) found an answer")
	}
}

func TestCompareNames(t *testing.T) {
	names := []string{"failed", "scale-10", "scale-2", "other", "scale-1"}
	slices.SortFunc(names, compareNames)
	want := []string{"other", "scale-1", "scale-2", "scale-10", "failed"}
	if !slices.Equal(names, want) {
		t.Errorf("sorted %v, want %v", names, want)
	}
}

func TestRoutedNames(t *testing.T) {
	tests := []struct {
		name, cfg string
		want      []string
	}{
		{"nginx", "upstream web {\n    server 127.0.0.2:8080 weight=1 max_fails=1 fail_timeout=10s; # be-1\n    server 127.0.0.3:8080 weight=1 max_fails=1 fail_timeout=10s; # be-2\n}\n    listen 127.0.0.1:80; # web\n",
			[]string{"be-1", "be-2"}},
		{"haproxy runtime slots", "backend scrimp_web\n  server s1 127.0.0.2:8080 check weight 1 # be-1\n  server s2 127.0.0.1:1 disabled # free\n  server s3 127.0.0.3:8080 check disabled # be-2\n",
			[]string{"be-1"}},
		{"haproxy plain", "backend scrimp_web\n  server be-1 127.0.0.2:8080 check\n", []string{"be-1"}},
		{"nothing", "global\n  daemon\n", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := routedNames([]byte(tc.cfg))
			var names []string
			for n := range got {
				names = append(names, n)
			}
			slices.Sort(names)
			if !slices.Equal(names, tc.want) {
				t.Errorf("routed %v, want %v", names, tc.want)
			}
		})
	}
}

func TestParseGroups(t *testing.T) {
	tests := []struct {
		name    string
		lists   []string
		want    []string
		wantErr string
	}{
		{"empty selects all", []string{"", ""}, nil, ""},
		{"list", []string{"gossip, chart", ""}, []string{"chart", "gossip"}, ""},
		{"only adds", []string{"seqjoin", "render"}, []string{"render", "seqjoin"}, ""},
		{"unknown", []string{"gossip,nope", ""}, nil, "unknown group nope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseGroups(tc.lists...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for g := range got {
				names = append(names, g)
			}
			slices.Sort(names)
			if !slices.Equal(names, tc.want) {
				t.Errorf("groups %v, want %v", names, tc.want)
			}
		})
	}
}

// TestProvidersRegistered checks that every provider's group and rows
// are known to --rows and to the table's order.
func TestProvidersRegistered(t *testing.T) {
	names := allRowNames()
	for _, p := range providers {
		if !slices.Contains(allGroups(), p.group) {
			t.Errorf("group %q not offered", p.group)
		}
		for _, n := range p.names {
			if rowOrder(names, n) == len(names) {
				t.Errorf("row %q of group %q has no place in the table", n, p.group)
			}
		}
	}
	if rowOrder(names, "no such row") != len(names) {
		t.Error("an unknown row does not go last")
	}
}

// TestWriteSVG compares the chart of a fixed run with testdata; -update
// rewrites it.
func TestWriteSVG(t *testing.T) {
	c := chart{
		Title: "Requests per second per backend: 3 → 10 <kill> & 2", XLabel: "seconds", YLabel: "requests per second",
		Series: []series{
			{Name: "scale-1", Points: []point{{0.5, 120}, {1.5, 118}, {2.5, 60}, {3.5, 200}}},
			{Name: "scale-2", Points: []point{{0.5, 0}, {1.5, 0}, {2.5, 58}, {3.5, 0}}},
			{Name: "failed", Points: []point{{0.5, 0}, {1.5, 2}, {2.5, 0}, {3.5, 0}}},
		},
		Events: []chartEvent{{X: 2, Label: "1 join"}, {X: 3, Label: "kill scale-2"}},
	}
	var buf bytes.Buffer
	if err := writeSVG(&buf, c); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "chart.svg")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestWriteSVG -update to write it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("SVG differs from %s (go test -run TestWriteSVG -update rewrites it):\n%s", golden, buf.String())
	}
	for _, s := range []string{"&lt;kill&gt; &amp; 2", "<polyline", ">scale-2</text>", "stroke-dasharray"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("SVG lacks %q", s)
		}
	}
}
