package catalog

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
)

// BeaconVersion is the format of the small record every node keeps in its
// gossip metadata. It is a separate format from Meta: memberlist carries at
// most 512 bytes of metadata with every ping, so the beacon holds only what
// must travel that often, and the full application set (a Meta) is fetched
// from the node when its digest changes.
const BeaconVersion = 2

// MaxAcks bounds how many drain acknowledgements a load balancer's beacon
// carries, keeping it far below memberlist's 512-byte metadata limit. The
// entry naming the full acknowledgement set (AckSetNode) counts among them.
const MaxAcks = 24

// AckSetNode is the node hash of the beacon entry that carries, in place of
// an acknowledgement, the digest of the load balancer's full
// acknowledgement set (AckSetDigest). The beacon holds only the first few
// acknowledgements; the full set is sent to each draining backend directly,
// and a backend takes it only if it hashes to this digest, so the direct
// message is worth exactly what the beacon is. Older readers of beacon
// version 2 see it as an acknowledgement of a node whose name hashes to 0,
// which none does in practice, so the format stays the same.
const AckSetNode uint64 = 0

// MaxAckSet bounds a full acknowledgement set, sent and accepted: that many
// draining backends at once, 64 KiB on the wire.
const MaxAckSet = 4096

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
	// at most MaxAcks (MaxAcks-1 with an AckSet); none names AckSetNode.
	Acks []Ack
	// AckSet, when HasAckSet, is the digest of the load balancer's full
	// acknowledgement set (AckSetDigest), of which Acks are a part.
	AckSet    Digest
	HasAckSet bool
}

// EncodeBeacon returns b's wire form:
//
//	version byte | role byte | 8-byte digest | uvarint entry count |
//	entries (8-byte big-endian node hash | 8-byte digest)...
//
// The ack set's digest, if any, is the first entry, under AckSetNode.
func EncodeBeacon(b Beacon) ([]byte, error) {
	n := len(b.Acks)
	if b.HasAckSet {
		n++
	}
	if n > MaxAcks {
		return nil, fmt.Errorf("%d acknowledgements, at most %d fit", n, MaxAcks)
	}
	out := []byte{BeaconVersion, byte(b.Role)}
	out = append(out, b.Digest[:]...)
	out = binary.AppendUvarint(out, uint64(n))
	if b.HasAckSet {
		out = binary.BigEndian.AppendUint64(out, AckSetNode)
		out = append(out, b.AckSet[:]...)
	}
	for _, a := range b.Acks {
		if a.Node == AckSetNode {
			return nil, errors.New("an acknowledgement names the reserved node hash 0")
		}
		out = binary.BigEndian.AppendUint64(out, a.Node)
		out = append(out, a.Digest[:]...)
	}
	return out, nil
}

// AppendAcks appends the wire form of acks: each an 8-byte big-endian node
// hash and an 8-byte digest.
func AppendAcks(out []byte, acks []Ack) []byte {
	for _, a := range acks {
		out = binary.BigEndian.AppendUint64(out, a.Node)
		out = append(out, a.Digest[:]...)
	}
	return out
}

// ackSetDomain separates the digests of acknowledgement sets from those of
// application sets.
const ackSetDomain = "scrimp ack set\x00"

// AckSetDigest returns the digest of a full acknowledgement set, which must
// be in AckSet order (SortAcks).
func AckSetDigest(acks []Ack) Digest {
	return DigestOf(AppendAcks([]byte(ackSetDomain), acks))
}

// SortAcks puts acks in AckSet order, by node hash, and keeps one
// acknowledgement per node hash (the first after sorting by digest). It
// returns the result, which shares acks' memory.
func SortAcks(acks []Ack) []Ack {
	slices.SortFunc(acks, func(a, b Ack) int {
		if c := cmp.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return bytes.Compare(a.Digest[:], b.Digest[:])
	})
	return slices.CompactFunc(acks, func(a, b Ack) bool { return a.Node == b.Node })
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
		if a.Node == AckSetNode {
			if b.HasAckSet {
				return Beacon{}, errors.New("two acknowledgement set digests")
			}
			b.AckSet, b.HasAckSet = a.Digest, true
			continue
		}
		b.Acks = append(b.Acks, a)
	}
	return b, nil
}
