package config

import (
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/scrimplb/scrimp/catalog"
)

// MaxAdminSocket is the longest admin-socket path: a unix socket address
// (sun_path) holds 108 bytes on Linux, and scrimp creates the socket in a
// temporary directory beside it first (admin.MaxSocketPath).
const MaxAdminSocket = 100

// Profiles are the failure-detection presets a cluster may use.
var Profiles = []string{"local", "lan", "wan"}

// Validate checks every field and returns every problem, each with its JSON
// path. It checks what the config package can know; plugin sections (a seed
// provider's, a generator's) are checked by the plugin when it is built, and
// the proxy kind lb.generator names (whether it exists, runs in lb.mode,
// has defaults for what is left empty) by proxy.Resolve.
func (c *Config) Validate() Problems {
	v := validator{file: c.File}
	role, err := catalog.ParseRole(c.Role)
	switch {
	case c.Role == "":
		v.add("role", `required: "lb" or "backend"`)
	case err != nil:
		v.add("role", err.Error())
	}
	if err := catalog.CheckNodeName(c.NodeName); err != nil {
		v.add("node-name", err.Error())
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		v.add("log-level", fmt.Sprintf("%q is not one of debug, info, warn, error", c.LogLevel))
	}
	if c.MetricsAddr != "" {
		if _, err := netip.ParseAddrPort(c.MetricsAddr); err != nil {
			v.add("metrics-addr", fmt.Sprintf("%q is not an IP:port such as \"127.0.0.1:9946\"", c.MetricsAddr))
		}
	}
	if c.MetricsTokenFile != "" && c.MetricsAddr == "" {
		v.add("metrics-token-file", "set, but metrics-addr is empty: there is no metrics endpoint to protect")
	}
	if c.AdminSocket != "" {
		switch {
		case !filepath.IsAbs(c.AdminSocket):
			v.add("admin-socket", fmt.Sprintf("%q is not an absolute path", c.AdminSocket))
		case len(c.AdminSocket) > MaxAdminSocket:
			v.add("admin-socket", fmt.Sprintf("%d bytes long; a unix socket path may have at most %d here", len(c.AdminSocket), MaxAdminSocket))
		}
	}
	if c.AdminAddr != "" {
		if _, err := netip.ParseAddrPort(c.AdminAddr); err != nil {
			v.add("admin-addr", fmt.Sprintf("%q is not an IP:port such as \"127.0.0.1:9947\"", c.AdminAddr))
		}
		if c.AdminTokenFile == "" {
			v.add("admin-token-file", "required with admin-addr: the TCP admin interface never runs without a token")
		}
	}
	c.Cluster.validate(&v)
	if c.Seed.Provider == "" {
		v.add("seed.provider", `required, e.g. "static"`)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Seed.Sections)) {
		if !isIdent(name) {
			v.add("seed."+name, "unknown field")
		}
	}
	if c.LB != nil {
		if role != catalog.RoleLB && role != catalog.RoleUnknown {
			v.add("lb", fmt.Sprintf("only allowed when role is \"lb\", and role is %q", c.Role))
		}
		c.LB.validate(&v)
		if c.LB.ACME != nil {
			c.LB.ACME.validate(&v, c.Seed.Provider)
		}
	} else if role == catalog.RoleLB {
		v.add("lb", `required when role is "lb"`)
	}
	if c.Backend != nil {
		if role != catalog.RoleBackend && role != catalog.RoleUnknown {
			v.add("backend", fmt.Sprintf("only allowed when role is \"backend\", and role is %q", c.Role))
		}
		c.Backend.validate(&v)
	} else if role == catalog.RoleBackend {
		v.add("backend", `required when role is "backend"`)
	}
	if c.XDS != nil {
		c.XDS.validate(&v)
	}
	return v.problems
}

