package catalog

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestBeaconRoundTrip(t *testing.T) {
	most := make([]Ack, MaxAcks-1)
	for i := range most {
		most[i] = Ack{Node: uint64(i + 1), Digest: Digest{byte(i)}}
	}
	tests := []struct {
		name string
		b    Beacon
	}{
		{"backend", Beacon{Role: RoleBackend, Digest: Digest{1, 2, 3}}},
		{"load balancer without acknowledgements", Beacon{Role: RoleLB}},
		{"acknowledgements without a set", Beacon{Role: RoleLB, Acks: []Ack{{Node: 7, Digest: Digest{1}}}}},
		{"a set and the most acknowledgements beside it", Beacon{Role: RoleLB, Acks: most, AckSet: Digest{9}, HasAckSet: true}},
		{"a set alone", Beacon{Role: RoleLB, AckSet: Digest{}, HasAckSet: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := EncodeBeacon(tc.b)
			if err != nil {
				t.Fatal(err)
			}
			if len(p) > 400 {
				t.Fatalf("%d bytes, far too close to memberlist's 512", len(p))
			}
			got, err := DecodeBeacon(p)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.b) {
				t.Fatalf("round trip: got %+v, want %+v", got, tc.b)
			}
		})
	}
}

// A beacon carrying a set digest is still a version 2 beacon: its digest is
// an entry under the reserved node hash, which a reader that knows nothing
// of sets takes for an acknowledgement of nobody.
func TestBeaconSetIsAnEntry(t *testing.T) {
	p, err := EncodeBeacon(Beacon{Role: RoleLB, Acks: []Ack{{Node: 5, Digest: Digest{5}}}, AckSet: Digest{7}, HasAckSet: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{BeaconVersion, byte(RoleLB), 0, 0, 0, 0, 0, 0, 0, 0, 2}
	want = binary.BigEndian.AppendUint64(want, AckSetNode)
	want = append(want, 7, 0, 0, 0, 0, 0, 0, 0)
	want = binary.BigEndian.AppendUint64(want, 5)
	want = append(want, 5, 0, 0, 0, 0, 0, 0, 0)
	if !bytes.Equal(p, want) {
		t.Fatalf("got %x, want %x", p, want)
	}
}

func TestBeaconRejects(t *testing.T) {
	tooMany := make([]Ack, MaxAcks)
	for i := range tooMany {
		tooMany[i] = Ack{Node: uint64(i + 1)}
	}
	encodeTests := []struct {
		name string
		b    Beacon
		want string
	}{
		{"too many acknowledgements with a set", Beacon{Role: RoleLB, Acks: tooMany, HasAckSet: true}, "25 acknowledgements, at most 24"},
		{"an acknowledgement of the reserved hash", Beacon{Role: RoleLB, Acks: []Ack{{Node: AckSetNode}}}, "reserved node hash"},
	}
	for _, tc := range encodeTests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := EncodeBeacon(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	twoSets := []byte{BeaconVersion, byte(RoleLB), 0, 0, 0, 0, 0, 0, 0, 0, 2}
	twoSets = append(twoSets, make([]byte, 32)...)
	if _, err := DecodeBeacon(twoSets); err == nil || !strings.Contains(err.Error(), "two acknowledgement set digests") {
		t.Fatalf("two set digests: error %v", err)
	}
}

func TestAckSetDigest(t *testing.T) {
	acks := []Ack{{Node: 3, Digest: Digest{3}}, {Node: 1, Digest: Digest{1}}, {Node: 2, Digest: Digest{2}}, {Node: 1, Digest: Digest{0}}}
	sorted := SortAcks(slices.Clone(acks))
	want := []Ack{{Node: 1, Digest: Digest{0}}, {Node: 2, Digest: Digest{2}}, {Node: 3, Digest: Digest{3}}}
	if !slices.Equal(sorted, want) {
		t.Fatalf("SortAcks = %v, want %v", sorted, want)
	}
	d := AckSetDigest(sorted)
	if AckSetDigest(slices.Clone(want)) != d {
		t.Fatal("the digest of an equal set differs")
	}
	for i := range want {
		other := slices.Clone(want)
		other[i].Digest[7] ^= 1
		if AckSetDigest(other) == d {
			t.Fatalf("changing entry %d keeps the digest", i)
		}
	}
	if AckSetDigest(want[:2]) == d {
		t.Fatal("a subset has the same digest")
	}
	if AckSetDigest(nil) == DigestOf(nil) {
		t.Fatal("an acknowledgement set's digest equals an application set's")
	}
}
