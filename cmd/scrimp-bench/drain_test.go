package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/e2e"
)

// TestMassDrainRow runs the mass-drain row alone (real nginx, in-process
// nodes on loopback) and prints it. It takes a minute or so with 150
// backends, so it runs only with SCRIMP_BENCH_DRAIN set to the number of
// backends to stop, e.g. SCRIMP_BENCH_DRAIN=150.
func TestMassDrainRow(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("SCRIMP_BENCH_DRAIN"))
	if err != nil || n <= 0 {
		t.Skip("set SCRIMP_BENCH_DRAIN=150 to run the mass-drain row")
	}
	e2e.RequireBinary(t, "nginx")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var progress io.Writer = io.Discard
	if testing.Verbose() {
		progress = os.Stderr
	}
	b := &bencher{progress: progress, log: slog.New(slog.DiscardHandler), start: time.Now()}
	b.massDrainRow(ctx, "nginx", "127.0.110", n)
	for _, r := range b.rows {
		t.Logf("| %s | %s | %s | %s |", r.name, r.setup, r.result, r.target)
	}
}
