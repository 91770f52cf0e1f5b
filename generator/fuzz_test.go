package generator

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/scrimplb/scrimp/catalog"
)

// FuzzRender renders what a peer could advertise with every generator, to
// show that nothing a peer sends can break a configuration or add to it.
//
// The input is raw gossip metadata. What catalog.DecodeMeta rejects is
// skipped (rejecting it is the decoder's job, fuzzed by FuzzDecodeMeta);
// what it accepts is advertised by one to three backends (addresses,
// weights, retained applications, certificates and a conflicting backend
// derived deterministically from the input) and rendered by every
// registered generator that needs no external file, plus the template
// generator with both shipped examples. Every rendering must be
//
//	(a) produced without error or panic, and byte-identical when rendered
//	    again (determinism);
//	(b) made only of the generator's own text and the validated values:
//	    see tokenVocab for how that is checked;
//	(c) accepted by the real proxy: `nginx -t` for nginx and the nginx
//	    example template, `haproxy -c` for haproxy, in both modes (an
//	    include file loaded the way a system proxy loads it), for the
//	    generators registered when the test runs.
//
// Throughput: most fuzzer inputs are rejected by the strict decoder in
// microseconds (the engine reports 5,000-15,000 execs/s on 2 cores). An
// accepted one costs about 10 ms for (a) and (b) over six renderers, and
// then five proxy checks: nginx -t takes 5-15 ms (more with
// certificates), haproxy -c about 35 ms; that makes about 5 accepted
// inputs per second per core. -proxy-check=false skips (c), for about 80
// per second per core; the interesting inputs it finds stay in the fuzz
// cache, and the next run with the checks starts by checking all of them.
// Keep minimization short, or every new interesting input costs a minute
// of proxy checks:
//
//	go test ./generator -run XXX -fuzz FuzzRender -fuzztime 120s -fuzzminimizetime 50x
//	go test ./generator -run XXX -fuzz FuzzRender -proxy-check=false
func FuzzRender(f *testing.F) {
	for _, m := range slices.Concat(fuzzSeedMetas(), fuzzEdgeMetas()) {
		f.Add(catalog.EncodeMeta(m))
	}
	for _, b := range [][]byte{
		nil,
		{1},
		{1, 1, 0},
		{1, 2, 0},
		{1, 2, 1, 3, 'w', 'e', 'b', 0, 80, 80, 0, 0},
		{1, 2, 1, 4, 'w', 'e', 'b', ';', 0, 80, 80, 0, 0},
		{1, 2, 1, 3, 'w', 'e', 'b', 0, 80, 80, 1, 5, 'a', ' ', 'b', '{', '}', 0},
		[]byte("\x01\x02\x01\x03web\x00\xd0\x00\x50\x00\x00"), // non-minimal varint
		[]byte(strings.Repeat("\xff", 64)),
	} {
		f.Add(b)
	}
	h := newFuzzHarness(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > fuzzMaxInput {
			return
		}
		m, err := catalog.DecodeMeta(b)
		if err != nil {
			return
		}
		h.run(t, m, knobsFor(b))
	})
}

// fuzzMaxInput bounds the inputs worth rendering. A real application set
// may be up to a megabyte, but beyond a few applications a larger input
// only repeats code paths already reached, at the cost of throughput.
const fuzzMaxInput = 16 << 10

var fuzzProxyCheck = flag.Bool("proxy-check", true, "FuzzRender: check every rendering with the real proxy binaries (5-30 ms each)")

// Fixed paths the renderings for (a) and (b) use. The proxy checks render
// again with real temporary directories, where the files exist.
const (
	fuzzStateDir = "/var/lib/scrimp"
	fuzzTLSDir   = "/etc/scrimp/tls"
)

// fuzzRenderer is one generator in one mode, and how to check its output.
type fuzzRenderer struct {
	name       string
	gen        Generator
	standalone bool
	proxy      string // the binary for check, "" for none
	check      func(bin, dir string, config []byte) error
	vocab      *tokenVocab
}

type fuzzHarness struct {
	renderers []*fuzzRenderer
	bins      map[string]string // proxy name -> binary, "" when missing
	certDir   string            // holds fuzz.pem and fuzz.key
}

