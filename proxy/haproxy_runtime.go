package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scrimplb/scrimp/generator"
)

// HAProxy 2.6 server admin flags, as "show servers state" prints them
// (srv_admin_state; include/haproxy/server-t.h).
const (
	hapAdminForcedMaint    = 0x01 // "set server … state maint"
	hapAdminInheritedMaint = 0x02 // tracks a server in maintenance
	hapAdminForcedDrain    = 0x08 // "set server … state drain"
	hapAdminInheritedDrain = 0x10
	hapAdminResolverMaint  = 0x20 // its name does not resolve
	hapAdminMaint          = hapAdminForcedMaint | hapAdminInheritedMaint | hapAdminResolverMaint
	hapAdminDrain          = hapAdminForcedDrain | hapAdminInheritedDrain
)

// hapServerState is one line of "show servers state".
type hapServerState struct {
	addr   netip.Addr
	port   int
	admin  int
	weight int // the user weight, which "set server … weight" sets
}

// hapCLILine bounds one line of CLI commands: HAProxy reads a command
// line into one buffer (tune.bufsize, 16 KiB by default).
const hapCLILine = 8 << 10

// Update changes the running HAProxy's server slots to rt.Slots through
// the runtime API (the master CLI, forwarding to the current worker):
// "set server B/S addr A port P", "weight W" and "state ready|drain|maint",
// only for the slots whose running state differs, in lines of many
// commands. It then reads the state back and fails unless every slot
// matches; the caller reloads then. On success it writes config as
// haproxy.cfg, so that a restart starts from the same slots, without a
// reload. Old workers still finishing their connections after a reload get
// the same commands, best effort, so that their long-lived connections
// stop using backends that left.
//
// Update must only be given a configuration whose skeleton is the running
// one's (same sections and slots); a slot the running HAProxy does not
// have is an error. Like Apply it is not safe for concurrent use.
func (h *ManagedHAProxy) Update(ctx context.Context, config []byte, rt *generator.Runtime) error {
	switch {
	case h.sup.isClosed():
		return h.sup.errClosed()
	case h.sup.current() == nil:
		return errors.New("proxy: haproxy update: haproxy is not running")
	case rt == nil:
		return errors.New("proxy: haproxy update: the configuration has no slots")
	}
	start := time.Now()
	procs, err := h.showProc(ctx)
	if err != nil {
		return fmt.Errorf("proxy: haproxy update: %w", err)
	}
	worker, ok := procs.newest()
	if !ok {
		return errors.New("proxy: haproxy update: no current worker")
	}
	// needed reads the worker's servers and returns the commands that
	// would bring them to rt.Slots.
	needed := func() ([]string, error) {
		state, err := h.serverState(ctx, worker)
		if err != nil {
			return nil, err
		}
		cmds, err := slotCommands(rt.Slots, state)
		if err != nil {
			return nil, fmt.Errorf("proxy: haproxy update: %w", err)
		}
		return cmds, nil
	}
	cmds, err := needed()
	if err != nil {
		return err
	}
	if len(cmds) > 0 {
		if err := h.runCommands(ctx, worker, cmds); err != nil {
			return err
		}
		for _, old := range slices.Concat(procs.old, slices.DeleteFunc(slices.Clone(procs.workers), func(w int) bool { return w == worker })) {
			if err := h.runCommands(ctx, old, cmds); err != nil {
				h.log.Debug("old worker did not take the slot changes", "worker", old, "err", err)
			}
		}
		left, err := needed()
		if err != nil {
			return err
		}
		if len(left) > 0 {
			return fmt.Errorf("proxy: haproxy update: %d slot changes did not take, e.g. %q", len(left), left[0])
		}
	}
	if h.sup.isClosed() {
		return h.sup.errClosed()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !bytes.Equal(h.current, config) {
		if err := WriteAtomic(h.conf, config, 0o644); err != nil {
			return fmt.Errorf("proxy: haproxy update: slots changed but haproxy.cfg was not written: %w", err)
		}
		h.current = config
	}
	h.updates++
	if len(cmds) > 0 {
		h.log.Info("haproxy updated without a reload", "worker", worker, "commands", len(cmds), "took", time.Since(start).Round(time.Microsecond))
	}
	return nil
}

// Updates returns how many Updates succeeded.
func (h *ManagedHAProxy) Updates() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.updates
}

