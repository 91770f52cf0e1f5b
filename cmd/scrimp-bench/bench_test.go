package main

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/e2e"
)

// TestBenchQuickSmoke runs the bench with --quick (real nginx, HAProxy and
// gossip on loopback) and checks the table: every row is there, and every
// row the quick run measures has a figure, not a failure. It takes about
// a minute, so it runs only with SCRIMP_BENCH_SMOKE=1.
func TestBenchQuickSmoke(t *testing.T) {
	if os.Getenv("SCRIMP_BENCH_SMOKE") != "1" {
		t.Skip("set SCRIMP_BENCH_SMOKE=1 to run the bench smoke test")
	}
	e2e.RequireBinary(t, "nginx")
	e2e.RequireBinary(t, "haproxy")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	var progress io.Writer = io.Discard
	if testing.Verbose() {
		progress = os.Stderr
	}
	table, err := runBench(ctx, progress, benchOptions{quick: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bench --quick took %s:\n%s", time.Since(start).Round(time.Millisecond), table)
	lines := strings.Split(table, "\n")
	for _, name := range allRowNames() {
		found := false
		for _, l := range lines {
			if !strings.HasPrefix(l, "| "+name+" |") {
				continue
			}
			found = true
			cells := strings.Split(l, " | ")
			if len(cells) != 4 {
				t.Errorf("malformed row %q", l)
				continue
			}
			measured := cells[2]
			if strings.HasPrefix(measured, "not measured") || strings.HasPrefix(measured, "mode unavailable") {
				continue
			}
			if strings.Contains(measured, "failed:") || !strings.ContainsAny(measured, "0123456789") {
				t.Errorf("row %q: no figure: %q", name, measured)
			}
		}
		if !found {
			t.Errorf("row %q missing from the table", name)
		}
	}
}
