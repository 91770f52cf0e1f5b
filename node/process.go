package node

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"
)

// trimAt are the times after startup at which a process drops the pages
// of its executable that it touched so far (see TrimStartupMemory): at
// 10 s package initialization, flag and configuration parsing, the join
// and the first render are over; in a large cluster the exchanges of
// state that follow a join (and a load balancer's first passes) go on
// for a while, touching code that an idle node does not run again, so
// the trim is repeated once they are surely over.
var trimAt = []time.Duration{10 * time.Second, time.Minute, 5 * time.Minute}

// TrimStartupMemory waits until each of trimAt (returning at once when
// ctx is done) and then tells the kernel that the process no longer needs
// the pages of its executable's read-only mappings (code and constant
// data) that it has touched so far. It returns after the last one.
//
// Why: the scrimp binary carries every role's code and the package
// initialization of large dependencies (Envoy's protobuf descriptors for
// xDS, the AWS SDK's endpoint tables for S3 seeds, gRPC), which touches
// pages all over a 50 MB executable at startup; the kernel maps them in
// 64 kB blocks (fault-around), so an idle backend keeps about 23 MB of
// its executable resident although it runs a few hundred kB of it. After
// the trim, the pages it runs again come back on first use from the page
// cache (a minor fault, no disk read), so its resident set is what it
// uses. Nothing else changes: the mappings are read-only and backed by
// the file, so their contents are never lost. On systems other than Linux
// it does nothing.
//
// It acts on the whole process: call it from a process that runs one
// node (cmd/scrimp), never from one that runs several (tests, the bench).
func TrimStartupMemory(ctx context.Context, log *slog.Logger) {
	start := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	for _, at := range trimAt {
		t.Reset(time.Until(start.Add(at)))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Garbage (configuration parsing, the join's state exchanges) is
		// collected and its memory returned now, not over the
		// scavenger's next minutes.
		debug.FreeOSMemory()
		released, err := releaseExecutablePages()
		if err != nil {
			log.Debug("could not release the executable's startup pages", "err", err)
			return
		}
		log.Debug("released the executable's startup pages", "bytes", released, "after", at)
	}
}
