package cluster

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/scrimplb/scrimp/catalog"
)

// validMessages are messages a node may send, from the smallest to the
// largest of each kind.
func validMessages() map[string]message {
	set := catalog.EncodeMeta(catalog.Meta{Role: catalog.RoleBackend, Applications: []catalog.Application{app("web", 8080)}})
	longName := strings.Repeat("n", catalog.MaxNodeNameLen)
	return map[string]message{
		"request":                     requestMsg{From: "lb-1"},
		"request from a long name":    requestMsg{From: longName},
		"state":                       stateMsg{From: "backend-1", Digest: catalog.DigestOf(set), Set: set},
		"state of a load balancer":    stateMsg{From: "lb.a_b-1", Digest: catalog.Digest{1}, Set: catalog.EncodeMeta(catalog.Meta{Role: catalog.RoleLB})},
		"state of the largest set":    stateMsg{From: longName, Digest: catalog.Digest{0xff}, Set: bytes.Repeat([]byte{7}, MaxStateSize)},
		"state whose digest is wrong": stateMsg{From: "b", Digest: catalog.Digest{}, Set: []byte{1}},
		"ack":                         ackMsg{From: "lb-1", Digest: catalog.Digest{1, 2, 3, 4, 5, 6, 7, 8}},
		"ack from a long name":        ackMsg{From: longName},
		"key list":                    keyOpMsg{From: "lb-1", ID: [keyOpIDLen]byte{1, 2}, Op: KeyList},
		"key install":                 keyOpMsg{From: "lb-1", ID: [keyOpIDLen]byte{3}, Issued: 1_800_000_000, Op: KeyInstall, Key: bytes.Repeat([]byte{7}, 32)},
		"key use, 16 bytes":           keyOpMsg{From: longName, Issued: -1, Op: KeyUse, Key: bytes.Repeat([]byte{8}, 16)},
		"key remove, 24 bytes":        keyOpMsg{From: "b", Op: KeyRemove, Key: bytes.Repeat([]byte{9}, 24)},
		"key result of no keyring":    keyResultMsg{From: "b", ID: [keyOpIDLen]byte{4}, Error: "no keyring"},
		"key result":                  keyResultMsg{From: "backend-1", Keys: [][fingerprintLen]byte{{1}, {2}}, Primary: [fingerprintLen]byte{1}},
		"key result, most keys":       keyResultMsg{From: longName, Error: strings.Repeat("é", maxKeyError/2), Keys: make([][fingerprintLen]byte, maxResultKeys)},
		"ack set of one":              ackSetMsg{From: "lb-1", Acks: []catalog.Ack{{Node: 1, Digest: catalog.Digest{9}}}},
		"ack set, largest":            ackSetMsg{From: longName, Acks: ackSet(catalog.MaxAckSet)},
	}
}

// ackSet returns n acknowledgements in catalog.SortAcks order.
func ackSet(n int) []catalog.Ack {
	acks := make([]catalog.Ack, n)
	for i := range acks {
		acks[i] = catalog.Ack{Node: catalog.NodeHash(fmt.Sprintf("backend-%d", i)), Digest: catalog.Digest{byte(i), byte(i >> 8)}}
	}
	return catalog.SortAcks(acks)
}

