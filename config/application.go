package config

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/scrimplb/scrimp/catalog"
)

// Application is one application as a configuration file defines it: the
// catalog.Application a backend advertises, plus settings that stay on the
// backend. The same form is used for entries of backend.applications and
// for the files in backend.application-config-dir.
type Application struct {
	catalog.Application
	// HealthCheck, when set, makes the backend check the application itself
	// and advertise it as down while the check fails; without it the
	// application is always advertised as up. It is never advertised.
	HealthCheck *HealthCheck `json:"health-check,omitempty"`
}

// CatalogApplications returns the advertised part of each application.
func CatalogApplications(apps []Application) []catalog.Application {
	out := make([]catalog.Application, len(apps))
	for i, a := range apps {
		out[i] = a.Application
	}
	return out
}

// Health check types.
const (
	// HealthCheckHTTP sends GET requests and expects one of the listed
	// status codes.
	HealthCheckHTTP = "http"
	// HealthCheckTCP only connects.
	HealthCheckTCP = "tcp"
)

// Health check limits.
const (
	// MinHealthInterval is the shortest interval between checks; shorter
	// ones would keep a core busy for nothing.
	MinHealthInterval = 10 * time.Millisecond
	// MaxHealthThreshold is the largest rise or fall.
	MaxHealthThreshold = 100
	// DefaultExpectStatus is the status an HTTP check expects unless told
	// otherwise.
	DefaultExpectStatus = 200
)

// HealthCheck is how a backend checks one of its applications locally.
// Only the resulting state, up or down, is advertised.
type HealthCheck struct {
	// Type is "http" or "tcp". Empty means "http" for applications whose
	// protocol is http or https, "tcp" otherwise.
	Type string `json:"type,omitempty"`
	// Path is what an HTTP check requests, e.g. "/healthz". Empty means the
	// application's health-path, or "/".
	Path string `json:"path,omitempty"`
	// ExpectStatus lists the status codes an HTTP check accepts; JSON may
	// give one code or a list. Empty means 200.
	ExpectStatus StatusCodes `json:"expect-status,omitempty"`
	// Interval is the time between the starts of two checks.
	Interval Duration `json:"interval"`
	// Timeout bounds one check; it may not exceed Interval.
	Timeout Duration `json:"timeout"`
	// Rise is how many checks in a row must pass before a down
	// application is advertised as up again.
	Rise int `json:"rise"`
	// Fall is how many checks in a row must fail before an up application
	// is advertised as down.
	Fall int `json:"fall"`
}

// DefaultHealthCheck returns the defaults of a health-check object. The
// defaults that depend on the application (type, path and expected status)
// are left empty; Resolve fills them.
func DefaultHealthCheck() HealthCheck {
	return HealthCheck{
		Interval: D(2 * time.Second),
		Timeout:  D(time.Second),
		Rise:     2,
		Fall:     3,
	}
}

// UnmarshalJSON fills defaults before reading the object, so a partial
// "health-check" object keeps the defaults for what it leaves out.
func (h *HealthCheck) UnmarshalJSON(b []byte) error {
	*h = DefaultHealthCheck()
	type plain HealthCheck
	return json.Unmarshal(b, (*plain)(h))
}

// Resolve returns h with the defaults that depend on app filled in: the
// type from the application's protocol, and for HTTP checks the path and
// the expected status.
func (h HealthCheck) Resolve(app catalog.Application) HealthCheck {
	if h.Type == "" {
		h.Type = HealthCheckTCP
		if app.Protocol == catalog.ProtocolHTTP || app.Protocol == catalog.ProtocolHTTPS {
			h.Type = HealthCheckHTTP
		}
	}
	if h.Type == HealthCheckHTTP {
		if h.Path == "" {
			h.Path = cmp.Or(app.HealthPath, "/")
		}
		if len(h.ExpectStatus) == 0 {
			h.ExpectStatus = StatusCodes{DefaultExpectStatus}
		}
	}
	return h
}

// StatusCodes are HTTP status codes. In JSON they are one number or a list
// of numbers.
type StatusCodes []int

// UnmarshalJSON accepts a number or a list of numbers; null leaves s as it
// is, like encoding/json does for other types.
func (s *StatusCodes) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] != '[' {
		var one int
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = StatusCodes{one}
		return nil
	}
	var list []int
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	*s = list
	return nil
}

