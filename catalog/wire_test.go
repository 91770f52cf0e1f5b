package catalog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// wire builds raw metadata by hand, independently of EncodeMeta, so the
// tests can write what a correct encoder never would.
type wire []byte

func (w wire) b(c ...byte) wire       { return append(w, c...) }
func (w wire) uv(v uint64) wire       { return binary.AppendUvarint(w, v) }
func (w wire) str(s string) wire      { return append(w.uv(uint64(len(s))), s...) }
func header(role Role, apps int) wire { return wire{WireVersion, byte(role)}.uv(uint64(apps)) }

// app appends one application: name, protocol byte, ports, domains, and
// a zero flags byte (no optional fields).
func (w wire) app(name string, proto byte, listen, port uint64, domains ...string) wire {
	w = w.str(name).b(proto).uv(listen).uv(port).uv(uint64(len(domains)))
	for _, d := range domains {
		w = w.str(d)
	}
	return w.b(0)
}

func TestEncodeMetaFormat(t *testing.T) {
	m := Meta{Role: RoleBackend, Applications: []Application{
		{Name: "web", ListenPort: 80, ApplicationPort: 8080, Protocol: ProtocolHTTP, Domains: []string{"a.io"}},
		{Name: "db", ListenPort: 5432, ApplicationPort: 15432, Protocol: ProtocolTCP},
	}}
	want := []byte{
		1, 2, 2, // version, role backend, 2 apps
		2, 'd', 'b', 3, 0xb8, 0x2a, 0xc8, 0x78, 0, 0, // "db", tcp, 5432, 15432, no domains, no options
		3, 'w', 'e', 'b', 0, 80, 0x90, 0x3f, 1, 4, 'a', '.', 'i', 'o', 0, // "web", http, 80, 8080, ["a.io"], no options
	}
	if got := EncodeMeta(m); !bytes.Equal(got, want) {
		t.Errorf("EncodeMeta =\n%v\nwant\n%v", got, want)
	}
	if m.Applications[0].Name != "web" {
		t.Error("EncodeMeta sorted the caller's slice")
	}
	for _, a := range m.Applications {
		single := EncodeMeta(Meta{Role: RoleBackend, Applications: []Application{a}})
		if got, want := EncodedSize(a), len(single)-3; got != want {
			t.Errorf("EncodedSize(%s) = %d, want %d", a.Name, got, want)
		}
	}
}