func TestMessageRoundTrip(t *testing.T) {
	for name, m := range validMessages() {
		t.Run(name, func(t *testing.T) {
			b := encodeMessage(m)
			if msgType(b[0]) != m.msgType() {
				t.Fatalf("type byte %d, want %d", b[0], m.msgType())
			}
			if len(b) > maxMessageSize {
				t.Fatalf("%d bytes, over maxMessageSize %d", len(b), maxMessageSize)
			}
			got, err := decodeMessage(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip: got %+v, want %+v", got, m)
			}
			// The decoded message owns its memory: memberlist may reuse
			// the buffer once NotifyMsg returns.
			clear(b)
			if !reflect.DeepEqual(got, m) {
				t.Fatal("decoded message shares memory with the input")
			}
		})
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	set := []byte{1, 2, 0}
	state := func(from string, digest int, set []byte) []byte {
		b := appendName([]byte{byte(msgState)}, from)
		return append(append(b, make([]byte, digest)...), set...)
	}
	keyOp := func(op byte, keyLen int) []byte {
		b := appendName([]byte{byte(msgKeyOp)}, "lb")
		b = append(b, make([]byte, keyOpIDLen+8)...)
		b = append(b, op)
		b = binary.AppendUvarint(b, uint64(keyLen))
		return append(b, make([]byte, keyLen)...)
	}
	// keyResult: count fingerprints announced, n (primary included) present.
	keyResult := func(errText string, count, n int) []byte {
		b := appendName([]byte{byte(msgKeyResult)}, "lb")
		b = append(b, make([]byte, keyOpIDLen)...)
		b = appendName(b, errText)
		b = binary.AppendUvarint(b, uint64(count))
		return append(b, make([]byte, n*fingerprintLen)...)
	}
	// ackSetBytes: an ack set message announcing count entries, with the
	// given node hashes (digests zero).
	ackSetBytes := func(count int, nodes ...uint64) []byte {
		b := appendName([]byte{byte(msgAckSet)}, "lb")
		b = binary.AppendUvarint(b, uint64(count))
		for _, n := range nodes {
			b = binary.BigEndian.AppendUint64(b, n)
			b = append(b, make([]byte, 8)...)
		}
		return b
	}
	tests := []struct {
		name string
		b    []byte
		want string // in the error
	}{
		{"ack set without count", appendName([]byte{byte(msgAckSet)}, "lb"), "truncated acknowledgement count length"},
		{"empty ack set", ackSetBytes(0), "no acknowledgements"},
		{"ack set over the limit", ackSetBytes(catalog.MaxAckSet + 1), "acknowledgement count of 4097, at most 4096"},
		{"ack set short of entries", ackSetBytes(3, 1, 2), "32 bytes for 3 acknowledgements"},
		{"ack set with trailing bytes", append(ackSetBytes(1, 1), 0), "17 bytes for 1 acknowledgements"},
		{"ack set with a truncated entry", ackSetBytes(1, 1)[:20], "bytes for 1 acknowledgements"},
		{"ack set naming the reserved hash", ackSetBytes(2, 0, 1), "reserved node hash 0"},
		{"ack set out of order", ackSetBytes(2, 5, 3), "strictly increasing"},
		{"ack set with a repeated node", ackSetBytes(2, 5, 5), "strictly increasing"},
		{"ack set with non-minimal count", append(appendName([]byte{byte(msgAckSet)}, "lb"), 0x81, 0x00), "not minimally encoded"},
		{"valid ack set for contrast", ackSetBytes(2, 1, math.MaxUint64), ""},
		{"empty", nil, "empty message"},
		{"unknown type", []byte{9, 1, 'a'}, "unknown message type 9"},
		{"type zero", []byte{0}, "unknown message type 0"},
		{"request without name", []byte{byte(msgRequest)}, "truncated sender name"},
		{"request with empty name", []byte{byte(msgRequest), 0}, "must not be empty"},
		{"request with truncated name", []byte{byte(msgRequest), 5, 'a', 'b'}, "truncated sender name"},
		{"request with trailing bytes", []byte{byte(msgRequest), 1, 'a', 0}, "1 trailing bytes"},
		{"request with non-minimal length", []byte{byte(msgRequest), 0x81, 0x00, 'a'}, "not minimally encoded"},
		{"request with overlong varint", append([]byte{byte(msgRequest)}, bytes.Repeat([]byte{0xff}, 11)...), "overflows"},
		{"name over the limit", appendName([]byte{byte(msgRequest)}, strings.Repeat("n", catalog.MaxNodeNameLen+1)), "at most 128 allowed"},
		{"name with a metacharacter", appendName([]byte{byte(msgRequest)}, "a;b"), "only letters"},
		{"name with a newline", appendName([]byte{byte(msgAck)}, "a\nb"), "only letters"},
		{"state with short digest", state("b", 7, nil), "truncated digest"},
		{"state without set", state("b", 8, nil), "no application set"},
		{"state set over the limit", state("b", 8, make([]byte, MaxStateSize+1)), "at most 1048576 allowed"},
		{"message over the limit", state(strings.Repeat("n", catalog.MaxNodeNameLen), 8, make([]byte, MaxStateSize+1)), "bytes, at most"},
		{"ack with short digest", append(appendName([]byte{byte(msgAck)}, "lb"), 1, 2, 3), "3 bytes of digest"},
		{"ack with long digest", append(appendName([]byte{byte(msgAck)}, "lb"), make([]byte, 9)...), "9 bytes of digest"},
		{"key op without id", append(appendName([]byte{byte(msgKeyOp)}, "lb"), 1, 2), "truncated id, time or operation"},
		{"key op of unknown kind", keyOp(5, 0), "unknown key operation 5"},
		{"key op of kind zero", keyOp(0, 0), "unknown key operation 0"},
		{"list with a key", keyOp(byte(KeyList), 16), "carries no key"},
		{"install without key", keyOp(byte(KeyInstall), 0), "key of 0 bytes"},
		{"install with a 20-byte key", keyOp(byte(KeyInstall), 20), "key of 20 bytes"},
		{"key over the limit", keyOp(byte(KeyInstall), 33), "key of 33, at most 32"},
		{"key op with trailing bytes", append(keyOp(byte(KeyInstall), 16), 0), "17 bytes after a 16-byte key length"},
		{"truncated key", keyOp(byte(KeyInstall), 16)[:30], "bytes after a 16-byte key length"},
		{"key result without id", append(appendName([]byte{byte(msgKeyResult)}, "lb"), 1), "truncated id"},
		{"key result error over the limit", keyResult(strings.Repeat("e", maxKeyError+1), 0, 0), "error text of 257, at most 256"},
		{"key result error with a newline", keyResult("a\nb", 0, 0), "not printable"},
		{"key result error not UTF-8", keyResult("a\xffb", 0, 0), "not printable"},
		{"key result with too many keys", keyResult("", maxResultKeys+1, maxResultKeys+2), "key count of 257, at most 256"},
		{"key result short of fingerprints", keyResult("", 2, 2), "16 bytes for 2 key fingerprints"},
		{"key result with trailing bytes", append(keyResult("", 1, 2), 0), "17 bytes for 1 key fingerprints"},
		{"valid key result for contrast", keyResult("refused", 2, 3), ""},
		{"valid state for contrast", state("b", 8, set), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := decodeMessage(tc.b)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if m != nil {
				t.Fatalf("error came with message %+v", m)
			}
		})
	}
}