// newFuzzHarness builds the generators and their reference vocabularies.
// Generators registered while this test is written (haproxy) are picked up
// by name; one that cannot be built without options is skipped.
func newFuzzHarness(f *testing.F) *fuzzHarness {
	f.Helper()
	h := &fuzzHarness{bins: map[string]string{}, certDir: filepath.Join(f.TempDir(), "tls")}
	if err := tmplCerts(h.certDir, "fuzz"); err != nil {
		f.Fatal(err)
	}
	add := func(r *fuzzRenderer) {
		if r.proxy != "" {
			if _, ok := h.bins[r.proxy]; !ok {
				h.bins[r.proxy] = tmplLookProxy(f, r.proxy, true)
			}
		}
		h.renderers = append(h.renderers, r)
	}
	for _, name := range Names() {
		if name == "template" {
			for _, ex := range []struct{ path, proxy string }{{tmplNginxExample, "nginx"}, {tmplCaddyExample, ""}} {
				raw, _ := json.Marshal(TemplateOptions{Path: ex.path})
				g, err := New(name, raw)
				if err != nil {
					f.Fatal(err)
				}
				r := &fuzzRenderer{name: "template " + filepath.Base(ex.path), gen: g, proxy: ex.proxy}
				if ex.proxy == "nginx" {
					r.check = tmplNginxIncludeTest
				}
				add(r)
			}
			continue
		}
		g, err := New(name, nil)
		if err != nil {
			f.Logf("generator %s needs options (%v); not fuzzed", name, err)
			continue
		}
		std := &fuzzRenderer{name: name + " standalone", gen: g, standalone: true}
		inc := &fuzzRenderer{name: name + " include", gen: g}
		switch name {
		case "nginx":
			std.proxy, std.check = "nginx", nginxStandaloneTest
			inc.proxy, inc.check = "nginx", tmplNginxIncludeTest
		case "haproxy":
			std.proxy, std.check = "haproxy", haproxyTest
			inc.proxy, inc.check = "haproxy", haproxyIncludeTest
			// Server slots, whose lines differ from plain server lines.
			rg, err := New(name, json.RawMessage(`{"runtime-api": true}`))
			if err != nil {
				f.Fatal(err)
			}
			add(&fuzzRenderer{name: name + " runtime-api", gen: rg, standalone: true, proxy: "haproxy", check: haproxyTest})
		}
		add(std)
		add(inc)
	}

	// The reference: every seed application set, rendered under every
	// reference variation of the cluster around it.
	for _, r := range h.renderers {
		r.vocab = newTokenVocab()
	}
	for _, m := range fuzzSeedMetas() {
		for _, k := range fuzzRefKnobs {
			in := fuzzInput(m, k, fuzzStateDir, fuzzTLSDir, false)
			vals := valuesOf(m)
			for _, r := range h.renderers {
				in.Standalone = r.standalone
				out, err := r.gen.Render(in)
				if err != nil {
					f.Fatalf("%s: the reference rendering failed: %v", r.name, err)
				}
				r.vocab.learn(out.Config, vals)
			}
		}
	}
	return h
}

// run checks (a), (b) and (c) for one accepted advertisement. Each
// renderer is checked on its own, so one input reports every generator it
// breaks.
func (h *fuzzHarness) run(t *testing.T, m catalog.Meta, k fuzzKnobs) {
	assertSafeValues(t, m)
	for _, r := range h.renderers {
		if err := h.check(t, r, m, k); err != nil {
			t.Errorf("%s: %v\napplications: %+v", r.name, err, m.Applications)
		}
	}
}

func (h *fuzzHarness) check(t *testing.T, r *fuzzRenderer, m catalog.Meta, k fuzzKnobs) error {
	in := fuzzInput(m, k, fuzzStateDir, fuzzTLSDir, false)
	in.Standalone = r.standalone
	out, err := r.gen.Render(in)
	if err != nil {
		return fmt.Errorf("(a) Render of a valid cluster failed: %w", err)
	}
	again, err := r.gen.Render(in)
	if err != nil || !bytes.Equal(again.Config, out.Config) || !slices.Equal(again.Warnings, out.Warnings) {
		return fmt.Errorf("(a) a second render of the same input differs (err %v)", err)
	}
	if tok, line, ok := r.vocab.check(out.Config, valuesOf(m)); !ok {
		return fmt.Errorf("(b) token %q on line %q is neither the generator's own text (seen in the reference renderings) nor built from validated values\n--- output:\n%s",
			tok, line, out.Config)
	}
	if r.check == nil || !*fuzzProxyCheck {
		return nil
	}
	bin := h.bins[r.proxy]
	if bin == "" {
		return nil // tmplLookProxy already failed the run in CI
	}
	dir := filepath.Join(fuzzTempDir(t), "state")
	real := fuzzInput(m, k, dir, h.certDir, true)
	real.Standalone = r.standalone
	if out, err = r.gen.Render(real); err != nil {
		return fmt.Errorf("(c) Render for the proxy check failed: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return err
	}
	if err := r.check(bin, dir, out.Config); err != nil {
		return fmt.Errorf("(c) the proxy rejected the rendering: %w\n--- configuration:\n%s", err, out.Config)
	}
	return nil
}

// fuzzTempDir is t.TempDir without the test's name in the path: a fuzz
// seed's name has a '#', which the nginx generator rightly refuses in a
// state directory it writes into nginx.conf.
func fuzzTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "scrimp-fuzz-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// nginxStandaloneTest has nginx check a complete configuration.
func nginxStandaloneTest(nginx, dir string, config []byte) error {
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, config, 0o644); err != nil {
		return err
	}
	return tmplRunProxy(nginx, "-t", "-q", "-p", dir+"/", "-c", conf, "-e", "stderr")
}

// haproxyTest has HAProxy check a complete configuration.
func haproxyTest(haproxy, dir string, config []byte) error {
	conf := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(conf, config, 0o644); err != nil {
		return err
	}
	return tmplRunProxy(haproxy, "-c", "-f", conf)
}

// haproxySystemConfig stands for a system HAProxy's own configuration:
// defaults and a listener of its own (without one, HAProxy refuses a
// configuration that serves nothing, as an include for an empty cluster
// does alone).
const haproxySystemConfig = `global
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend system
    bind 127.0.0.1:19999
    http-request return status 200
`