func TestMetaRoundTrip(t *testing.T) {
	many := make([]string, MaxDomains)
	for i := range many {
		many[i] = strings.Repeat("x", i%63+1) + ".example.com"
	}
	tests := []struct {
		name string
		in   Meta
		// want is the decoded Meta; zero means in itself.
		want *Meta
	}{
		{name: "lb", in: Meta{Role: RoleLB}},
		{name: "backend without applications", in: Meta{Role: RoleBackend}},
		{
			name: "one application",
			in:   Meta{Role: RoleBackend, Applications: []Application{validApp()}},
		},
		{
			name: "every protocol and extreme ports",
			in: Meta{Role: RoleBackend, Applications: []Application{
				{Name: "a", ListenPort: 1, ApplicationPort: 65535, Protocol: ProtocolHTTP},
				{Name: "b", ListenPort: 65535, ApplicationPort: 1, Protocol: ProtocolHTTPS},
				{Name: "c", ListenPort: 127, ApplicationPort: 128, Protocol: ProtocolGRPC},
				{Name: "d", ListenPort: 16383, ApplicationPort: 16384, Protocol: ProtocolTCP},
				{Name: "e", ListenPort: 53, ApplicationPort: 53, Protocol: ProtocolUDP},
			}},
		},
		{
			name: "every optional field",
			in: Meta{Role: RoleBackend, Applications: []Application{{
				Name: "full", ListenPort: 80, ApplicationPort: 8080, Protocol: ProtocolHTTP, Domains: []string{"a.io"},
				Paths: []string{"/api/", "/v2"}, Balance: BalanceHash, HashKey: "cookie:sid", Weight: 100,
				HealthPath: "/healthz", MaxFails: 100, FailTimeout: "1m",
			}, {
				Name: "some", ListenPort: 81, ApplicationPort: 8081, Protocol: ProtocolTCP, Balance: BalanceLeastConn, Weight: 2, State: StateDraining,
			}, {
				Name: "tls", ListenPort: 443, ApplicationPort: 8443, Protocol: ProtocolHTTPS, Domains: []string{"a.io"}, RedirectHTTP: true,
			}}},
		},
		{
			name: "longest values",
			in: Meta{Role: RoleBackend, Applications: []Application{
				{Name: strings.Repeat("n", MaxNameLen), ListenPort: 80, ApplicationPort: 80, Protocol: ProtocolHTTP, Domains: many},
			}},
		},
		{
			name: "unsorted input is sorted",
			in: Meta{Role: RoleBackend, Applications: []Application{
				{Name: "web", ListenPort: 80, ApplicationPort: 8080, Protocol: ProtocolHTTP},
				{Name: "api", ListenPort: 81, ApplicationPort: 9090, Protocol: ProtocolGRPC, Domains: []string{"*.api.io"}},
				{Name: "api-v2", ListenPort: 82, ApplicationPort: 9091, Protocol: ProtocolHTTP},
			}},
			want: &Meta{Role: RoleBackend, Applications: []Application{
				{Name: "api", ListenPort: 81, ApplicationPort: 9090, Protocol: ProtocolGRPC, Domains: []string{"*.api.io"}},
				{Name: "api-v2", ListenPort: 82, ApplicationPort: 9091, Protocol: ProtocolHTTP},
				{Name: "web", ListenPort: 80, ApplicationPort: 8080, Protocol: ProtocolHTTP},
			}},
		},
		{
			name: "empty domain list decodes as nil",
			in:   Meta{Role: RoleBackend, Applications: []Application{{Name: "a", ListenPort: 1, ApplicationPort: 2, Protocol: ProtocolTCP, Domains: []string{}}}},
			want: &Meta{Role: RoleBackend, Applications: []Application{{Name: "a", ListenPort: 1, ApplicationPort: 2, Protocol: ProtocolTCP}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.in
			if tt.want != nil {
				want = *tt.want
			}
			enc := EncodeMeta(tt.in)
			got, err := DecodeMeta(enc)
			if err != nil {
				t.Fatalf("DecodeMeta: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
			}
			if again := EncodeMeta(got); !bytes.Equal(again, enc) {
				t.Errorf("re-encoding differs:\n%v\n%v", again, enc)
			}
		})
	}
}

func TestEncodeMetaOrderIndependent(t *testing.T) {
	a := Application{Name: "a", ListenPort: 1, ApplicationPort: 1, Protocol: ProtocolHTTP}
	b := Application{Name: "b", ListenPort: 2, ApplicationPort: 2, Protocol: ProtocolTCP}
	c := Application{Name: "c", ListenPort: 3, ApplicationPort: 3, Protocol: ProtocolUDP}
	want := EncodeMeta(Meta{Role: RoleBackend, Applications: []Application{a, b, c}})
	for _, order := range [][]Application{{c, b, a}, {b, a, c}, {a, c, b}, {c, a, b}} {
		if got := EncodeMeta(Meta{Role: RoleBackend, Applications: order}); !bytes.Equal(got, want) {
			t.Errorf("order %v/%v/%v encodes differently", order[0].Name, order[1].Name, order[2].Name)
		}
	}
}

func TestDecodeMetaRejects(t *testing.T) {
	goodApp := func(w wire) wire { return w.app("web", 0, 80, 8080, "example.com") }
	tooManyDomains := make([]string, MaxDomains+1)
	for i := range tooManyDomains {
		tooManyDomains[i] = "a.io"
	}
	tests := []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{name: "nil", in: nil, wantErr: "metadata is empty"},
		{name: "empty", in: []byte{}, wantErr: "metadata is empty"},
		{name: "unknown second option flag", in: header(RoleBackend, 1).str("web").b(0).uv(80).uv(80).uv(0).b(0x80).b(0x02), wantErr: "second field flags 0x2"},
		{name: "empty second option flags", in: header(RoleBackend, 1).str("web").b(0).uv(80).uv(80).uv(0).b(0x80).b(0), wantErr: "second field flags 0x0"},
		{name: "second option flags truncated", in: header(RoleBackend, 1).str("web").b(0).uv(80).uv(80).uv(0).b(0x80), wantErr: "truncated"},
		{name: "unknown state", in: header(RoleBackend, 1).str("web").b(0).uv(80).uv(80).uv(0).b(0x40).b(7), wantErr: "unknown state 7"},
		{name: "unknown balance", in: header(RoleBackend, 1).str("web").b(0).uv(80).uv(80).uv(0).b(0x02).b(9).str(""), wantErr: "unknown balance 9"},
		{name: "weight over limit", in: header(RoleBackend, 1).str("web").b(0).uv(80).uv(80).uv(0).b(0x04).uv(101), wantErr: "value 101 over the limit"},
		{name: "zero paths flagged", in: header(RoleBackend, 1).str("web").b(0).uv(80).uv(80).uv(0).b(0x01).uv(0), wantErr: "0 paths"},
		{name: "path injecting a directive", in: header(RoleBackend, 1).str("web").b(0).uv(80).uv(80).uv(0).b(0x01).uv(1).str("/a;}"), wantErr: "paths[0]"},
		{name: "options truncated", in: header(RoleBackend, 1).str("web").b(0).uv(80).uv(80).uv(0).b(0x08), wantErr: "truncated"},
		{name: "version 0", in: []byte{0, 2, 0}, wantErr: "format version 0"},
		{name: "version 2", in: []byte{2, 2, 0}, wantErr: "format version 2"},
		{name: "version 255 alone", in: []byte{255}, wantErr: "format version 255"},
		{name: "role unknown 0", in: []byte{1, 0, 0}, wantErr: "unknown role 0"},
		{name: "role unknown 3", in: []byte{1, 3, 0}, wantErr: "unknown role 3"},
		{name: "role unknown 255", in: []byte{1, 255}, wantErr: "unknown role 255"},
		{name: "only version", in: []byte{1}, wantErr: "truncated"},
		{name: "no app count", in: []byte{1, 2}, wantErr: "truncated"},
		{name: "app count varint unterminated", in: []byte{1, 2, 0x80}, wantErr: "truncated"},
		{name: "app count varint overflow", in: wire{1, 2}.b(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), wantErr: "truncated"},
		{name: "missing app", in: header(RoleBackend, 1), wantErr: "truncated"},
		{name: "missing second app", in: goodApp(header(RoleBackend, 2)), wantErr: "truncated"},
		{name: "name longer than the rest", in: header(RoleBackend, 1).uv(200).b('a', 'b'), wantErr: "truncated"},
		{name: "huge name length", in: header(RoleBackend, 1).uv(1 << 62), wantErr: "truncated"},
		{name: "trailing byte", in: goodApp(header(RoleBackend, 1)).b(0), wantErr: "1 trailing bytes"},
		{name: "trailing bytes after lb", in: header(RoleLB, 0).b(1, 2, 3), wantErr: "3 trailing bytes"},
		{name: "too many applications", in: header(RoleBackend, maxApps+1), wantErr: "4097 applications, at most 4096"},
		{name: "absurd application count", in: wire{1, 2}.uv(1 << 63), wantErr: "at most 4096"},
		{name: "too many domains", in: header(RoleBackend, 1).app("web", 0, 80, 80, tooManyDomains...), wantErr: "65 domains, at most 64"},
		{name: "too many domains, none sent", in: header(RoleBackend, 1).str("web").b(0).uv(80).uv(80).uv(1 << 40), wantErr: "domains, at most 64"},
		{name: "unknown protocol", in: header(RoleBackend, 1).app("web", 5, 80, 80), wantErr: "unknown protocol 5"},
		{name: "unknown protocol 255", in: header(RoleBackend, 1).app("web", 255, 80, 80), wantErr: "unknown protocol 255"},
		{name: "listen port too large", in: header(RoleBackend, 1).app("web", 0, 65536, 80), wantErr: "port 65536 out of range"},
		{name: "application port too large", in: header(RoleBackend, 1).app("web", 0, 80, 1<<40), wantErr: "out of range"},
		{name: "listen port zero", in: header(RoleBackend, 1).app("web", 0, 0, 80), wantErr: "listen-port: 0 is not a port"},
		{name: "application port zero", in: header(RoleBackend, 1).app("web", 0, 80, 0), wantErr: "application-port: 0 is not a port"},
		{name: "invalid name", in: header(RoleBackend, 1).app("Web", 0, 80, 80), wantErr: `application 0 ("Web"): name:`},
		{name: "empty name", in: header(RoleBackend, 1).app("", 0, 80, 80), wantErr: "name: must not be empty"},
		{name: "name injecting a directive", in: header(RoleBackend, 1).app("web;}", 0, 80, 80), wantErr: "name:"},
		{name: "invalid domain", in: header(RoleBackend, 1).app("web", 0, 80, 80, "ok.io", "a b"), wantErr: "domains[1]:"},
		{name: "domain injecting a directive", in: header(RoleBackend, 1).app("web", 0, 80, 80, "x.io;return"), wantErr: "domains[0]:"},
		{name: "domain with newline", in: header(RoleBackend, 1).app("web", 0, 80, 80, "x.io\n"), wantErr: "domains[0]:"},
		{name: "second app invalid", in: header(RoleBackend, 2).app("a", 0, 80, 80).app("b", 0, 80, 80, "$host"), wantErr: `application 1 ("b")`},
		{name: "unsorted applications", in: header(RoleBackend, 2).app("web", 0, 80, 80).app("api", 0, 81, 81), wantErr: `not sorted or duplicated at "api"`},
		{name: "duplicate applications", in: header(RoleBackend, 2).app("web", 0, 80, 80).app("web", 0, 80, 80), wantErr: `not sorted or duplicated at "web"`},
		{name: "lb advertising applications", in: goodApp(header(RoleLB, 1)), wantErr: "a load balancer advertises applications"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := DecodeMeta(tt.in)
			checkErr(t, err, tt.wantErr)
			if err != nil && !reflect.DeepEqual(m, Meta{}) {
				t.Errorf("an error came with a non-zero Meta %+v", m)
			}
		})
	}
}

