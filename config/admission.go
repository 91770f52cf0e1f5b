package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/scrimplb/scrimp/catalog"
)

// PortRange is one listen port or an inclusive range of them. In JSON it
// is a number (443) or a string: "443" or "1024-65535".
type PortRange string

// UnmarshalJSON accepts a number or a string; Validate checks the value.
func (p *PortRange) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] != '"' {
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return err
		}
		*p = PortRange(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*p = PortRange(s)
	return nil
}

// MarshalJSON writes a single port as a number, a range as a string.
func (p PortRange) MarshalJSON() ([]byte, error) {
	if n, err := strconv.Atoi(string(p)); err == nil {
		return json.Marshal(n)
	}
	return json.Marshal(string(p))
}

// Bounds returns the first and last port of the range.
func (p PortRange) Bounds() (lo, hi int, err error) {
	s := strings.TrimSpace(string(p))
	loText, hiText, isRange := strings.Cut(s, "-")
	if !isRange {
		hiText = loText
	}
	lo, err1 := strconv.Atoi(strings.TrimSpace(loText))
	hi, err2 := strconv.Atoi(strings.TrimSpace(hiText))
	switch {
	case err1 != nil || err2 != nil:
		return 0, 0, fmt.Errorf("%q is not a port or a range \"lo-hi\" such as \"1024-65535\"", string(p))
	case catalog.CheckPort(lo) != nil || catalog.CheckPort(hi) != nil:
		return 0, 0, fmt.Errorf("%q: ports are in 1-65535", string(p))
	case lo > hi:
		return 0, 0, fmt.Errorf("%q: the range ends before it starts", string(p))
	}
	return lo, hi, nil
}

// AppRule allows members to advertise the applications matching all of
// its fields (an empty field matches everything). See LB.Applications.
type AppRule struct {
	// Name is a pattern of application names, as path.Match reads it
	// ("web", "web-*"); empty matches every name.
	Name string `json:"name,omitempty"`
	// Domains are domain patterns: exact ("example.com") or a suffix
	// ("*.example.com": every name under example.com). When set, a
	// matching application must have domains, each matching one of them.
	Domains []string `json:"domains,omitempty"`
	// Backends are patterns of the node names that may advertise the
	// application, as path.Match reads them ("web-*"); empty matches every
	// node.
	Backends []string `json:"backends,omitempty"`
}

// validateAdmission checks lb.listen-ports, lb.applications and lb.limits.
func (l *LB) validateAdmission(v *validator) {
	for _, lim := range []struct {
		name string
		n    int
	}{
		{"apps-per-member", l.Limits.AppsPerMember},
		{"domains-per-app", l.Limits.DomainsPerApp},
		{"paths-per-app", l.Limits.PathsPerApp},
		{"domains-per-member", l.Limits.DomainsPerMember},
		{"listen-ports-per-member", l.Limits.ListenPortsPerMember},
		{"upstream-servers", l.Limits.UpstreamServers},
		{"listeners", l.Limits.Listeners},
	} {
		if lim.n < 1 || lim.n > 1_000_000 {
			v.add("lb.limits."+lim.name, fmt.Sprintf("%d is not in 1-1000000", lim.n))
		}
	}
	if n := l.Limits.ReloadsPerMinute; n < 0 || n > 6000 {
		v.add("lb.limits.reloads-per-minute", fmt.Sprintf("%d is not in 0-6000 (0: no limit)", n))
	}
	if len(l.ListenPorts) == 0 {
		v.add("lb.listen-ports", `must allow at least one port, e.g. [80, 443, "1024-65535"]`)
	}
	for i, p := range l.ListenPorts {
		if _, _, err := p.Bounds(); err != nil {
			v.add(fmt.Sprintf("lb.listen-ports[%d]", i), err.Error())
		}
	}
	for i, r := range l.Applications {
		at := fmt.Sprintf("lb.applications[%d]", i)
		if r.Name == "" && len(r.Domains) == 0 && len(r.Backends) == 0 {
			v.add(at, "a rule needs a name, domains or backends; an empty one allows everything")
		}
		if r.Name != "" {
			if _, err := path.Match(r.Name, ""); err != nil {
				v.add(at+".name", fmt.Sprintf("%q is not a valid pattern", r.Name))
			}
		}
		for j, d := range r.Domains {
			if err := catalog.CheckDomain(d); err != nil {
				v.add(fmt.Sprintf("%s.domains[%d]", at, j), err.Error())
			}
		}
		for j, b := range r.Backends {
			if _, err := path.Match(b, ""); err != nil || b == "" {
				v.add(fmt.Sprintf("%s.backends[%d]", at, j), fmt.Sprintf("%q is not a valid pattern", b))
			}
		}
	}
}