func (c *Cluster) validate(v *validator) {
	if _, err := netip.ParseAddr(c.BindAddr); err != nil {
		v.add("cluster.bind-addr", fmt.Sprintf("%q is not an IP address", c.BindAddr))
	}
	v.port("cluster.bind-port", c.BindPort)
	if c.AdvertiseAddr != "" {
		if a, err := netip.ParseAddr(c.AdvertiseAddr); err != nil {
			v.add("cluster.advertise-addr", fmt.Sprintf("%q is not an IP address", c.AdvertiseAddr))
		} else if a.IsUnspecified() {
			v.add("cluster.advertise-addr", fmt.Sprintf("%s cannot be reached by other nodes", a))
		}
	}
	if c.AdvertisePort != 0 {
		v.port("cluster.advertise-port", c.AdvertisePort)
	}
	if !slices.Contains(Profiles, c.Profile) {
		v.add("cluster.profile", fmt.Sprintf("%q is not one of %s", c.Profile, strings.Join(Profiles, ", ")))
	}
	v.duration("cluster.join-backoff-min", c.JoinBackoffMin, true)
	v.duration("cluster.join-backoff-max", c.JoinBackoffMax, true)
	if c.JoinBackoffMax.Duration < c.JoinBackoffMin.Duration {
		v.add("cluster.join-backoff-max", "must not be less than join-backoff-min")
	}
	v.duration("cluster.rejoin-interval", c.RejoinInterval, true)
	v.duration("cluster.leave-timeout", c.LeaveTimeout, true)
	if len(c.Label) > 255 {
		v.add("cluster.label", fmt.Sprintf("%d bytes; at most 255", len(c.Label)))
	}
	if c.GossipVerifyIncoming && !c.GossipVerifyOutgoing {
		// The transition goes both off, then outgoing on, then both on.
		v.add("cluster.gossip-verify-incoming", "must be false while gossip-verify-outgoing is false (see docs/security.md)")
	}
	own, _ := netip.ParseAddr(c.AdvertiseAddr)
	if !own.IsValid() {
		own, _ = netip.ParseAddr(c.BindAddr)
	}
	ownAllowed := !own.IsValid() || own.IsUnspecified()
	for i, cidr := range c.AllowedCIDRs {
		p, err := netip.ParsePrefix(cidr)
		if err != nil {
			v.add(fmt.Sprintf("cluster.allowed-cidrs[%d]", i), fmt.Sprintf("%q is not a CIDR such as \"10.0.0.0/8\"", cidr))
			ownAllowed = true // no second problem about the list
			continue
		}
		ownAllowed = ownAllowed || p.Contains(own.Unmap())
	}
	if len(c.AllowedCIDRs) > 0 && !ownAllowed {
		// memberlist would refuse this node itself.
		v.add("cluster.allowed-cidrs", fmt.Sprintf("none of them holds this node's own address %s", own))
	}
}

