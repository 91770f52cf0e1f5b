package main

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/e2e"
)

// TestIdleScale runs idleScaleRows on its own (real scrimp processes and
// nginx on loopback; a minute or two), only with SCRIMP_BENCH_IDLE=1.
// SCRIMP_BENCH_IDLE_BACKENDS (default 150) and SCRIMP_BENCH_IDLE_WINDOW
// (default 30s) change its size; SCRIMP_BIN names the scrimp binary
// (default: built with go build).
func TestIdleScale(t *testing.T) {
	if os.Getenv("SCRIMP_BENCH_IDLE") != "1" {
		t.Skip("set SCRIMP_BENCH_IDLE=1 to measure the idle cost at scale")
	}
	e2e.RequireBinary(t, "nginx")
	backends, window := 150, 30*time.Second
	if v := os.Getenv("SCRIMP_BENCH_IDLE_BACKENDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("SCRIMP_BENCH_IDLE_BACKENDS: %v", err)
		}
		backends = n
	}
	if v := os.Getenv("SCRIMP_BENCH_IDLE_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SCRIMP_BENCH_IDLE_WINDOW: %v", err)
		}
		window = d
	}
	if v := os.Getenv("SCRIMP_BENCH_IDLE_LB"); v != "" {
		idleScaleLBExtra = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b := &bencher{o: benchOptions{scrimp: os.Getenv("SCRIMP_BIN"), verbose: testing.Verbose() && os.Getenv("SCRIMP_BENCH_VERBOSE") == "1"},
		progress: os.Stderr, log: slog.New(slog.DiscardHandler), start: time.Now()}
	defer func() {
		for _, f := range b.cleanup {
			f()
		}
	}()
	for _, r := range b.idleScaleRows(ctx, "127.0.236", backends, window) {
		t.Logf("| %s | %s | %s | %s |", r.name, r.setup, r.result, r.target)
	}
}
