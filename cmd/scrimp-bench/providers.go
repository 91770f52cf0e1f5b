package main

import (
	"context"
	"time"
)

// The idle-cost and mass-drain rows (idle.go, drain.go), registered as row
// groups "idlescale" and "massdrain".
func init() {
	providers = append(providers,
		rowProvider{
			group: "idlescale",
			names: []string{rowIdleLB, rowIdleBackend},
			run: func(ctx context.Context, b *bencher) {
				n, window := 150, 30*time.Second
				if b.o.quick {
					n, window = 30, 10*time.Second
				}
				// idleScaleRows prints its rows itself.
				b.rows = append(b.rows, b.idleScaleRows(ctx, "127.0.236", n, window)...)
			},
		},
		rowProvider{
			group: "massdrain",
			names: []string{rowMassDrain},
			run: func(ctx context.Context, b *bencher) {
				n := 150
				if b.o.quick {
					n = 30
				}
				b.massDrainRow(ctx, "nginx", "127.0.110", n)
			},
		},
	)
}
