package catalog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// WireVersion is the metadata format this build writes. Decoders reject
// other versions rather than guess.
const WireVersion = 1

// Meta is the part of a Node that travels in gossip metadata.
type Meta struct {
	// Role is the part the node plays.
	Role Role
	// Applications are the node's applications, sorted by name.
	Applications []Application
}

// EncodeMeta returns the compact binary encoding of m:
//
//	version byte | role byte | uvarint app count | apps...
//	app = string name | protocol byte | uvarint listen port |
//	      uvarint application port | uvarint domain count | string domains... |
//	      flags byte | optional fields, in flag order
//	optional fields (present when their flag bit is set):
//	      0x01 uvarint path count | string paths...
//	      0x02 balance byte | string hash key
//	      0x04 uvarint weight
//	      0x08 string health path
//	      0x10 uvarint max fails
//	      0x20 string fail timeout
//	      0x40 state byte
//	      0x80 more flags byte, whose bits are:
//	           0x01 redirect-http (no value)
//	string = uvarint length | bytes
//
// Optional fields cost nothing when unset, which matters inside
// memberlist's 512-byte metadata.
//
// Applications are written sorted by name so that equal sets encode equally.
// EncodeMeta does not validate; callers validate before advertising.
func EncodeMeta(m Meta) []byte {
	apps := slices.Clone(m.Applications)
	slices.SortFunc(apps, func(a, b Application) int { return strings.Compare(a.Name, b.Name) })
	b := []byte{WireVersion, byte(m.Role)}
	b = binary.AppendUvarint(b, uint64(len(apps)))
	for _, a := range apps {
		b = appendApp(b, a)
	}
	return b
}

// EncodedSize returns how many bytes a takes in the metadata encoding, so an
// oversize advertisement can say which applications use the room.
func EncodedSize(a Application) int { return len(appendApp(nil, a)) }

func appendApp(b []byte, a Application) []byte {
	b = appendString(b, a.Name)
	b = append(b, byte(slices.Index(protocols, a.Protocol)))
	b = binary.AppendUvarint(b, uint64(a.ListenPort))
	b = binary.AppendUvarint(b, uint64(a.ApplicationPort))
	b = binary.AppendUvarint(b, uint64(len(a.Domains)))
	for _, d := range a.Domains {
		b = appendString(b, d)
	}
	var flags byte
	if len(a.Paths) > 0 {
		flags |= flagPaths
	}
	if a.Balance != "" || a.HashKey != "" {
		flags |= flagBalance
	}
	if a.Weight != 0 {
		flags |= flagWeight
	}
	if a.HealthPath != "" {
		flags |= flagHealth
	}
	if a.MaxFails != 0 {
		flags |= flagMaxFails
	}
	if a.FailTimeout != "" {
		flags |= flagFailTimeout
	}
	if a.State != "" {
		flags |= flagState
	}
	var more byte
	if a.RedirectHTTP {
		more |= moreRedirectHTTP
	}
	if more != 0 {
		flags |= flagMore
	}
	b = append(b, flags)
	if flags&flagPaths != 0 {
		b = binary.AppendUvarint(b, uint64(len(a.Paths)))
		for _, p := range a.Paths {
			b = appendString(b, p)
		}
	}
	if flags&flagBalance != 0 {
		b = append(b, byte(slices.Index(balances, a.Balance)))
		b = appendString(b, a.HashKey)
	}
	if flags&flagWeight != 0 {
		b = binary.AppendUvarint(b, uint64(a.Weight))
	}
	if flags&flagHealth != 0 {
		b = appendString(b, a.HealthPath)
	}
	if flags&flagMaxFails != 0 {
		b = binary.AppendUvarint(b, uint64(a.MaxFails))
	}
	if flags&flagFailTimeout != 0 {
		b = appendString(b, a.FailTimeout)
	}
	if flags&flagState != 0 {
		b = append(b, byte(slices.Index(states, a.State)))
	}
	if flags&flagMore != 0 {
		b = append(b, more)
	}
	return b
}

// Flag bits of an application's optional fields.
const (
	flagPaths byte = 1 << iota
	flagBalance
	flagWeight
	flagHealth
	flagMaxFails
	flagFailTimeout
	flagState
	// flagMore says that a second flags byte follows the optional fields.
	flagMore
	flagsKnown = flagPaths | flagBalance | flagWeight | flagHealth | flagMaxFails | flagFailTimeout | flagState | flagMore
)

// Bits of the second flags byte (after flagMore).
const (
	moreRedirectHTTP byte = 1 << iota
	moreKnown             = moreRedirectHTTP
)

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// maxApps bounds how many applications a decoder accepts, so a small
// hostile message cannot make it allocate much.
const maxApps = 4096