// ParseApplication decodes and validates one application file, read from
// file: an Application object with the same keys as an entry of
// backend.applications. Like Parse it returns every problem, sorted by JSON
// path, each naming file; the path is relative to the file's top level
// ("listen-port", "health-check.interval").
func ParseApplication(file string, data []byte) (*Application, Problems) {
	app := &Application{}
	problems, mistyped, ok := decodeStrict(file, data, app)
	if !ok {
		return app, problems
	}
	v := validator{file: file}
	app.validate(&v, "")
	for _, p := range v.problems {
		if !under(p.Path, mistyped) {
			problems = append(problems, p)
		}
	}
	slices.SortStableFunc(problems, func(a, b Problem) int { return strings.Compare(a.Path, b.Path) })
	return app, problems
}

// Validate checks the backend section as Config.Validate does, for callers
// that build one in code or read it again on reload. Problems name file and
// paths under "backend".
func (b *Backend) Validate(file string) Problems {
	v := validator{file: file}
	b.validate(&v)
	return v.problems
}

// validate reports a's problems with paths under path, which is empty for
// an application file.
func (a *Application) validate(v *validator, path string) {
	for _, err := range a.Application.Validate() {
		field, reason, _ := strings.Cut(err.Error(), ": ")
		v.add(join(path, field), reason)
	}
	if a.HealthCheck != nil {
		a.HealthCheck.validate(v, join(path, "health-check"), a.Application)
	}
}

func (h *HealthCheck) validate(v *validator, path string, app catalog.Application) {
	if app.Protocol == catalog.ProtocolUDP {
		// Nothing answers a UDP "connect"; a probe would need to speak the
		// application's own protocol.
		v.add(path, "not supported for udp applications")
		return
	}
	r := h.Resolve(app)
	switch r.Type {
	case HealthCheckHTTP:
		if app.Protocol.Valid() && app.Protocol != catalog.ProtocolHTTP && app.Protocol != catalog.ProtocolHTTPS {
			v.add(join(path, "type"), fmt.Sprintf(`"http" checks need protocol http or https; use "tcp" for %s`, app.Protocol))
		}
		if h.Path != "" {
			if err := checkRequestPath(h.Path); err != nil {
				v.add(join(path, "path"), err.Error())
			}
		}
		if h.ExpectStatus != nil && len(h.ExpectStatus) == 0 {
			v.add(join(path, "expect-status"), "must list at least one status code")
		}
		for i, code := range h.ExpectStatus {
			if code < 100 || code > 599 {
				v.add(fmt.Sprintf("%s.expect-status[%d]", path, i), fmt.Sprintf("%d is not an HTTP status code (100-599)", code))
			}
		}
	case HealthCheckTCP:
		if h.Path != "" {
			v.add(join(path, "path"), `only for "http" checks`)
		}
		if h.ExpectStatus != nil {
			v.add(join(path, "expect-status"), `only for "http" checks`)
		}
	default:
		v.add(join(path, "type"), fmt.Sprintf("%q is not one of http, tcp", h.Type))
	}
	v.duration(join(path, "interval"), h.Interval, true)
	if h.Interval.bad == "" && h.Interval.Duration > 0 && h.Interval.Duration < MinHealthInterval {
		v.add(join(path, "interval"), fmt.Sprintf("%v is shorter than the minimum %v", h.Interval.Duration, MinHealthInterval))
	}
	v.duration(join(path, "timeout"), h.Timeout, true)
	if h.Timeout.bad == "" && h.Interval.bad == "" && h.Timeout.Duration > h.Interval.Duration && h.Interval.Duration > 0 {
		v.add(join(path, "timeout"), "must not be longer than interval")
	}
	for _, f := range []struct {
		name string
		n    int
	}{{"rise", h.Rise}, {"fall", h.Fall}} {
		if f.n < 1 || f.n > MaxHealthThreshold {
			v.add(join(path, f.name), fmt.Sprintf("%d is not in 1-%d", f.n, MaxHealthThreshold))
		}
	}
}

// checkRequestPath reports whether p is a usable request target: an
// absolute path, with an optional query, printable and without white space.
// It is never written into proxy configuration, so it is not held to
// catalog.CheckPath's narrower grammar.
func checkRequestPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("%q must start with '/'", p)
	}
	if len(p) > catalog.MaxPathLen {
		return fmt.Errorf("%d characters, at most %d allowed", len(p), catalog.MaxPathLen)
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] >= 0x7f {
			return fmt.Errorf("%q: no white space, control or non-ASCII characters", p)
		}
	}
	if _, err := url.ParseRequestURI(p); err != nil {
		return fmt.Errorf("%q is not a request path: %w", p, err)
	}
	return nil
}

// validateHealthCheckAddr checks backend.health-check-addr.
func validateHealthCheckAddr(v *validator, s string) {
	if s == "" {
		return
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		v.add("backend.health-check-addr", fmt.Sprintf("%q is not an IP address", s))
	case a.IsUnspecified():
		v.add("backend.health-check-addr", fmt.Sprintf("%s cannot be connected to", a))
	}
}
