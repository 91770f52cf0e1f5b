package catalog

import (
	"errors"
	"fmt"
	"strings"
)

// Limits on advertised values. They bound both the work a hostile peer can
// cause and the size of what reaches a proxy configuration file.
const (
	// MaxNameLen is the longest application name.
	MaxNameLen = 63
	// MaxDomainLen is the longest domain name (RFC 1123).
	MaxDomainLen = 253
	// MaxDomains is the most domains one application may list.
	MaxDomains = 64
	// MaxPaths is the most path prefixes one application may list.
	MaxPaths = 16
	// MaxPathLen is the longest path prefix.
	MaxPathLen = 256
	// MaxWeight is the largest backend weight.
	MaxWeight = 100
	// MaxMaxFails is the largest max-fails.
	MaxMaxFails = 100
	// MaxKeyNameLen is the longest header, cookie or query parameter name
	// in a hash key.
	MaxKeyNameLen = 64
)

// CheckPath reports whether s is a safe URL path prefix: it starts with
// '/', is at most 256 bytes of letters, digits and "/._~-", and has no
// "." or ".." segment. The grammar excludes everything a proxy
// configuration treats specially (white space, quotes, ';', '{', '$',
// regex characters).
func CheckPath(s string) error {
	if !strings.HasPrefix(s, "/") {
		return fmt.Errorf("%q must start with '/'", s)
	}
	if len(s) > MaxPathLen {
		return fmt.Errorf("%d characters, at most %d allowed", len(s), MaxPathLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("/._~-", c) >= 0) {
			return fmt.Errorf("%q: only letters, digits and /._~- are allowed", s)
		}
	}
	for _, seg := range strings.Split(s, "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("%q: no '.' or '..' segments", s)
		}
	}
	return nil
}

// CheckHashKey reports whether k is a valid hash key for protocol p:
// "source-ip" for every protocol; for HTTP protocols also "header:NAME"
// (letters, digits, '-'), "cookie:NAME" or "query:NAME" (letters, digits,
// '_': the names proxies can use as variables).
func CheckHashKey(k string, p Protocol) error {
	if k == "source-ip" {
		return nil
	}
	kind, name, ok := strings.Cut(k, ":")
	if !ok || (kind != "header" && kind != "cookie" && kind != "query") {
		return fmt.Errorf("%q is not header:NAME, cookie:NAME, query:NAME or source-ip", k)
	}
	if !p.IsHTTP() {
		return fmt.Errorf("%q: only source-ip can be hashed for %s", k, p)
	}
	if name == "" || len(name) > MaxKeyNameLen {
		return fmt.Errorf("%q: the name must be 1 to %d characters", k, MaxKeyNameLen)
	}
	extra := byte('_')
	if kind == "header" {
		extra = '-'
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == extra) {
			return fmt.Errorf("%q: a %s name may hold only letters, digits and '%c'", k, kind, extra)
		}
	}
	return nil
}

// HashKeyParts splits a valid hash key into its kind ("header", "cookie",
// "query", "source-ip") and name.
func HashKeyParts(k string) (kind, name string) {
	if k == "source-ip" {
		return k, ""
	}
	kind, name, _ = strings.Cut(k, ":")
	return kind, name
}

// CheckTimeout reports whether s is a timeout both nginx and HAProxy read
// the same way: 1 to 6 digits followed by "s" or "m", no leading zero.
func CheckTimeout(s string) error {
	n := strings.TrimRight(s, "sm")
	if len(s)-len(n) != 1 || n == "" || len(n) > 6 || n[0] == '0' || strings.Trim(n, "0123456789") != "" {
		return fmt.Errorf("%q is not a timeout such as \"10s\" or \"1m\"", s)
	}
	return nil
}

// CheckName reports whether s is a valid application name: 1 to 63
// characters of lower-case letters, digits, '-' and '_', starting with a
// letter or digit. The grammar is deliberately narrow because names become
// identifiers (upstream and backend names) in proxy configuration.
func CheckName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%d characters, at most %d allowed", len(s), MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '_') && i > 0:
		default:
			return fmt.Errorf("%q: only a-z, 0-9, '-' and '_' are allowed, starting with a letter or digit", s)
		}
	}
	return nil
}

// CheckPort reports whether p is a usable TCP/UDP port (1-65535).
func CheckPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("%d is not a port in 1-65535", p)
	}
	return nil
}

// CheckDomain reports whether s is a host name per RFC 1123, lower case,
// optionally starting with a "*." wildcard label. Upper-case letters are
// rejected rather than folded so that what is rendered is exactly what was
// advertised.
func CheckDomain(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > MaxDomainLen {
		return fmt.Errorf("%d characters, at most %d allowed", len(s), MaxDomainLen)
	}
	name := strings.TrimPrefix(s, "*.")
	if name == "" {
		return fmt.Errorf("%q: a wildcard needs a domain after it", s)
	}
	for _, label := range strings.Split(name, ".") {
		if err := checkLabel(label); err != nil {
			return fmt.Errorf("%q: %w", s, err)
		}
	}
	return nil
}

func checkLabel(l string) error {
	if l == "" {
		return errors.New("empty label")
	}
	if len(l) > 63 {
		return fmt.Errorf("label %q longer than 63 characters", l)
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with '-'", l)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("label %q: only a-z, 0-9 and '-' are allowed", l)
		}
	}
	return nil
}

// MaxNodeNameLen is the longest node name.
const MaxNodeNameLen = 128

// CheckNodeName reports whether s is a valid node name: 1 to 128
// characters of letters, digits, '.', '-' and '_'. Node names appear in
// logs and in proxy configuration comments and server names.
func CheckNodeName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > MaxNodeNameLen {
		return fmt.Errorf("%d characters, at most %d allowed", len(s), MaxNodeNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("%q: only letters, digits, '.', '-' and '_' are allowed", s)
		}
	}
	return nil
}
