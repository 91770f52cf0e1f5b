package config

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/scrimplb/scrimp/catalog"
)

// LetsEncryptDirectory and LetsEncryptStagingDirectory are the ACME
// directories of Let's Encrypt.
const (
	LetsEncryptDirectory        = "https://acme-v02.api.letsencrypt.org/directory"
	LetsEncryptStagingDirectory = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// ACME is the "lb.acme" section: certificates for https applications
// obtained and renewed from an ACME CA (docs/acme.md). Absent, none are.
type ACME struct {
	// Email is the ACME account's contact for expiry and policy notices.
	Email string `json:"email"`
	// Directory is the CA's ACME directory URL; empty means Let's Encrypt
	// (production, or staging with Staging).
	Directory string `json:"directory"`
	// Staging switches the default directory to Let's Encrypt's staging
	// CA (untrusted certificates, generous rate limits).
	Staging bool `json:"staging"`
	// CARoot is a PEM file of the roots trusted for the HTTPS connection to
	// the directory (private CAs, tests); empty means the system's roots.
	CARoot string `json:"ca-root,omitempty"`
	// Domains is the allow-list: exact names and "*.suffix" patterns (any
	// name ending in ".suffix"). A certificate is only ordered for a name
	// an application advertises AND this list matches. Required.
	Domains []string `json:"domains"`
	// HTTPPort is the plain-HTTP port the proxy listens on for the CA's
	// HTTP-01 validation: 80 in production.
	HTTPPort int `json:"http-port"`
	// ChallengeAddr is the loopback IP:port of scrimp's challenge handler
	// the proxy routes the challenge path to; port 0 picks a free port.
	ChallengeAddr string `json:"challenge-addr"`
	// RenewRatio is the part of a certificate's lifetime left when it is
	// renewed (0 < r < 1); 0 means certmagic's default, 1/3.
	RenewRatio float64 `json:"renew-ratio"`
	// RenewCheckInterval is how often certificates are checked for
	// renewal.
	RenewCheckInterval Duration `json:"renew-check-interval"`
	// Storage is where certificates, the ACME account, challenge tokens
	// and locks are kept; load balancers sharing it share certificates.
	Storage ACMEStorage `json:"storage"`
}

// ACMEStorage is "lb.acme.storage".
type ACMEStorage struct {
	// Kind is "file" or "s3"; empty means "s3" when the seed provider is
	// s3 (the seed bucket, under Prefix), else "file".
	Kind string `json:"kind"`
	// Dir is the file storage's directory; empty means STATE-DIR/acme.
	Dir string `json:"dir,omitempty"`
	// Bucket, Region, Endpoint, PathStyle and ChecksumWhenRequired mean
	// what they mean in "seed.s3"; empty ones take the seed.s3 values.
	Bucket               string `json:"bucket,omitempty"`
	Region               string `json:"region,omitempty"`
	Endpoint             string `json:"endpoint,omitempty"`
	PathStyle            *bool  `json:"path-style,omitempty"`
	ChecksumWhenRequired *bool  `json:"checksum-when-required,omitempty"`
	// Prefix is prepended to every key.
	Prefix string `json:"prefix"`
	// LockTTL is how long a lock whose holder stopped refreshing it (a
	// crashed load balancer) blocks the others.
	LockTTL Duration `json:"lock-ttl"`
}

// DefaultACME returns the section's defaults.
func DefaultACME() ACME {
	return ACME{
		// Let's Encrypt (resolved from Staging by DirectoryURL).
		Directory: "",
		// The port CAs validate HTTP-01 on.
		HTTPPort: 80,
		// A free loopback port.
		ChallengeAddr: "127.0.0.1:0",
		// certmagic's default: a third of the lifetime left.
		RenewRatio: 0,
		// certmagic's default.
		RenewCheckInterval: D(10 * time.Minute),
		Storage: ACMEStorage{
			// Chosen by the seed provider.
			Kind: "",
			// Keys under scrimp/acme/ in the bucket.
			Prefix: "scrimp/acme/",
			// Two refresh periods of the holder and then some.
			LockTTL: D(30 * time.Second),
		},
	}
}

// UnmarshalJSON fills defaults before reading the section.
func (a *ACME) UnmarshalJSON(b []byte) error {
	*a = DefaultACME()
	type plain ACME
	return json.Unmarshal(b, (*plain)(a))
}

// DirectoryURL is the directory to use.
func (a *ACME) DirectoryURL() string {
	switch {
	case a.Directory != "":
		return a.Directory
	case a.Staging:
		return LetsEncryptStagingDirectory
	}
	return LetsEncryptDirectory
}

// StorageKind resolves an empty kind from the seed provider.
func (a *ACME) StorageKind(seedProvider string) string {
	if a.Storage.Kind != "" {
		return a.Storage.Kind
	}
	if seedProvider == "s3" {
		return "s3"
	}
	return "file"
}

func (a *ACME) validate(v *validator, seedProvider string) {
	if a.Directory != "" {
		u, err := url.Parse(a.Directory)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			v.add("lb.acme.directory", fmt.Sprintf("%q is not an https:// URL", a.Directory))
		}
		if a.Staging {
			v.add("lb.acme.staging", "only with the default directory (leave directory empty)")
		}
	}
	if a.CARoot != "" && !filepath.IsAbs(a.CARoot) {
		v.add("lb.acme.ca-root", fmt.Sprintf("%q: must be an absolute path", a.CARoot))
	}
	if len(a.Domains) == 0 {
		v.add("lb.acme.domains", `required: the names (or "*.suffix" patterns) certificates may be ordered for`)
	}
	for i, d := range a.Domains {
		name := strings.TrimPrefix(d, "*.")
		if err := catalog.CheckDomain(name); err != nil || strings.Contains(name, "*") {
			v.add(fmt.Sprintf("lb.acme.domains[%d]", i), fmt.Sprintf("%q is not a domain name or a \"*.suffix\" pattern", d))
		}
	}
	v.port("lb.acme.http-port", a.HTTPPort)
	if ap, err := netip.ParseAddrPort(a.ChallengeAddr); err != nil || !ap.Addr().IsLoopback() {
		v.add("lb.acme.challenge-addr", fmt.Sprintf("%q is not a loopback IP:port such as \"127.0.0.1:0\"", a.ChallengeAddr))
	}
	if a.RenewRatio < 0 || a.RenewRatio >= 1 {
		v.add("lb.acme.renew-ratio", fmt.Sprintf("%g is not in [0, 1)", a.RenewRatio))
	}
	v.duration("lb.acme.renew-check-interval", a.RenewCheckInterval, true)
	v.duration("lb.acme.storage.lock-ttl", a.Storage.LockTTL, true)
	switch a.StorageKind(seedProvider) {
	case "file":
		if a.Storage.Dir != "" && !filepath.IsAbs(a.Storage.Dir) {
			v.add("lb.acme.storage.dir", fmt.Sprintf("%q: must be an absolute path", a.Storage.Dir))
		}
	case "s3":
		if seedProvider != "s3" && a.Storage.Bucket == "" {
			v.add("lb.acme.storage.bucket", "required when the seed provider is not s3")
		}
		if a.Storage.Endpoint != "" {
			if u, err := url.Parse(a.Storage.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				v.add("lb.acme.storage.endpoint", fmt.Sprintf("%q is not an http:// or https:// URL", a.Storage.Endpoint))
			}
		}
	default:
		v.add("lb.acme.storage.kind", fmt.Sprintf("%q is not one of file, s3", a.Storage.Kind))
	}
}