// FuzzDecodeMessage feeds decodeMessage arbitrary bytes. It must never
// panic; what it accepts must be within every bound, name a valid sender,
// and be the canonical encoding of what it decodes to, so that
// decode(encode(m)) == m.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range validMessages() {
		if b := encodeMessage(m); len(b) < 4096 {
			f.Add(b)
		}
	}
	for _, b := range [][]byte{
		nil,
		{0},
		{byte(msgRequest)},
		{byte(msgRequest), 0},
		{byte(msgRequest), 0x81, 0x00, 'a'},
		{byte(msgState), 1, 'b', 1, 2, 3, 4, 5, 6, 7},
		{byte(msgAck), 1, 'b', 1, 2, 3, 4, 5, 6, 7, 8, 9},
		{byte(msgAck), 0x80, 0x01, 'x'},
		{6, 1, 'a'},
		append(appendName([]byte{byte(msgAckSet)}, "a"), 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8),
		append(appendName([]byte{byte(msgAckSet)}, "a"), 2, 0, 0, 0, 0, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8),
		append(appendName([]byte{byte(msgAckSet)}, "a"), 0x80, 0x20),
		append(append(appendName([]byte{byte(msgKeyOp)}, "a"), make([]byte, keyOpIDLen+8)...), byte(KeyInstall), 16),
		append(append(appendName([]byte{byte(msgKeyResult)}, "a"), make([]byte, keyOpIDLen)...), 1, 'x', 1),
		bytes.Repeat([]byte{0xff}, 32),
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		m, err := decodeMessage(in)
		if err != nil {
			if m != nil {
				t.Fatalf("error %v came with message %+v", err, m)
			}
			return
		}
		if len(b) > maxMessageSize {
			t.Fatalf("accepted %d bytes, over %d", len(b), maxMessageSize)
		}
		var from string
		switch m := m.(type) {
		case requestMsg:
			from = m.From
		case ackMsg:
			from = m.From
		case stateMsg:
			from = m.From
			if len(m.Set) == 0 || len(m.Set) > MaxStateSize {
				t.Fatalf("accepted a set of %d bytes", len(m.Set))
			}
		case keyOpMsg:
			from = m.From
			if m.Op == KeyList && len(m.Key) != 0 || m.Op != KeyList && len(m.Key) != 16 && len(m.Key) != 24 && len(m.Key) != 32 {
				t.Fatalf("accepted %s with a %d-byte key", m.Op, len(m.Key))
			}
		case keyResultMsg:
			from = m.From
			if len(m.Error) > maxKeyError || !printable(m.Error) || len(m.Keys) > maxResultKeys {
				t.Fatalf("accepted a result with error %q and %d keys", m.Error, len(m.Keys))
			}
		case ackSetMsg:
			from = m.From
			if len(m.Acks) == 0 || len(m.Acks) > catalog.MaxAckSet {
				t.Fatalf("accepted a set of %d acknowledgements", len(m.Acks))
			}
			for i, a := range m.Acks {
				if a.Node == catalog.AckSetNode || i > 0 && a.Node <= m.Acks[i-1].Node {
					t.Fatalf("accepted acknowledgement %d of node %d after %d", i, a.Node, m.Acks[max(i-1, 0)].Node)
				}
			}
			if !slices.Equal(catalog.SortAcks(slices.Clone(m.Acks)), m.Acks) {
				t.Fatal("accepted a set that is not in SortAcks order")
			}
		default:
			t.Fatalf("decoded to %T", m)
		}
		if err := catalog.CheckNodeName(from); err != nil {
			t.Fatalf("accepted sender %q: %v", from, err)
		}
		clear(in) // the message must not share the input's memory
		enc := encodeMessage(m)
		if !bytes.Equal(enc, b) {
			t.Fatalf("accepted input is not the canonical encoding:\n got %x\nwant %x", enc, b)
		}
		again, err := decodeMessage(enc)
		if err != nil {
			t.Fatalf("re-encoding rejected: %v", err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip changed the message: got %+v, want %+v", again, m)
		}
	})
}
