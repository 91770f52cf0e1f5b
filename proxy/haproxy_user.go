package proxy

import (
	"fmt"
	"os/user"
	"strings"
)

// AsRoot reports whether HAProxy is started as root, because scrimp runs
// as root: the standalone configuration must then make its workers switch
// to an unprivileged user (generator.Input.AsRoot). HAProxy, unlike nginx,
// keeps root in its workers unless told otherwise.
func (h *ManagedHAProxy) AsRoot() bool { return h.asRoot }

// checkWorkerUser is Apply's check of a configuration HAProxy would start
// as root: the user and group its global section names must exist and not
// be root, so that no worker serves traffic as root and a missing account
// is reported by name rather than by HAProxy's alert. A configuration
// that names no user is not refused (a hand-made one, say) but logged
// once.
func (h *ManagedHAProxy) checkWorkerUser(config []byte) error {
	name, group := haproxyGlobalAccount(config)
	if name == "" {
		if !h.warnedRoot {
			h.log.Warn("haproxy starts as root and its configuration names no user: its workers run as root; render it with generator.Input.AsRoot")
			h.warnedRoot = true
		}
		return nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("proxy: haproxy starts as root and its workers would switch to user %q: %w (the haproxy package creates it; or set lb.generator-options.user)", name, err)
	}
	if u.Uid == "0" {
		return fmt.Errorf("proxy: haproxy's workers would switch to user %q, which is root (uid 0): refusing", name)
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return fmt.Errorf("proxy: haproxy starts as root and its workers would switch to group %q: %w (the haproxy package creates it; or set lb.generator-options.group)", group, err)
		}
		if g.Gid == "0" {
			return fmt.Errorf("proxy: haproxy's workers would switch to group %q, which is root (gid 0): refusing", group)
		}
	}
	return nil
}

// haproxyGlobalAccount returns the names the "user" and "group" lines of
// config's global section give, "" for one that is absent.
func haproxyGlobalAccount(config []byte) (name, group string) {
	inGlobal := false
	for line := range strings.Lines(string(config)) {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' { // a section keyword
			inGlobal = f[0] == "global"
			continue
		}
		if !inGlobal || len(f) < 2 {
			continue
		}
		switch f[0] {
		case "user":
			name = f[1]
		case "group":
			group = f[1]
		}
	}
	return name, group
}