// DecodeMeta parses and strictly validates metadata received from a peer.
// Anything malformed, truncated, followed by trailing bytes, of another
// version, or carrying a value that fails validation is an error: the
// caller drops the whole advertisement rather than render part of it.
func DecodeMeta(b []byte) (Meta, error) {
	d := decoder{b: b}
	version := d.byte()
	if d.err != nil {
		return Meta{}, errors.New("metadata is empty")
	}
	if version != WireVersion {
		return Meta{}, fmt.Errorf("metadata format version %d, this build reads %d", version, WireVersion)
	}
	m := Meta{Role: Role(d.byte())}
	if d.err == nil && m.Role != RoleLB && m.Role != RoleBackend {
		return Meta{}, fmt.Errorf("unknown role %d", m.Role)
	}
	n := d.uvarint()
	if n > maxApps {
		return Meta{}, fmt.Errorf("%d applications, at most %d allowed", n, maxApps)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		var a Application
		a.Name = d.string()
		p := d.byte()
		if d.err == nil && int(p) >= len(protocols) {
			return Meta{}, fmt.Errorf("application %d: unknown protocol %d", i, p)
		}
		if d.err == nil {
			a.Protocol = protocols[p]
		}
		a.ListenPort = d.port()
		a.ApplicationPort = d.port()
		nd := d.uvarint()
		if nd > MaxDomains {
			return Meta{}, fmt.Errorf("application %d: %d domains, at most %d allowed", i, nd, MaxDomains)
		}
		for j := uint64(0); j < nd && d.err == nil; j++ {
			a.Domains = append(a.Domains, d.string())
		}
		flags := d.byte()
		if d.err == nil && flags&^flagsKnown != 0 {
			return Meta{}, fmt.Errorf("application %d: unknown field flags %#x", i, flags&^flagsKnown)
		}
		if flags&flagPaths != 0 {
			np := d.uvarint()
			if np > MaxPaths || np == 0 {
				return Meta{}, fmt.Errorf("application %d: %d paths, 1 to %d allowed", i, np, MaxPaths)
			}
			for j := uint64(0); j < np && d.err == nil; j++ {
				a.Paths = append(a.Paths, d.string())
			}
		}
		if flags&flagBalance != 0 {
			bi := d.byte()
			if d.err == nil && int(bi) >= len(balances) {
				return Meta{}, fmt.Errorf("application %d: unknown balance %d", i, bi)
			}
			if d.err == nil {
				a.Balance = balances[bi]
			}
			a.HashKey = d.string()
		}
		if flags&flagWeight != 0 {
			a.Weight = d.small(MaxWeight)
		}
		if flags&flagHealth != 0 {
			a.HealthPath = d.string()
		}
		if flags&flagMaxFails != 0 {
			a.MaxFails = d.small(MaxMaxFails)
		}
		if flags&flagFailTimeout != 0 {
			a.FailTimeout = d.string()
		}
		if flags&flagState != 0 {
			si := d.byte()
			if d.err == nil && int(si) >= len(states) {
				return Meta{}, fmt.Errorf("application %d: unknown state %d", i, si)
			}
			if d.err == nil {
				a.State = states[si]
			}
		}
		if flags&flagMore != 0 {
			more := d.byte()
			if d.err == nil && (more == 0 || more&^moreKnown != 0) {
				return Meta{}, fmt.Errorf("application %d: unknown or empty second field flags %#x", i, more)
			}
			a.RedirectHTTP = more&moreRedirectHTTP != 0
		}
		if d.err != nil {
			break
		}
		if errs := a.Validate(); len(errs) > 0 {
			return Meta{}, fmt.Errorf("application %d (%q): %w", i, a.Name, errors.Join(errs...))
		}
		m.Applications = append(m.Applications, a)
	}
	if d.err != nil {
		return Meta{}, d.err
	}
	if len(d.b) != 0 {
		return Meta{}, fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if m.Role == RoleLB && len(m.Applications) > 0 {
		return Meta{}, errors.New("a load balancer advertises applications")
	}
	for i := 1; i < len(m.Applications); i++ {
		if m.Applications[i-1].Name >= m.Applications[i].Name {
			return Meta{}, fmt.Errorf("applications not sorted or duplicated at %q", m.Applications[i].Name)
		}
	}
	return m, nil
}

// decoder reads the wire format; the first error sticks and later reads
// return zero values.
type decoder struct {
	b   []byte
	err error
}

var errTruncated = errors.New("metadata is truncated")

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errTruncated
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) port() int {
	v := d.uvarint()
	if v > 65535 {
		d.err = fmt.Errorf("port %d out of range", v)
		return 0
	}
	return int(v)
}

// small reads a uvarint that must not exceed limit.
func (d *decoder) small(limit int) int {
	v := d.uvarint()
	if v > uint64(limit) {
		d.err = fmt.Errorf("value %d over the limit of %d", v, limit)
		return 0
	}
	return int(v)
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = errTruncated
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