// haproxyIncludeTest checks an include file the way a system HAProxy
// loads it: after the main configuration (-f main -f include).
func haproxyIncludeTest(haproxy, dir string, fragment []byte) error {
	main, include := filepath.Join(dir, "haproxy.cfg"), filepath.Join(dir, "scrimp.cfg")
	if err := os.WriteFile(main, []byte(haproxySystemConfig), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(include, fragment, 0o644); err != nil {
		return err
	}
	return tmplRunProxy(haproxy, "-c", "-f", main, "-f", include)
}

// assertSafeValues checks the precondition that makes (b) sound: every
// string a peer controls is made of the grammar's characters only, none of
// which is white space or configuration syntax. FuzzDecodeMeta checks the
// same of the decoder; here it guards the reasoning of tokenVocab.
func assertSafeValues(t *testing.T, m catalog.Meta) {
	t.Helper()
	const safe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.*/~:"
	for _, a := range m.Applications {
		for _, v := range slices.Concat([]string{a.Name, a.HashKey, a.HealthPath, a.FailTimeout}, a.Domains, a.Paths) {
			if strings.Trim(v, safe) != "" {
				t.Fatalf("DecodeMeta accepted %q in %+v: a character outside every grammar", v, a)
			}
		}
	}
}

// fuzzKnobs is the cluster around a decoded application set: how many
// backends advertise it, from which kind of address, which applications
// are retained instead, which https domains have a certificate, whether a
// backend conflicts, and the listen address.
type fuzzKnobs struct {
	nodes    int    // backends, 1-3
	addrs    uint64 // 2 bits per backend: 0, 3 IPv4; 1 IPv6; 2 IPv4-mapped IPv6
	seed     uint64 // varies addresses and weights
	retain   uint64 // bit i: application i is retained (has no backends)
	tls      uint64 // bit i: application i's domains have a certificate
	pem      bool   // the certificate's key is in its file, not next to it
	drain    uint64 // bit i: application i is draining on backends after the first
	conflict bool   // the last backend advertises application 0 on another port
	listen   string
	// acme routes the challenge path of every https domain (see
	// fuzzACME); acmeShared puts it on the first http application's port.
	acme, acmeShared bool
}

// knobsFor derives the knobs from the input bytes, so that a failing input
// reproduces exactly.
func knobsFor(b []byte) fuzzKnobs {
	h := fnv.New64a()
	h.Write(b)
	s := h.Sum64()
	return fuzzKnobs{
		nodes:      1 + int(s%3),
		addrs:      s >> 2,
		seed:       s >> 8,
		retain:     (s >> 16) & (s >> 32) & (s >> 48), // about one in eight
		tls:        s >> 24,
		pem:        s>>61&1 == 1,
		drain:      (s >> 20) & (s >> 44),
		conflict:   s>>62&1 == 1,
		listen:     []string{"0.0.0.0", "::", "127.0.0.1"}[(s>>40)%3],
		acme:       s>>63&1 == 1,
		acmeShared: s>>60&1 == 1,
	}
}

// fuzzRefKnobs are the variations the reference renderings cover: every
// address kind, none, some and all applications retained or with a
// certificate, conflicts, and every listen address kind.
var fuzzRefKnobs = []fuzzKnobs{
	{nodes: 1, listen: "0.0.0.0"},
	{nodes: 3, addrs: 0b10_01_00, seed: 1, tls: ^uint64(0), pem: true, conflict: true, listen: "::", acme: true},
	{nodes: 2, addrs: 0b00_01, seed: 2, retain: ^uint64(0), tls: ^uint64(0), listen: "127.0.0.1", acme: true, acmeShared: true},
	{nodes: 3, addrs: 0b01_00_10, seed: 3, retain: 0x5555555555555555, tls: 0x5555555555555555, drain: ^uint64(0), conflict: true, listen: "0.0.0.0"},
	{nodes: 2, addrs: 0b11_10, seed: 4, retain: 0xaaaaaaaaaaaaaaaa, tls: 0xaaaaaaaaaaaaaaaa, pem: true, drain: 0x3333333333333333, listen: "::"},
	{nodes: 3, addrs: 0b01_01_01, seed: 5, retain: 0x9249249249249249, tls: 0x6db6db6db6db6db6, listen: "127.0.0.1"},
}

// fuzzInput builds the generator input for m under k. With forProxy set
// it is made checkable by a real proxy, which binds the listen addresses
// during its check: listen on 127.0.0.1, on ports mapped into 20000 and
// up. The catalog allows ports 1-65535, but ports below 1024 need root,
// and nothing else should depend on the port numbers. The map keeps the
// order of the ports and which applications share one, so the
// configuration has the same structure; only the numbers change.
func fuzzInput(m catalog.Meta, k fuzzKnobs, stateDir, tlsDir string, forProxy bool) Input {
	var live, retained []catalog.Application
	for i, a := range m.Applications {
		if k.retain>>(i%64)&1 == 1 {
			retained = append(retained, a)
		} else {
			live = append(live, a)
		}
	}
	var nodes []catalog.Node
	for i := range k.nodes {
		apps := slices.Clone(live)
		if i > 0 {
			// Backends may weigh themselves differently, and drain.
			for j := range apps {
				apps[j].Weight = int((k.seed + uint64(i*7+j)) % (catalog.MaxWeight + 1))
				if k.drain>>(j%64)&1 == 1 {
					apps[j].State = catalog.StateDraining
				}
			}
		}
		if k.conflict && i == k.nodes-1 && i > 0 && len(apps) > 0 {
			moved := apps[0]
			moved.ListenPort = moved.ListenPort%65535 + 1
			apps[0] = moved
		}
		nodes = append(nodes, catalog.Node{
			Name: fmt.Sprintf("b%d", i+1), Addr: fuzzAddr(k, i), Role: catalog.RoleBackend, Applications: apps,
		})
	}
	nodes = append(nodes, catalog.Node{Name: "lb-1", Addr: netip.MustParseAddr("10.0.0.100"), Role: catalog.RoleLB})

	var domains []string
	for i, a := range m.Applications {
		if k.tls>>(i%64)&1 == 1 {
			domains = append(domains, a.Domains...)
		}
	}
	in := Input{ListenAddr: k.listen, StateDir: stateDir, Retained: retained, ACME: fuzzACME(m, k)}
	if len(domains) > 0 {
		c := TLSCert{Domains: domains, Cert: filepath.Join(tlsDir, "fuzz.crt"), Key: filepath.Join(tlsDir, "fuzz.key")}
		if k.pem {
			c.Cert, c.Key = filepath.Join(tlsDir, "fuzz.pem"), filepath.Join(tlsDir, "fuzz.pem")
		}
		in.TLS = []TLSCert{c}
	}
	if forProxy {
		in.ListenAddr = "127.0.0.1"
		ports := map[int]int{}
		for _, n := range nodes {
			for _, a := range n.Applications {
				ports[a.ListenPort] = 0
			}
		}
		for _, a := range retained {
			ports[a.ListenPort] = 0
		}
		if in.ACME != nil {
			ports[int(in.ACME.Port)] = 0
		}
		for i, p := range slices.Sorted(maps.Keys(ports)) {
			ports[p] = 20000 + i
		}
		remap := func(apps []catalog.Application) []catalog.Application {
			apps = slices.Clone(apps)
			for j := range apps {
				apps[j].ListenPort = ports[apps[j].ListenPort]
			}
			return apps
		}
		for i := range nodes {
			nodes[i].Applications = remap(nodes[i].Applications)
		}
		in.Retained = remap(retained)
		if in.ACME != nil {
			in.ACME.Port = uint16(ports[int(in.ACME.Port)])
		}
	}
	in.Snapshot = catalog.NewSnapshot(nodes)
	return in
}

// fuzzAddr is backend i's address. IPv6 groups are written with decimal
// digits only (2001:db8::1234:5678), so an address is digits and fixed
// text, like every other number (see tokenVocab).
func fuzzAddr(k fuzzKnobs, i int) netip.Addr {
	s := k.seed>>(i*8) + uint64(i)
	bcd := func(n uint64) uint16 { // n < 10000 as four decimal digits
		return uint16(n/1000%10<<12 | n/100%10<<8 | n/10%10<<4 | n%10)
	}
	switch k.addrs >> (2 * i) & 3 {
	case 1:
		var b [16]byte
		b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
		g1, g2 := bcd(1+s%9999), bcd(1+s/9999%9999)
		b[12], b[13], b[14], b[15] = byte(g1>>8), byte(g1), byte(g2>>8), byte(g2)
		return netip.AddrFrom16(b)
	case 2:
		return netip.AddrFrom16(netip.AddrFrom4([4]byte{10, byte(i), byte(s), byte(s>>8) | 1}).As16())
	default:
		return netip.AddrFrom4([4]byte{10, byte(i), byte(s), byte(s>>8) | 1})
	}
}

// Value kinds: a placeholder in a reference token stands for any value of
// its kind in the input checked.
type valueKind uint8

const (
	kindLiteral valueKind = iota
	kindDigits            // a run of decimal digits
	kindName
	kindDomain
	kindPath
	kindHashName
)

// fuzzValue is one textual form of a validated value.
type fuzzValue struct {
	kind valueKind
	text string
}

// valuesOf lists every form in which a generator may write the validated
// values of m: as they are, and as generators legitimately derive them
// (a wildcard domain without "*.", a header name as an nginx variable, a
// path without its trailing slash, regular-expression quoting). Numbers
// (ports, weights, max-fails, timeouts, addresses) need no list: every
// digit run is a kindDigits placeholder.
func valuesOf(m catalog.Meta) []fuzzValue {
	var vals []fuzzValue
	add := func(kind valueKind, forms ...string) {
		for _, f := range forms {
			if f != "" && !slices.Contains(vals, fuzzValue{kind, f}) {
				vals = append(vals, fuzzValue{kind, f})
			}
		}
	}
	for _, a := range m.Applications {
		add(kindName, a.Name, strings.ReplaceAll(a.Name, "-", "_"))
		for _, d := range a.Domains {
			bare := strings.TrimPrefix(d, "*.")
			add(kindDomain, d, bare, "."+bare, regexp.QuoteMeta(bare), regexp.QuoteMeta(d))
		}
		for _, p := range append(slices.Clone(a.Paths), a.HealthPath) {
			if p != "" {
				add(kindPath, p, strings.TrimSuffix(p, "/"), regexp.QuoteMeta(p))
			}
		}
		if _, name := catalog.HashKeyParts(a.HashKey); name != "" {
			lower := strings.ToLower(name)
			add(kindHashName, a.HashKey, name, lower, strings.ReplaceAll(name, "-", "_"), strings.ReplaceAll(lower, "-", "_"))
		}
	}
	// Longest first, so that a value containing another is replaced whole.
	slices.SortStableFunc(vals, func(a, b fuzzValue) int { return len(b.text) - len(a.text) })
	return vals
}

// tokenVocab is the check (b): the output holds no text but the
// generator's own and the validated values.
//
// The output is split into white-space separated tokens. A reference
// rendering (every seed application set under every fuzzRefKnobs
// variation, with distinctive values such as "zqapi.example") teaches the
// vocabulary: each of its tokens verbatim, and its shape, in which every
// occurrence of a reference value becomes a placeholder of the value's
// kind and every digit run a digits placeholder ("scrimp_zqweb;" becomes
// "scrimp_<name>;", "10.0.0.1:8080" becomes "<#>.<#>.<#>.<#>:<#>"). A token
// of the output checked is accepted if it is a reference token verbatim, or
// if some shape matches it with each placeholder standing for a value of
// its kind from the checked input (or digits).
//
// Why that is sound: the values cannot contain white space (asserted by
// assertSafeValues), so a token never spans a value's boundary into text
// the generator did not write; every non-value part of an accepted token
// is literal text the generator itself wrote around a value of the same
// kind in the reference; and values appear only where the reference put a
// value of the same kind. A value that reached the output some other way,
// or text that came from neither, leaves a token no shape matches.
//
// It is strict about the generator: text the reference never produced
// (a comment for a combination the seeds lack, say) also fails, and the
// fix is then a seed that produces it. Digit runs are not checked against
// values: digits cannot form syntax in any proxy language scrimp targets.
type tokenVocab struct {
	literals map[string]bool
	shapes   map[string][]shapeSeg // by their text, to deduplicate
}

// shapeSeg is literal text, or a placeholder of kind.
type shapeSeg struct {
	kind valueKind
	lit  string
}

func newTokenVocab() *tokenVocab {
	return &tokenVocab{literals: map[string]bool{}, shapes: map[string][]shapeSeg{}}
}

// learn adds the tokens of a reference rendering; vals are its values.
func (v *tokenVocab) learn(config []byte, vals []fuzzValue) {
	for _, tok := range strings.Fields(string(config)) {
		v.literals[tok] = true
		segs := shapeOf(tok, vals)
		var key strings.Builder
		for _, s := range segs {
			if s.kind == kindLiteral {
				key.WriteString(s.lit)
			} else {
				fmt.Fprintf(&key, "\x00%d\x00", s.kind)
			}
		}
		v.shapes[key.String()] = segs
	}
}

// shapeOf replaces the values (longest first) and digit runs in tok by
// placeholders.
func shapeOf(tok string, vals []fuzzValue) []shapeSeg {
	var segs []shapeSeg
	lit := func(s string) {
		if n := len(segs); n > 0 && segs[n-1].kind == kindLiteral {
			segs[n-1].lit += s
			return
		}
		segs = append(segs, shapeSeg{lit: s})
	}
	for i := 0; i < len(tok); {
		matched := false
		for _, val := range vals {
			if strings.HasPrefix(tok[i:], val.text) {
				segs = append(segs, shapeSeg{kind: val.kind})
				i += len(val.text)
				matched = true
				break
			}
		}
		if matched {
			continue
		}
		if j := digitRun(tok, i); j > i {
			segs = append(segs, shapeSeg{kind: kindDigits})
			i = j
			continue
		}
		lit(tok[i : i+1])
		i++
	}
	return segs
}

func digitRun(s string, i int) int {
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// check returns the first token of config that the vocabulary does not
// account for, with its line; ok is true when there is none.
func (v *tokenVocab) check(config []byte, vals []fuzzValue) (token, line string, ok bool) {
	byKind := map[valueKind][]string{}
	for _, val := range vals {
		byKind[val.kind] = append(byKind[val.kind], val.text)
	}
	seen := map[string]bool{}
	for _, l := range strings.Split(string(config), "\n") {
		for _, tok := range strings.Fields(l) {
			if v.literals[tok] || seen[tok] {
				continue
			}
			if !v.matches(tok, byKind) {
				return tok, l, false
			}
			seen[tok] = true
		}
	}
	return "", "", true
}

func (v *tokenVocab) matches(tok string, byKind map[valueKind][]string) bool {
	for _, segs := range v.shapes {
		// Most shapes start or end with text the token lacks.
		if first := segs[0]; first.kind == kindLiteral && !strings.HasPrefix(tok, first.lit) {
			continue
		}
		if last := segs[len(segs)-1]; last.kind == kindLiteral && !strings.HasSuffix(tok, last.lit) {
			continue
		}
		if matchSegs(tok, segs, byKind) {
			return true
		}
	}
	return false
}

// matchSegs reports whether segs can produce s exactly, trying every value
// of a placeholder's kind and every length of a digit run.
func matchSegs(s string, segs []shapeSeg, byKind map[valueKind][]string) bool {
	if len(segs) == 0 {
		return s == ""
	}
	seg, rest := segs[0], segs[1:]
	switch seg.kind {
	case kindLiteral:
		return strings.HasPrefix(s, seg.lit) && matchSegs(s[len(seg.lit):], rest, byKind)
	case kindDigits:
		for j := digitRun(s, 0); j > 0; j-- {
			if matchSegs(s[j:], rest, byKind) {
				return true
			}
		}
		return false
	default:
		for _, val := range byKind[seg.kind] {
			if strings.HasPrefix(s, val) && matchSegs(s[len(val):], rest, byKind) {
				return true
			}
		}
		return false
	}
}

// fuzzApps are the seed applications. Their strings are distinctive
// ("zq..."), so that in the reference renderings they never coincide with
// a generator's own text, and together they reach every protocol, balance
// mode, hash key kind and option, and the combinations generators treat
// specially: a port shared by domain and catch-all applications, a second
// catch-all, two applications on one domain with different and with the
// same path, https with and without domains, a protocol clash on a port.
func fuzzApps() []catalog.Application {
	http, https, grpc := catalog.ProtocolHTTP, catalog.ProtocolHTTPS, catalog.ProtocolGRPC
	tcp, udp := catalog.ProtocolTCP, catalog.ProtocolUDP
	return []catalog.Application{
		{Name: "zqweb", ListenPort: 8080, ApplicationPort: 3000, Protocol: http, Domains: []string{"zqweb.example", "www.zqweb.example"},
			HealthPath: "/zqhealth", MaxFails: 3, FailTimeout: "10s"},
		{Name: "zqapi", ListenPort: 8080, ApplicationPort: 9000, Protocol: http, Domains: []string{"zqapi.example"},
			Paths: []string{"/zqone/", "/zqtwo"}, Balance: catalog.BalanceHash, HashKey: "header:X-Zq-Key", Weight: 7},
		{Name: "zqapitwo", ListenPort: 8080, ApplicationPort: 9001, Protocol: http, Domains: []string{"zqapi.example"},
			Paths: []string{"/zqthree/"}, Balance: catalog.BalanceRoundRobin},
		{Name: "zqapidup", ListenPort: 8080, ApplicationPort: 9002, Protocol: http, Domains: []string{"zqapi.example"},
			Paths: []string{"/zqone/"}},
		{Name: "zqsite", ListenPort: 8080, ApplicationPort: 8000, Protocol: http, Balance: catalog.BalanceLeastConn},
		{Name: "zqspare", ListenPort: 8080, ApplicationPort: 8001, Protocol: http},
		{Name: "zqlegacy_x-y", ListenPort: 8081, ApplicationPort: 8081, Protocol: http, Domains: []string{"zqlegacy.example"},
			Balance: catalog.BalanceHash, HashKey: "query:zq_q"},
		{Name: "zqshop", ListenPort: 8443, ApplicationPort: 8443, Protocol: https, Domains: []string{"zqshop.example", "*.zqshop.example"},
			Balance: catalog.BalanceHash, HashKey: "cookie:zq_sess", HealthPath: "/zqready", RedirectHTTP: true},
		{Name: "zqpay", ListenPort: 8443, ApplicationPort: 8444, Protocol: https, Domains: []string{"zqpay.example"},
			Paths: []string{"/zqcheckout/"}, Balance: catalog.BalanceRandom, MaxFails: 100, FailTimeout: "999999m"},
		{Name: "zqbare", ListenPort: 8444, ApplicationPort: 8445, Protocol: https},
		{Name: "zqrpc", ListenPort: 50051, ApplicationPort: 50051, Protocol: grpc, Domains: []string{"zqrpc.example"},
			Balance: catalog.BalanceHash, HashKey: "header:zq-tenant"},
		{Name: "zqstream", ListenPort: 50052, ApplicationPort: 50052, Protocol: grpc, Paths: []string{"/zqsvc.Zq/"},
			Balance: catalog.BalanceHash, HashKey: "source-ip"},
		{Name: "zqdb", ListenPort: 15432, ApplicationPort: 5432, Protocol: tcp, Balance: catalog.BalanceHash, HashKey: "source-ip"},
		{Name: "zqcache", ListenPort: 16379, ApplicationPort: 6379, Protocol: tcp, Balance: catalog.BalanceLeastConn, MaxFails: 5, FailTimeout: "1m", Weight: 100},
		{Name: "zqdns", ListenPort: 10053, ApplicationPort: 5353, Protocol: udp, Balance: catalog.BalanceRoundRobin},
		{Name: "zqntp", ListenPort: 10123, ApplicationPort: 123, Protocol: udp, Balance: catalog.BalanceRandom},
		{Name: "zqmix", ListenPort: 8080, ApplicationPort: 7000, Protocol: tcp},
		{Name: "zqlow", ListenPort: 80, ApplicationPort: 1, Protocol: http, Domains: []string{"zqlow.example"}},
	}
}

// fuzzMatrixApps are, per protocol, applications that between them set
// every option the protocol allows, each mode of balancing and each kind
// of hash key; tcp and udp ones also share a port.
func fuzzMatrixApps(p catalog.Protocol, port int) []catalog.Application {
	var apps []catalog.Application
	add := func(a catalog.Application) {
		a.Name = fmt.Sprintf("zqm-%s-%c", p, 'a'+len(apps))
		a.Protocol, a.ApplicationPort = p, 7000+len(apps)
		if a.ListenPort == 0 {
			a.ListenPort = port
		}
		apps = append(apps, a)
	}
	domain := func(label string) []string { return []string{label + ".zqm" + string(p) + ".example"} }
	if p.IsHTTP() {
		add(catalog.Application{Domains: domain("a"), Paths: []string{"/zqma/", "/zqmb"}, HealthPath: "/zqmhealth",
			Balance: catalog.BalanceHash, HashKey: "header:X-Zqm-Id", Weight: 9, MaxFails: 4, FailTimeout: "7s"})
		add(catalog.Application{Balance: catalog.BalanceLeastConn, HealthPath: "/zqmcheck"})
		add(catalog.Application{Domains: append(domain("*.b"), domain("b")...), Balance: catalog.BalanceHash, HashKey: "cookie:zqm_c"})
		add(catalog.Application{Domains: domain("c"), Balance: catalog.BalanceHash, HashKey: "query:zqm_q", Paths: []string{"/zqmc/"}})
		add(catalog.Application{Domains: domain("d"), Balance: catalog.BalanceHash, HashKey: "source-ip", MaxFails: 1, FailTimeout: "2m"})
		add(catalog.Application{Domains: domain("e"), Balance: catalog.BalanceRandom, Weight: 1})
		add(catalog.Application{Domains: domain("f"), Balance: catalog.BalanceRoundRobin, Paths: []string{"/zqmf/"}})
		return apps
	}
	add(catalog.Application{Balance: catalog.BalanceHash, HashKey: "source-ip", Weight: 9, MaxFails: 4, FailTimeout: "7s"})
	add(catalog.Application{ListenPort: port + 1, Balance: catalog.BalanceLeastConn})
	add(catalog.Application{ListenPort: port + 2, Balance: catalog.BalanceRandom, MaxFails: 100, FailTimeout: "999999m"})
	add(catalog.Application{ListenPort: port + 3, Balance: catalog.BalanceRoundRobin})
	add(catalog.Application{ListenPort: port + 3}) // a second one on the same port
	return apps
}

// fuzzClashApps share port 9090 with every protocol, with and without
// domains; fuzzClashHeads are those that sort before them, so that each
// protocol in turn is the port's first.
func fuzzClashApps() (heads, tails []catalog.Application) {
	app := func(name string, p catalog.Protocol, domains ...string) catalog.Application {
		return catalog.Application{Name: name, ListenPort: 9090, ApplicationPort: 9090, Protocol: p, Domains: domains}
	}
	heads = []catalog.Application{
		app("zqa-http", catalog.ProtocolHTTP), app("zqa-https", catalog.ProtocolHTTPS, "zqahttps.example"),
		app("zqa-grpc", catalog.ProtocolGRPC), app("zqa-tcp", catalog.ProtocolTCP), app("zqa-udp", catalog.ProtocolUDP),
	}
	tails = []catalog.Application{
		app("zqx-http", catalog.ProtocolHTTP, "zqxhttp.example"), app("zqx-httpany", catalog.ProtocolHTTP),
		app("zqx-https", catalog.ProtocolHTTPS, "zqxhttps.example"), app("zqx-httpsany", catalog.ProtocolHTTPS),
		app("zqx-grpc", catalog.ProtocolGRPC, "zqxgrpc.example"), app("zqx-grpcany", catalog.ProtocolGRPC),
		app("zqx-tcp", catalog.ProtocolTCP), app("zqx-udp", catalog.ProtocolUDP),
	}
	return heads, tails
}

// fuzzSeedMetas are the seed advertisements: each application alone, a
// few groups, all of them, every protocol first on a port shared with all
// the others, every option per protocol, and every instance state.
func fuzzSeedMetas() []catalog.Meta {
	apps := fuzzApps()
	pick := func(names ...string) []catalog.Application {
		var out []catalog.Application
		for _, a := range apps {
			if slices.Contains(names, a.Name) {
				out = append(out, a)
			}
		}
		return out
	}
	metas := []catalog.Meta{{Role: catalog.RoleBackend}, {Role: catalog.RoleLB}}
	for _, a := range apps {
		metas = append(metas, catalog.Meta{Role: catalog.RoleBackend, Applications: []catalog.Application{a}})
	}
	for _, group := range [][]string{
		{"zqweb", "zqapi", "zqapitwo", "zqapidup", "zqsite", "zqspare", "zqmix"},
		{"zqshop", "zqpay", "zqbare"},
		{"zqrpc", "zqstream", "zqweb"},
		{"zqdb", "zqcache", "zqdns", "zqntp"},
	} {
		metas = append(metas, catalog.Meta{Role: catalog.RoleBackend, Applications: pick(group...)})
	}
	metas = append(metas, catalog.Meta{Role: catalog.RoleBackend, Applications: apps})
	heads, tails := fuzzClashApps()
	for _, h := range heads {
		metas = append(metas, catalog.Meta{Role: catalog.RoleBackend, Applications: append([]catalog.Application{h}, tails...)})
	}
	for i, p := range []catalog.Protocol{catalog.ProtocolHTTP, catalog.ProtocolHTTPS, catalog.ProtocolGRPC, catalog.ProtocolTCP, catalog.ProtocolUDP} {
		metas = append(metas, catalog.Meta{Role: catalog.RoleBackend, Applications: fuzzMatrixApps(p, 7100+100*i)})
	}
	// Instances that are up, draining and down.
	var states []catalog.Application
	for i, st := range []catalog.State{catalog.StateUp, catalog.StateDraining, catalog.StateDown} {
		a := apps[i]
		a.State = st
		states = append(states, a)
	}
	return append(metas, catalog.Meta{Role: catalog.RoleBackend, Applications: states})
}

// fuzzEdgeMetas are seeds at the edges of the grammar: the longest names,
// domains, paths and key names, the most domains and paths, duplicates,
// the extreme ports, and values that look like something else (a domain
// of digits, a path of one slash). They are seeds only, not part of the
// reference: their values are not distinctive.
func fuzzEdgeMetas() []catalog.Meta {
	label := strings.Repeat("d", 63)
	long := label + "." + label + "." + label + "." + strings.Repeat("e", 61) // 253 characters
	var many []string
	for i := range catalog.MaxDomains {
		many = append(many, fmt.Sprintf("h%d.many.example", i))
	}
	var paths []string
	for i := range catalog.MaxPaths {
		paths = append(paths, fmt.Sprintf("/p%d/", i))
	}
	http := catalog.ProtocolHTTP
	apps := []catalog.Application{
		{Name: strings.Repeat("n", catalog.MaxNameLen), ListenPort: 65535, ApplicationPort: 1, Protocol: http, Domains: []string{long, "*." + long[4:]}},
		{Name: "many", ListenPort: 80, ApplicationPort: 80, Protocol: http, Domains: many, Paths: paths},
		{Name: "dups", ListenPort: 80, ApplicationPort: 81, Protocol: http, Domains: []string{"dup.example", "dup.example"}, Paths: []string{"/x", "/x"}},
		{Name: "slash", ListenPort: 81, ApplicationPort: 81, Protocol: http, Paths: []string{"/", "/~user/a..b/.hidden/", "/a//b"},
			HealthPath: "/" + strings.Repeat("p", catalog.MaxPathLen-1)},
		{Name: "digits", ListenPort: 82, ApplicationPort: 82, Protocol: catalog.ProtocolHTTPS, Domains: []string{"1.2.3.4", "localhost", "*.io"},
			Balance: catalog.BalanceHash, HashKey: "header:" + strings.Repeat("H", catalog.MaxKeyNameLen)},
		{Name: "oddkeys", ListenPort: 83, ApplicationPort: 83, Protocol: catalog.ProtocolGRPC, Balance: catalog.BalanceHash, HashKey: "header:-"},
		{Name: "oddcookie", ListenPort: 84, ApplicationPort: 84, Protocol: http, Balance: catalog.BalanceHash, HashKey: "cookie:_"},
		{Name: "oddquery", ListenPort: 85, ApplicationPort: 85, Protocol: http, Balance: catalog.BalanceHash, HashKey: "query:0"},
		{Name: "udp1", ListenPort: 1, ApplicationPort: 65535, Protocol: catalog.ProtocolUDP, Weight: catalog.MaxWeight, MaxFails: catalog.MaxMaxFails, FailTimeout: "1s"},
	}
	var metas []catalog.Meta
	for _, a := range apps {
		metas = append(metas, catalog.Meta{Role: catalog.RoleBackend, Applications: []catalog.Application{a}})
	}
	metas = append(metas, catalog.Meta{Role: catalog.RoleBackend, Applications: apps})

	// Many host names on one port: 10 applications of 64 names each.
	var crowd []catalog.Application
	for i := range 10 {
		var names []string
		for j := range catalog.MaxDomains {
			names = append(names, fmt.Sprintf("n%d.c%d.io", j, i))
		}
		crowd = append(crowd, catalog.Application{Name: fmt.Sprintf("crowd%d", i), ListenPort: 8080, ApplicationPort: 8080, Protocol: http, Domains: names})
	}
	return append(metas, catalog.Meta{Role: catalog.RoleBackend, Applications: crowd})
}

// TestFuzzSeedsValid keeps the seed corpus meaningful: every seed
// application validates and every seed advertisement decodes, so the
// fuzzer starts from inputs that reach the generators.
func TestFuzzSeedsValid(t *testing.T) {
	for _, m := range slices.Concat(fuzzSeedMetas(), fuzzEdgeMetas()) {
		enc := catalog.EncodeMeta(m)
		if _, err := catalog.DecodeMeta(enc); err != nil {
			t.Errorf("seed %+v does not decode: %v", m.Applications, err)
		}
	}
}

// TestTokenVocab shows the check (b) at work on a small vocabulary.
func TestTokenVocab(t *testing.T) {
	ref := []fuzzValue{{kindName, "zqweb"}, {kindDomain, "zqweb.example"}}
	slices.SortStableFunc(ref, func(a, b fuzzValue) int { return len(b.text) - len(a.text) })
	v := newTokenVocab()
	v.learn([]byte("upstream scrimp_zqweb {\n server 10.0.0.1:8080;\n}\nserver_name zqweb.example;\n"), ref)
	vals := []fuzzValue{{kindDomain, "shop.io"}, {kindName, "shop"}, {kindName, "server"}}
	tests := []struct {
		name   string
		config string
		ok     bool
	}{
		{name: "same text", config: "upstream scrimp_zqweb {", ok: true},
		{name: "other values", config: "upstream scrimp_shop {\nserver_name shop.io;\nserver 192.168.10.200:1;", ok: true},
		{name: "a value that is a keyword", config: "upstream scrimp_server {", ok: true},
		{name: "value of the wrong kind", config: "server_name shop;", ok: false},
		{name: "value not in the input", config: "upstream scrimp_other {", ok: false},
		{name: "new text", config: "include /etc/passwd;", ok: false},
		{name: "new text around a value", config: "server_name shop.io.evil;", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			slices.SortStableFunc(vals, func(a, b fuzzValue) int { return len(b.text) - len(a.text) })
			tok, _, ok := v.check([]byte(tt.config), vals)
			if ok != tt.ok {
				t.Errorf("check = %v (token %q), want %v", ok, tok, tt.ok)
			}
		})
	}
}

// fuzzACME is the ACME route of k: the domains of every https
// application (wildcards too, which the generators must refuse), on port
// 80 or, with acmeShared, the first http application's port.
func fuzzACME(m catalog.Meta, k fuzzKnobs) *ACMERoute {
	if !k.acme {
		return nil
	}
	r := &ACMERoute{Handler: netip.MustParseAddrPort("127.0.0.1:8099"), Port: 80}
	shared := !k.acmeShared
	for _, a := range m.Applications {
		switch {
		case a.Protocol == catalog.ProtocolHTTPS:
			r.Domains = append(r.Domains, a.Domains...)
		case a.Protocol == catalog.ProtocolHTTP && !shared:
			r.Port, shared = uint16(a.ListenPort), true
		}
	}
	return r
}