// TestDecodeMetaTruncatedEverywhere cuts a valid encoding at every byte:
// each strict prefix must be rejected as truncated (or empty), never
// accepted as a shorter advertisement.
func TestDecodeMetaTruncatedEverywhere(t *testing.T) {
	enc := EncodeMeta(Meta{Role: RoleBackend, Applications: []Application{
		{Name: "api", ListenPort: 443, ApplicationPort: 50051, Protocol: ProtocolGRPC, Domains: []string{"api.example.com", "*.api.example.com"}},
		{Name: "web", ListenPort: 80, ApplicationPort: 8080, Protocol: ProtocolHTTP, Domains: []string{"example.com"}},
		{Name: "zz", ListenPort: 300, ApplicationPort: 301, Protocol: ProtocolUDP},
	}})
	if _, err := DecodeMeta(enc); err != nil {
		t.Fatalf("full encoding rejected: %v", err)
	}
	for n := range len(enc) {
		_, err := DecodeMeta(enc[:n])
		switch {
		case n == 0:
			checkErr(t, err, "metadata is empty")
		case !errors.Is(err, errTruncated):
			t.Errorf("prefix of %d/%d bytes: error %v, want %v", n, len(enc), err, errTruncated)
		}
	}
}

// TestDecodeMetaDoesNotAlias checks that decoded strings do not share
// memory with the input, which the caller may reuse.
func TestDecodeMetaDoesNotAlias(t *testing.T) {
	enc := EncodeMeta(Meta{Role: RoleBackend, Applications: []Application{validApp()}})
	m, err := DecodeMeta(enc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range enc {
		enc[i] = 'X'
	}
	if !reflect.DeepEqual(m.Applications[0], validApp()) {
		t.Errorf("decoded value changed with its input: %+v", m.Applications[0])
	}
}
