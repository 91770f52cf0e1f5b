package cluster

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/memberlist"

	"github.com/scrimplb/scrimp/catalog"
)

// delegate hands memberlist this node's metadata. memberlist calls it with
// its own locks held, so every method returns at once.
type delegate struct{ c *Cluster }

var _ memberlist.Delegate = delegate{}

// NodeMeta returns the beacon. Its size is bounded by construction
// (catalog.MaxAcks), far below memberlist's limit.
func (d delegate) NodeMeta(limit int) []byte {
	m := *d.c.meta.Load()
	if len(m) > limit {
		// Unreachable; returning nothing beats memberlist's panic.
		return nil
	}
	return m
}

// NotifyMsg receives application-set requests and transfers and drain
// acknowledgements (messages.go); it decodes and queues them for the
// worker, never blocking memberlist.
func (d delegate) NotifyMsg(b []byte)                       { d.c.handleMsg(b) }
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState is what this node adds to a push/pull: on a backend's join
// (or rejoin), its application set, so that the load balancer it joins
// through has it at once instead of asking for it and waiting for an
// answer on a new connection. Other push/pulls carry nothing.
func (d delegate) LocalState(join bool) []byte {
	if !join || d.c.role != catalog.RoleBackend {
		return nil
	}
	d.c.mu.Lock()
	msg := stateMsg{From: d.c.self, Digest: d.c.digest, Set: d.c.state}
	d.c.mu.Unlock()
	if msg.Set == nil {
		return nil
	}
	return encodeMessage(msg)
}

// MergeRemoteState takes, on a load balancer, the application set a
// joining backend sent with its push/pull. memberlist has merged the
// push/pull's members first, so the set is checked against the digest the
// member gossips exactly as a fetched one is (receiveState); anything else
// is ignored.
func (d delegate) MergeRemoteState(buf []byte, join bool) {
	if d.c.role != catalog.RoleLB || len(buf) == 0 {
		return
	}
	if join {
		defer d.c.stats.joinStates.Add(1)
	}
	msg, err := decodeMessage(buf)
	if err != nil {
		d.c.stats.malformedMessages.Add(1)
		return
	}
	if st, ok := msg.(stateMsg); ok && d.c.receiveState(st) {
		d.c.stats.joinSets.Add(1)
	}
}

// events turns memberlist's callbacks into snapshot updates. memberlist
// calls these while holding its state lock: they decode, record and signal,
// and never block (the signal is a non-blocking send).
type events struct{ c *Cluster }

var _ memberlist.EventDelegate = events{}

func (e events) NotifyJoin(n *memberlist.Node)   { e.c.upsert(n, true) }
func (e events) NotifyUpdate(n *memberlist.Node) { e.c.upsert(n, false) }
func (e events) NotifyLeave(n *memberlist.Node)  { e.c.remove(n) }

// newStdLogger adapts memberlist's "[LEVEL] memberlist: msg" lines to slog,
// keeping its debug chatter at debug level.
func newStdLogger(l *slog.Logger) *log.Logger {
	return log.New(logWriter{l}, "", 0)
}

type logWriter struct{ l *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	msg := string(bytes.TrimSpace(p))
	level := slog.LevelInfo
	for prefix, lv := range map[string]slog.Level{
		"[DEBUG] ": slog.LevelDebug, "[INFO] ": slog.LevelInfo,
		"[WARN] ": slog.LevelWarn, "[ERR] ": slog.LevelError,
	} {
		if len(msg) >= len(prefix) && msg[:len(prefix)] == prefix {
			level, msg = lv, msg[len(prefix):]
			break
		}
	}
	if strings.Contains(msg, "use of closed network connection") {
		level = slog.LevelDebug // memberlist racing its own shutdown
	}
	w.l.Log(context.Background(), level, msg)
	return len(p), nil
}
