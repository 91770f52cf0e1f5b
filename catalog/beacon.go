package catalog

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
)

// BeaconVersion is the format of the small record every node keeps in its
// gossip metadata. It is a separate format from Meta: memberlist carries at
// most 512 bytes of metadata with every ping, so the beacon holds only what
// must travel that often, and the full application set (a Meta) is fetched
// from the node when its digest changes.
const BeaconVersion = 2

// MaxAcks bounds how many drain acknowledgements a load balancer's beacon
// carries, keeping it far below memberlist's 512-byte metadata limit.
const MaxAcks = 24

// Digest identifies one encoded application set: the first 8 bytes of its
// SHA-256. A fetched set is accepted only if it hashes to the digest the
// node gossips, so no member can pass off another's applications.
type Digest [8]byte

// DigestOf returns the digest of an encoded Meta.
func DigestOf(encoded []byte) Digest {
	sum := sha256.Sum256(encoded)
	var d Digest
	copy(d[:], sum[:8])
	return d
}

// String formats the digest in hex.
func (d Digest) String() string { return fmt.Sprintf("%x", d[:]) }

// Ack is a load balancer's statement that its proxy runs a configuration
// rendered from the application set Digest of the node whose name hashes to
// Node. Draining backends wait for it before they leave.
type Ack struct {
	Node   uint64
	Digest Digest
}

// NodeHash is the compact form of a node name used in acknowledgements.
func NodeHash(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// Beacon is what a node gossips with every ping.
type Beacon struct {
	// Role is the part the node plays.
	Role Role
	// Digest identifies the node's current application set (the digest of
	// an empty set for load balancers).
	Digest Digest
	// Acks are a load balancer's acknowledgements of draining backends,
	// at most MaxAcks.
	Acks []Ack
}

// EncodeBeacon returns b's wire form:
//
//	version byte | role byte | 8-byte digest | uvarint ack count |
//	acks (8-byte big-endian node hash | 8-byte digest)...
func EncodeBeacon(b Beacon) ([]byte, error) {
	if len(b.Acks) > MaxAcks {
		return nil, fmt.Errorf("%d acknowledgements, at most %d fit", len(b.Acks), MaxAcks)
	}
	out := []byte{BeaconVersion, byte(b.Role)}
	out = append(out, b.Digest[:]...)
	out = binary.AppendUvarint(out, uint64(len(b.Acks)))
	for _, a := range b.Acks {
		out = binary.BigEndian.AppendUint64(out, a.Node)
		out = append(out, a.Digest[:]...)
	}
	return out, nil
}

// DecodeBeacon parses a peer's beacon strictly.
func DecodeBeacon(p []byte) (Beacon, error) {
	if len(p) == 0 {
		return Beacon{}, errors.New("metadata is empty")
	}
	if p[0] != BeaconVersion {
		return Beacon{}, fmt.Errorf("metadata format version %d, this build reads %d", p[0], BeaconVersion)
	}
	if len(p) < 2+8+1 {
		return Beacon{}, errTruncated
	}
	b := Beacon{Role: Role(p[1])}
	if b.Role != RoleLB && b.Role != RoleBackend {
		return Beacon{}, fmt.Errorf("unknown role %d", p[1])
	}
	copy(b.Digest[:], p[2:10])
	n, k := binary.Uvarint(p[10:])
	if k <= 0 {
		return Beacon{}, errTruncated
	}
	if n > MaxAcks {
		return Beacon{}, fmt.Errorf("%d acknowledgements, at most %d allowed", n, MaxAcks)
	}
	rest := p[10+k:]
	if uint64(len(rest)) != n*16 {
		return Beacon{}, fmt.Errorf("%d bytes of acknowledgements for %d entries", len(rest), n)
	}
	for i := uint64(0); i < n; i++ {
		var a Ack
		a.Node = binary.BigEndian.Uint64(rest[i*16:])
		copy(a.Digest[:], rest[i*16+8:i*16+16])
		b.Acks = append(b.Acks, a)
	}
	return b, nil
}
