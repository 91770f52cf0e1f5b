package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

const rowChart = "per-backend request rate, 3 → 10 → kill → 2 (SVG)"

func init() {
	providers = append(providers, rowProvider{
		group: "chart",
		names: []string{rowChart},
		run:   func(ctx context.Context, b *bencher) { b.chartRow(ctx, "127.0.120") },
	})
}

// chartRow runs the classic scaling experiment through managed nginx
// under steady load (4 clients, a new connection per request): 3
// backends, 7 more join, one is killed, 7 stop gracefully at once
// leaving 2. It writes each backend's request rate over time as an SVG
// (--svg) and reports the failed requests.
func (b *bencher) chartRow(ctx context.Context, netPrefix string) {
	// Times of the steps from the start of the load.
	step := 4 * time.Second
	if b.o.quick {
		step = 2 * time.Second
	}
	setup := fmt.Sprintf("nginx, 4 clients, a step every %s, buckets of 500 ms", step)
	target := "(picture; 0 failed but for the kill)"
	res, err := func() (string, error) {
		c, notMeasured, err := b.loadCluster(benchSetup{"nginx", "nginx", nil}, netPrefix, "scale", 3)
		if err != nil {
			return "", err
		}
		if notMeasured != "" {
			return notMeasured, nil
		}
		defer c.close()
		log := startRespLog(4, 10*time.Millisecond, c.get)
		start := time.Now()
		var events []chartEvent
		mark := func(label string) {
			events = append(events, chartEvent{X: time.Since(start).Seconds(), Label: label})
		}
		wait := func(until time.Duration) error {
			select {
			case <-time.After(time.Until(start.Add(until))):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		run := func() error {
			if err := wait(step); err != nil {
				return err
			}
			mark("7 join")
			for i := 3; i < 10; i++ {
				if _, err := c.addBackend(fmt.Sprintf("scale-%d", i+1), fmt.Sprintf("%s.%d", netPrefix, i+2)); err != nil {
					return err
				}
			}
			if err := wait(3 * step); err != nil {
				return err
			}
			victim := c.backends[3]
			mark("kill " + victim.name)
			victim.kill()
			if err := wait(5 * step); err != nil {
				return err
			}
			var leaving []*benchBackend
			for _, be := range c.backends {
				if !be.gone && be.name != "scale-1" && be.name != "scale-2" {
					leaving = append(leaving, be)
				}
			}
			mark(fmt.Sprintf("%d stop", len(leaving)))
			c.stopAll(leaving...)
			return wait(7 * step)
		}
		runErr := run()
		end := time.Now()
		rs := log.Stop()
		if runErr != nil {
			return "", runErr
		}
		failed := 0
		var firstFail []string
		for _, r := range rs {
			if r.Err != nil {
				failed++
				if len(firstFail) < 3 {
					firstFail = append(firstFail, fmt.Sprintf("%+d ms: %v", r.At.Sub(start).Milliseconds(), r.Err))
				}
			}
		}
		for _, f := range firstFail {
			fmt.Fprintf(b.progress, "bench: %s: failed request at %s\n", rowChart, f)
		}
		ser := rateSeries(rs, start, end, 500*time.Millisecond)
		// Backends in name order, failures last.
		slices.SortStableFunc(ser, func(x, y series) int { return compareNames(x.Name, y.Name) })
		var buf bytes.Buffer
		if err := writeSVG(&buf, chart{Title: "Requests per second per backend through managed nginx: 3 → 10 → kill → 2",
			XLabel: "seconds", YLabel: "requests per second", Series: ser, Events: events}); err != nil {
			return "", err
		}
		if dir := filepath.Dir(b.o.svg); dir != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return "", fmt.Errorf("--svg: %w", err)
			}
		}
		if err := os.WriteFile(b.o.svg, buf.Bytes(), 0o644); err != nil {
			return "", fmt.Errorf("--svg: %w", err)
		}
		abs, _ := filepath.Abs(b.o.svg)
		b.note("Chart of per-backend request rate (3 → 10 → kill → 2): " + abs)
		return fmt.Sprintf("%d requests, %d failed, %d backends drawn; written to %s", len(rs), failed, len(ser), b.o.svg), nil
	}()
	if err != nil {
		res = failed(err)
	}
	b.add(rowChart, setup, res, target)
}

// compareNames orders "scale-2" before "scale-10" (a number suffix
// compares as a number), and "failed" after everything.
func compareNames(a, b string) int {
	if (a == "failed") != (b == "failed") {
		if a == "failed" {
			return 1
		}
		return -1
	}
	pa, na := splitNum(a)
	pb, nb := splitNum(b)
	if pa != pb {
		if pa < pb {
			return -1
		}
		return 1
	}
	return na - nb
}

// splitNum splits "scale-10" into "scale-" and 10.
func splitNum(s string) (string, int) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	n := 0
	for _, r := range s[i:] {
		n = n*10 + int(r-'0')
		if n > 1<<30 {
			break
		}
	}
	return s[:i], n
}