// runCommands sends cmds to worker through the master CLI, as few lines
// of "@!PID command; @!PID command…" as fit the CLI's buffer.
func (h *ManagedHAProxy) runCommands(ctx context.Context, worker int, cmds []string) error {
	prefix := "@!" + strconv.Itoa(worker) + " "
	var line strings.Builder
	flush := func() error {
		if line.Len() == 0 {
			return nil
		}
		_, err := h.masterCommand(ctx, line.String())
		line.Reset()
		if err != nil {
			return fmt.Errorf("proxy: haproxy update: %w", err)
		}
		return nil
	}
	for _, c := range cmds {
		if line.Len() > 0 && line.Len()+2+len(prefix)+len(c) > hapCLILine {
			if err := flush(); err != nil {
				return err
			}
		}
		if line.Len() > 0 {
			line.WriteString("; ")
		}
		line.WriteString(prefix)
		line.WriteString(c)
	}
	return flush()
}

// serverState reads "show servers state" from worker.
func (h *ManagedHAProxy) serverState(ctx context.Context, worker int) (map[string]hapServerState, error) {
	out, err := h.masterCommandLimit(ctx, "@!"+strconv.Itoa(worker)+" show servers state", 256<<20)
	if err != nil {
		return nil, fmt.Errorf("proxy: haproxy update: %w", err)
	}
	state, err := parseServersState(out)
	if err != nil {
		return nil, fmt.Errorf("proxy: haproxy update: worker %d: %w", worker, err)
	}
	return state, nil
}

// parseServersState reads HAProxy 2.6's "show servers state" (format 1):
//
//	1
//	# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight … srv_fqdn srv_port …
//	3 scrimp_web 1 s1 10.0.0.1 2 4 1 1 0 1 0 2 6 0 0 1 - 8080 - 0 0 - - 0
//
// into "backend/server" → state.
func parseServersState(out string) (map[string]hapServerState, error) {
	state := map[string]hapServerState{}
	version := false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case len(f) == 0 || strings.HasPrefix(f[0], "#"):
		case !version:
			if len(f) != 1 || f[0] != "1" {
				return nil, fmt.Errorf("show servers state: format %q, want 1", strings.TrimSpace(line))
			}
			version = true
		default:
			if len(f) < 19 {
				return nil, fmt.Errorf("show servers state: short line %q", strings.TrimSpace(line))
			}
			var s hapServerState
			var err error
			if s.addr, err = netip.ParseAddr(f[4]); err != nil {
				// A slot never set has its configured address; anything
				// unparsable cannot be the address a slot wants.
				s.addr = netip.Addr{}
			}
			admin, err1 := strconv.Atoi(f[6])
			weight, err2 := strconv.Atoi(f[7])
			port, err3 := strconv.Atoi(f[18])
			if err := errors.Join(err1, err2, err3); err != nil {
				return nil, fmt.Errorf("show servers state: line %q: %w", strings.TrimSpace(line), err)
			}
			s.admin, s.weight, s.port = admin, weight, port
			state[f[1]+"/"+f[3]] = s
		}
	}
	if !version {
		return nil, fmt.Errorf("show servers state: no format line in %q", out)
	}
	return state, nil
}

// slotCommands returns the runtime API commands that bring the running
// servers to slots. A draining slot is satisfied by drain or maintenance:
// both take no new requests (and a reload renders it disabled).
func slotCommands(slots []generator.Slot, state map[string]hapServerState) ([]string, error) {
	var cmds []string
	for _, s := range slots {
		key := s.Backend + "/" + s.Server
		cur, ok := state[key]
		if !ok {
			return nil, fmt.Errorf("server %s is not in the running configuration", key)
		}
		maint, drain := cur.admin&hapAdminMaint != 0, cur.admin&hapAdminDrain != 0
		switch s.State {
		case generator.SlotMaint:
			if !maint {
				cmds = append(cmds, "set server "+key+" state maint")
			}
		case generator.SlotDrain:
			if !maint && !drain {
				cmds = append(cmds, "set server "+key+" state drain")
			}
		case generator.SlotReady:
			if cur.addr != s.Addr.Addr() || cur.port != int(s.Addr.Port()) {
				cmds = append(cmds, fmt.Sprintf("set server %s addr %s port %d", key, s.Addr.Addr(), s.Addr.Port()))
			}
			if cur.weight != s.Weight {
				cmds = append(cmds, fmt.Sprintf("set server %s weight %d", key, s.Weight))
			}
			if maint || drain {
				cmds = append(cmds, "set server "+key+" state ready")
			}
		default:
			return nil, fmt.Errorf("server %s: unknown slot state %q", key, s.State)
		}
	}
	return cmds, nil
}