func (l *LB) validate(v *validator) {
	if l.Generator == "" {
		v.add("lb.generator", `required, e.g. "nginx"`)
	}
	if a, err := netip.ParseAddr(l.ListenAddr); err != nil {
		v.add("lb.listen-addr", fmt.Sprintf("%q is not an IP address", l.ListenAddr))
	} else if a.Zone() != "" {
		v.add("lb.listen-addr", "zoned IPv6 addresses are not supported")
	}
	switch l.Mode {
	case "managed":
		if l.StateDir == "" {
			v.add("lb.state-dir", "required in managed mode")
		} else if strings.ContainsAny(l.StateDir, unsafePathChars) {
			// The path is written into the proxy's configuration.
			v.add("lb.state-dir", fmt.Sprintf("%q: must not contain white space or any of ;{}#\"'\\$", l.StateDir))
		}
	case "external":
		// Empty target and commands take the proxy kind's defaults; a
		// kind without them (template) is reported where the kinds are
		// known (proxy.Resolve), not here.
		if len(l.CheckCommand) > 0 && l.CheckCommand[0] == "" {
			v.add("lb.check-command[0]", "the program to run must not be empty")
		}
		if len(l.ReloadCommand) > 0 && l.ReloadCommand[0] == "" {
			v.add("lb.reload-command[0]", "the program to run must not be empty")
		}
	default:
		v.add("lb.mode", fmt.Sprintf("%q is not one of managed, external", l.Mode))
	}
	v.duration("lb.command-timeout", l.CommandTimeout, true)
	v.duration("lb.quiet-period", l.QuietPeriod, false)
	v.duration("lb.max-wait", l.MaxWait, true)
	if l.MaxWait.Duration < l.QuietPeriod.Duration {
		v.add("lb.max-wait", "must not be less than quiet-period")
	}
	v.duration("lb.resync-interval", l.ResyncInterval, true)
	v.duration("lb.retain-empty", l.RetainEmpty, false)
	v.duration("lb.checks.interval", l.Checks.Interval, true)
	v.duration("lb.checks.timeout", l.Checks.Timeout, true)
	if l.Checks.Timeout.Duration > l.Checks.Interval.Duration {
		v.add("lb.checks.timeout", "must not be longer than interval")
	}
	v.duration("lb.checks.hold-interval", l.Checks.HoldInterval, true)
	if l.Checks.HoldInterval.Duration < l.Checks.Interval.Duration {
		v.add("lb.checks.hold-interval", "must not be shorter than interval")
	}
	if l.Checks.Fall < 1 || l.Checks.Fall > 100 {
		v.add("lb.checks.fall", fmt.Sprintf("%d is not in 1-100", l.Checks.Fall))
	}
	if l.Checks.Rise < 1 || l.Checks.Rise > 100 {
		v.add("lb.checks.rise", fmt.Sprintf("%d is not in 1-100", l.Checks.Rise))
	}
	if g := l.MassLossGuard; g.Share <= 0 || g.Share >= 1 {
		v.add("lb.mass-loss-guard.share", fmt.Sprintf("%g is not between 0 and 1", g.Share))
	}
	if l.MassLossGuard.Min < 1 {
		v.add("lb.mass-loss-guard.min", "must be at least 1")
	}
	v.duration("lb.mass-loss-guard.window", l.MassLossGuard.Window, true)
	v.duration("lb.mass-loss-guard.grace", l.MassLossGuard.Grace, true)
	l.validateAdmission(v)
	for i, c := range l.TLS {
		path := fmt.Sprintf("lb.tls[%d]", i)
		if len(c.Domains) == 0 {
			v.add(path+".domains", "required: the domains this certificate serves")
		}
		for j, d := range c.Domains {
			if err := catalog.CheckDomain(d); err != nil {
				v.add(fmt.Sprintf("%s.domains[%d]", path, j), err.Error())
			}
		}
		for field, file := range map[string]string{"certificate": c.Certificate, "key": c.Key} {
			switch {
			case file == "":
				v.add(path+"."+field, "required: a PEM file path")
			case !filepath.IsAbs(file):
				v.add(path+"."+field, fmt.Sprintf("%q: must be an absolute path", file))
			case strings.ContainsAny(file, unsafePathChars):
				v.add(path+"."+field, fmt.Sprintf("%q: must not contain white space or any of ;{}#\"'\\$", file))
			}
		}
	}
}

func (b *Backend) validate(v *validator) {
	names := map[string]int{}
	for i, app := range b.Applications {
		path := fmt.Sprintf("backend.applications[%d]", i)
		app.validate(v, path)
		if j, dup := names[app.Name]; dup && app.Name != "" {
			v.add(path+".name", fmt.Sprintf("%q is also the name of applications[%d]", app.Name, j))
		}
		names[app.Name] = i
	}
	v.duration("backend.drain-timeout", b.DrainTimeout, false)
	v.duration("backend.drain-grace", b.DrainGrace, false)
	if strings.ContainsRune(b.ApplicationConfigDir, 0) {
		v.add("backend.application-config-dir", "must not contain NUL")
	}
	validateHealthCheckAddr(v, b.HealthCheckAddr)
}

// unsafePathChars may not appear in paths written into proxy configuration.
const unsafePathChars = " \t\n\r;{}#\"'\\$"

type validator struct {
	file     string
	problems Problems
}

func (v *validator) add(path, reason string) {
	v.problems = append(v.problems, Problem{File: v.file, Path: path, Reason: reason})
}

func (v *validator) port(path string, p int) {
	if err := catalog.CheckPort(p); err != nil {
		v.add(path, err.Error())
	}
}

func (v *validator) duration(path string, d Duration, positive bool) {
	if msg := d.check(); msg != "" {
		v.add(path, msg)
	} else if positive && d.Duration <= 0 {
		v.add(path, "must be positive")
	}
}

func isIdent(s string) bool {
	return s != "" && catalog.CheckName(s) == nil
}
