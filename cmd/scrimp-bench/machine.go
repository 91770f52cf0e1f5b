package main

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"time"
)

// machineNote measures two costs of the machine that the idle and join
// rows depend on more than on scrimp's code, so that tables from two
// machines can be compared (docs/performance.md): the CPU a timer wakeup
// of an otherwise idle Go process costs, and how long the scrimp binary
// takes to start and exit. It runs before any row, while this process is
// idle, and takes about five seconds.
func (b *bencher) machineNote(ctx context.Context) string {
	var wakeS, startS string
	if wake, err := wakeupCost(ctx); err != nil {
		wakeS = "wakeup cost not measured: " + err.Error()
	} else {
		wakeS = fmt.Sprintf("%.0f µs of CPU per timer wakeup of an idle Go process", float64(wake)/float64(time.Microsecond))
	}
	exe, err := b.scrimpBinary()
	var d time.Duration
	if err == nil {
		d, err = startTime(ctx, exe)
	}
	if err != nil {
		startS = "scrimp's start not measured: " + err.Error()
	} else {
		startS = fmt.Sprintf("`scrimp help` runs in %s (median of 5)", ms(d))
	}
	return "Machine: " + wakeS + "; " + startS + "."
}

// wakeupCost returns this process's CPU per wakeup of a 50 ms ticker
// (idle processes wake up about that often), over two seconds, less its
// CPU over two idle seconds.
func wakeupCost(ctx context.Context) (time.Duration, error) {
	over := func(tick time.Duration) (time.Duration, int, error) {
		c0, _, err := procStat()
		if err != nil {
			return 0, 0, err
		}
		end := time.NewTimer(2 * time.Second)
		defer end.Stop()
		var tc <-chan time.Time
		if tick > 0 {
			t := time.NewTicker(tick)
			defer t.Stop()
			tc = t.C
		}
		n := 0
		for {
			select {
			case <-ctx.Done():
				return 0, 0, ctx.Err()
			case <-tc:
				n++
			case <-end.C:
				c1, _, err := procStat()
				return c1 - c0, n, err
			}
		}
	}
	idle, _, err := over(0)
	if err != nil {
		return 0, err
	}
	busy, n, err := over(50 * time.Millisecond)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, fmt.Errorf("the ticker never fired")
	}
	return max(busy-idle, 0) / time.Duration(n), nil
}

// startTime returns the median wall time of five runs of `exe help`.
func startTime(ctx context.Context, exe string) (time.Duration, error) {
	var runs []time.Duration
	for range 5 {
		start := time.Now()
		if err := exec.CommandContext(ctx, exe, "help").Run(); err != nil {
			return 0, fmt.Errorf("%s help: %w", exe, err)
		}
		runs = append(runs, time.Since(start))
	}
	slices.Sort(runs)
	return runs[len(runs)/2], nil
}
