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
)

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
