package catalog

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// FuzzDecodeMeta feeds DecodeMeta arbitrary bytes. DecodeMeta must never
// panic, and whatever it accepts must be safe to render: every application
// validates, the result re-encodes to something that decodes to the same
// Meta, and no string holds a character outside the validated grammars, so
// nothing a peer sends can add proxy configuration.
func FuzzDecodeMeta(f *testing.F) {
	seeds := []Meta{
		{Role: RoleLB},
		{Role: RoleBackend},
		{Role: RoleBackend, Applications: []Application{validApp()}},
		{Role: RoleBackend, Applications: []Application{
			{Name: "api", ListenPort: 443, ApplicationPort: 50051, Protocol: ProtocolGRPC, Domains: []string{"api.example.com", "*.api.example.com"}},
			{Name: "db", ListenPort: 5432, ApplicationPort: 5432, Protocol: ProtocolTCP},
			{Name: "dns", ListenPort: 53, ApplicationPort: 5353, Protocol: ProtocolUDP},
			{Name: "web_2", ListenPort: 80, ApplicationPort: 8080, Protocol: ProtocolHTTPS, Domains: []string{"1.2.example"}},
		}},
		{Role: RoleBackend, Applications: []Application{{
			Name: "full", ListenPort: 80, ApplicationPort: 8080, Protocol: ProtocolHTTP, Domains: []string{"a.io"},
			Paths: []string{"/api/", "/v2"}, Balance: BalanceHash, HashKey: "header:X-Account-Id", Weight: 7,
			HealthPath: "/healthz", MaxFails: 3, FailTimeout: "10s",
		}}},
	}
	for _, m := range seeds {
		f.Add(EncodeMeta(m))
	}
	for _, b := range [][]byte{
		nil,
		{1},
		{1, 2},
		{1, 2, 0x80},
		{2, 2, 0},
		{1, 1, 1, 3, 'w', 'e', 'b', 0, 80, 80, 0},
		{1, 2, 1, 4, 'w', 'e', 'b', ';', 0, 80, 80, 0},
		{1, 2, 1, 3, 'w', 'e', 'b', 0, 80, 80, 1, 5, 'a', ' ', 'b', '{', '}'},
		{1, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		[]byte("\x01\x02\x01\x03web\x00\xd0\x00\x50\x00"), // non-minimal varint
		[]byte(strings.Repeat("\xff", 64)),
	} {
		f.Add(b)
	}

	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			if !reflect.DeepEqual(m, Meta{}) {
				t.Fatalf("error %v came with a non-zero Meta %+v", err, m)
			}
			return
		}
		if m.Role != RoleLB && m.Role != RoleBackend {
			t.Fatalf("accepted role %v", m.Role)
		}
		if m.Role == RoleLB && len(m.Applications) > 0 {
			t.Fatalf("accepted a load balancer with %d applications", len(m.Applications))
		}
		for i, a := range m.Applications {
			if errs := a.Validate(); len(errs) > 0 {
				t.Fatalf("accepted application %d that fails Validate: %v", i, errs)
			}
			if i > 0 && m.Applications[i-1].Name >= a.Name {
				t.Fatalf("accepted unsorted applications %q, %q", m.Applications[i-1].Name, a.Name)
			}
			if !onlyChars(a.Name, "abcdefghijklmnopqrstuvwxyz0123456789-_") {
				t.Fatalf("name %q has a character outside the grammar", a.Name)
			}
			for _, d := range a.Domains {
				if !onlyChars(d, "abcdefghijklmnopqrstuvwxyz0123456789-.*") {
					t.Fatalf("domain %q has a character outside the grammar", d)
				}
				if strings.Contains(d[1:], "*") {
					t.Fatalf("domain %q has a '*' that is not the leading wildcard", d)
				}
			}
			for _, p := range append(slices.Clone(a.Paths), a.HealthPath) {
				if !onlyChars(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._~-") {
					t.Fatalf("path %q has a character outside the grammar", p)
				}
			}
			every := a.Name + strings.Join(a.Domains, "") + strings.Join(a.Paths, "") + a.HealthPath + a.HashKey + a.FailTimeout + string(a.Balance)
			if strings.ContainsAny(every, " \t\r\n\v\f;{}#'\"$\\`\x00()") {
				t.Fatalf("application %+v carries a configuration metacharacter", a)
			}
		}

		enc := EncodeMeta(m)
		if len(enc) > len(b) {
			t.Fatalf("re-encoding is longer (%d bytes) than the accepted input (%d)", len(enc), len(b))
		}
		again, err := DecodeMeta(enc)
		if err != nil {
			t.Fatalf("re-encoding of an accepted Meta is rejected: %v", err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip changed the Meta:\n got %+v\nwant %+v", again, m)
		}
	})
}

func onlyChars(s, allowed string) bool {
	for _, c := range []byte(s) {
		if strings.IndexByte(allowed, c) < 0 {
			return false
		}
	}
	return true
}
