package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/scrimplb/scrimp/catalog"
)

// The messages members send each other over memberlist's reliable (TCP)
// user messages. Each is one byte of type, then its body:
//
//	request: string from
//	state:   string from | 8-byte digest | encoded catalog.Meta (the rest)
//	ack:     string from | 8-byte digest
//	keyop:   string from | 16-byte id | 8-byte issued (Unix seconds, big
//	         endian) | 1-byte op | bytes key (empty for list)
//	keyres:  string from | 16-byte id | string error | uvarint count |
//	         count 8-byte key fingerprints | 8-byte primary fingerprint
//	ackset:  string from | uvarint count (1 to catalog.MaxAckSet) | count
//	         acknowledgements (8-byte big-endian node hash, strictly
//	         increasing and never catalog.AckSetNode | 8-byte digest)
//	string = uvarint length (minimal) | bytes (bytes: the same)
//
// Every message names its sender, which the receiver looks up among the
// members it knows from gossip; it never answers an address a message
// names. Decoding checks framing and bounds only: whether a state
// message's set is acceptable (its digest, its contents) is the
// receiver's decision, see Cluster.receiveState.

// msgType is the first byte of every message.
type msgType byte

const (
	// msgRequest asks a node for its application set.
	msgRequest msgType = 1
	// msgState carries a node's application set.
	msgState msgType = 2
	// msgAck tells a draining backend that a load balancer runs a
	// configuration without it. It backs up the acknowledgement in the
	// load balancer's beacon, which gossip may take a push/pull interval
	// to deliver to every member.
	msgAck msgType = 3
	// msgKeyOp asks a node to change (or list) its gossip keyring; only
	// sent when gossip is encrypted, so only key holders can send it.
	msgKeyOp msgType = 4
	// msgKeyResult answers a msgKeyOp: the outcome and the fingerprints
	// of the node's keys, never the keys.
	msgKeyResult msgType = 5
	// msgAckSet carries a load balancer's full acknowledgement set to a
	// draining backend: the beacon has room for a few acknowledgements
	// only, and names the full set by its digest (catalog.AckSetNode). The
	// backend takes it only if it hashes to that digest.
	msgAckSet msgType = 6
)

func (t msgType) String() string {
	switch t {
	case msgRequest:
		return "request"
	case msgState:
		return "state"
	case msgAck:
		return "ack"
	case msgKeyOp:
		return "keyop"
	case msgKeyResult:
		return "keyresult"
	case msgAckSet:
		return "ackset"
	}
	return fmt.Sprintf("type %d", byte(t))
}

// Bounds of a message; decoding rejects anything beyond them before it
// allocates.
const (
	// maxNameField is the longest encoded sender name: a two-byte
	// length (catalog.MaxNodeNameLen is over 127) and the name.
	maxNameField = 2 + catalog.MaxNodeNameLen
	// maxMessageSize is the longest message: a state message carrying
	// the largest set a node may advertise.
	maxMessageSize = 1 + maxNameField + len(catalog.Digest{}) + MaxStateSize
)

// message is one of requestMsg, stateMsg, ackMsg, keyOpMsg, keyResultMsg
// and ackSetMsg.
type message interface {
	msgType() msgType
	// appendBody appends the message's body (without its type byte).
	appendBody(b []byte) []byte
}

// requestMsg asks From's addressee for its application set; the answer is
// a stateMsg.
type requestMsg struct {
	From string
}

// stateMsg is From's application set: Set is an encoded catalog.Meta and
// Digest the digest From says it has. Neither is trusted until Set hashes
// to the digest From gossips in its own beacon.
type stateMsg struct {
	From   string
	Digest catalog.Digest
	Set    []byte
}

// ackMsg says load balancer From runs a configuration rendered from the
// addressee's application set Digest.
type ackMsg struct {
	From   string
	Digest catalog.Digest
}

// ackSetMsg is load balancer From's full acknowledgement set, in
// catalog.SortAcks order. It proves nothing by itself: it counts only if it
// hashes to the set digest in From's beacon (Cluster.receiveAckSet).
type ackSetMsg struct {
	From string
	Acks []catalog.Ack
}

func (ackSetMsg) msgType() msgType { return msgAckSet }

func (m ackSetMsg) appendBody(b []byte) []byte {
	b = appendName(b, m.From)
	b = binary.AppendUvarint(b, uint64(len(m.Acks)))
	return catalog.AppendAcks(b, m.Acks)
}

// ackEntryLen is the wire length of one acknowledgement.
const ackEntryLen = 16

func decodeAckSet(b []byte) (message, error) {
	from, rest, err := readName(b)
	if err != nil {
		return nil, err
	}
	n, rest, err := readLen(rest, "acknowledgement count", catalog.MaxAckSet)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, errors.New("no acknowledgements")
	}
	if len(rest) != n*ackEntryLen {
		return nil, fmt.Errorf("%d bytes for %d acknowledgements, want %d", len(rest), n, n*ackEntryLen)
	}
	m := ackSetMsg{From: from, Acks: make([]catalog.Ack, n)}
	for i := range m.Acks {
		e := rest[i*ackEntryLen:]
		a := catalog.Ack{Node: binary.BigEndian.Uint64(e)}
		copy(a.Digest[:], e[8:ackEntryLen])
		switch {
		case a.Node == catalog.AckSetNode:
			return nil, errors.New("an acknowledgement names the reserved node hash 0")
		case i > 0 && a.Node <= m.Acks[i-1].Node:
			return nil, errors.New("acknowledgements not in strictly increasing node order")
		}
		m.Acks[i] = a
	}
	return m, nil
}

func (requestMsg) msgType() msgType { return msgRequest }
func (stateMsg) msgType() msgType   { return msgState }
func (ackMsg) msgType() msgType     { return msgAck }

func (m requestMsg) appendBody(b []byte) []byte { return appendName(b, m.From) }

func (m stateMsg) appendBody(b []byte) []byte {
	b = appendName(b, m.From)
	b = append(b, m.Digest[:]...)
	return append(b, m.Set...)
}

func (m ackMsg) appendBody(b []byte) []byte {
	b = appendName(b, m.From)
	return append(b, m.Digest[:]...)
}

// encodeMessage returns m's wire form. It does not validate: a node sends
// only its own name and its own validated set.
func encodeMessage(m message) []byte {
	return m.appendBody([]byte{byte(m.msgType())})
}

// decodeMessage parses a message from a peer. The result owns its memory
// (memberlist may reuse b). Anything malformed, truncated, oversized, of
// an unknown type, followed by trailing bytes or naming an invalid sender
// is an error, and then the message is nil.
func decodeMessage(b []byte) (message, error) {
	if len(b) == 0 {
		return nil, errors.New("empty message")
	}
	if len(b) > maxMessageSize {
		return nil, fmt.Errorf("message of %d bytes, at most %d allowed", len(b), maxMessageSize)
	}
	t, body := msgType(b[0]), b[1:]
	var m message
	var err error
	switch t {
	case msgRequest:
		m, err = decodeRequest(body)
	case msgState:
		m, err = decodeState(body)
	case msgAck:
		m, err = decodeAck(body)
	case msgKeyOp:
		m, err = decodeKeyOp(body)
	case msgKeyResult:
		m, err = decodeKeyResult(body)
	case msgAckSet:
		m, err = decodeAckSet(body)
	default:
		return nil, fmt.Errorf("unknown message type %d", b[0])
	}
	if err != nil {
		return nil, fmt.Errorf("%s message: %w", t, err)
	}
	return m, nil
}

func decodeRequest(b []byte) (message, error) {
	from, rest, err := readName(b)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(rest))
	}
	return requestMsg{From: from}, nil
}

func decodeState(b []byte) (message, error) {
	from, rest, err := readName(b)
	if err != nil {
		return nil, err
	}
	m := stateMsg{From: from}
	if len(rest) < len(m.Digest) {
		return nil, errors.New("truncated digest")
	}
	copy(m.Digest[:], rest)
	rest = rest[len(m.Digest):]
	if len(rest) == 0 {
		return nil, errors.New("no application set")
	}
	if len(rest) > MaxStateSize {
		return nil, fmt.Errorf("application set of %d bytes, at most %d allowed", len(rest), MaxStateSize)
	}
	m.Set = bytes.Clone(rest)
	return m, nil
}

func decodeAck(b []byte) (message, error) {
	from, rest, err := readName(b)
	if err != nil {
		return nil, err
	}
	m := ackMsg{From: from}
	if len(rest) != len(m.Digest) {
		return nil, fmt.Errorf("%d bytes of digest, want %d", len(rest), len(m.Digest))
	}
	copy(m.Digest[:], rest)
	return m, nil
}

func appendName(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// readName reads a sender name: a minimal uvarint length, at most
// catalog.MaxNodeNameLen, then a name catalog.CheckNodeName accepts.
func readName(b []byte) (string, []byte, error) {
	n, k := binary.Uvarint(b)
	if k == 0 {
		return "", nil, errors.New("truncated sender name")
	}
	if k < 0 {
		return "", nil, errors.New("sender name length overflows 64 bits")
	}
	if k != uvarintLen(n) {
		return "", nil, errors.New("sender name length not minimally encoded")
	}
	if n > catalog.MaxNodeNameLen {
		return "", nil, fmt.Errorf("sender name of %d bytes, at most %d allowed", n, catalog.MaxNodeNameLen)
	}
	if n > uint64(len(b)-k) {
		return "", nil, errors.New("truncated sender name")
	}
	name := string(b[k : k+int(n)])
	if err := catalog.CheckNodeName(name); err != nil {
		return "", nil, fmt.Errorf("sender name: %w", err)
	}
	return name, b[k+int(n):], nil
}

func uvarintLen(v uint64) int {
	var buf [binary.MaxVarintLen64]byte
	return binary.PutUvarint(buf[:], v)
}

// Bounds of the key messages.
const (
	// keyOpIDLen is the length of a key operation's random request id.
	keyOpIDLen = 16
	// maxKeyLen is the longest key memberlist accepts (AES-256).
	maxKeyLen = 32
	// maxKeyError bounds the error text in a key result.
	maxKeyError = 256
	// maxResultKeys bounds the fingerprints in a key result; a keyring
	// holds a handful of keys during a rotation.
	maxResultKeys = 256
	// fingerprintLen is the length of a key fingerprint on the wire: the
	// first bytes of the key's SHA-256 (keyring.Fingerprint in binary).
	fingerprintLen = 8
)

// KeyOpKind is what a key operation does to a gossip keyring.
type KeyOpKind uint8

// The key operations, as on the wire.
const (
	// KeyList changes nothing: every node reports its keys.
	KeyList KeyOpKind = 1
	// KeyInstall adds a key, accepted for decryption from then on.
	KeyInstall KeyOpKind = 2
	// KeyUse makes an installed key the primary, used to encrypt.
	KeyUse KeyOpKind = 3
	// KeyRemove removes a key other than the primary.
	KeyRemove KeyOpKind = 4
)

// ParseKeyOp returns the operation named "list", "install", "use" or
// "remove".
func ParseKeyOp(s string) (KeyOpKind, error) {
	for k := KeyList; k <= KeyRemove; k++ {
		if k.String() == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown key operation %q: want list, install, use or remove", s)
}

func (k KeyOpKind) String() string {
	switch k {
	case KeyList:
		return "list"
	case KeyInstall:
		return "install"
	case KeyUse:
		return "use"
	case KeyRemove:
		return "remove"
	}
	return fmt.Sprintf("KeyOpKind(%d)", uint8(k))
}

// keyOpMsg asks its addressee to apply Op with Key to its keyring and to
// answer with a keyResultMsg carrying the same ID. Key is empty for
// KeyList and a valid key length otherwise.
//
// Issued is when the operation was sent (Unix seconds): with ID it lets a
// receiver refuse a recorded message replayed later (see freshKeyOp).
type keyOpMsg struct {
	From   string
	ID     [keyOpIDLen]byte
	Issued int64
	Op     KeyOpKind
	Key    []byte
}

// keyResultMsg is From's answer to the key operation ID: Error is empty
// when it succeeded; Keys are the fingerprints of From's keys afterwards,
// Primary that of its primary (zero when it has no keyring).
type keyResultMsg struct {
	From    string
	ID      [keyOpIDLen]byte
	Error   string
	Keys    [][fingerprintLen]byte
	Primary [fingerprintLen]byte
}

func (keyOpMsg) msgType() msgType     { return msgKeyOp }
func (keyResultMsg) msgType() msgType { return msgKeyResult }

func (m keyOpMsg) appendBody(b []byte) []byte {
	b = appendName(b, m.From)
	b = append(b, m.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Issued))
	b = append(b, byte(m.Op))
	b = binary.AppendUvarint(b, uint64(len(m.Key)))
	return append(b, m.Key...)
}

func (m keyResultMsg) appendBody(b []byte) []byte {
	b = appendName(b, m.From)
	b = append(b, m.ID[:]...)
	b = appendName(b, m.Error)
	b = binary.AppendUvarint(b, uint64(len(m.Keys)))
	for _, fp := range m.Keys {
		b = append(b, fp[:]...)
	}
	return append(b, m.Primary[:]...)
}

func decodeKeyOp(b []byte) (message, error) {
	from, rest, err := readName(b)
	if err != nil {
		return nil, err
	}
	m := keyOpMsg{From: from}
	if len(rest) < keyOpIDLen+8+1 {
		return nil, errors.New("truncated id, time or operation")
	}
	copy(m.ID[:], rest)
	m.Issued = int64(binary.BigEndian.Uint64(rest[keyOpIDLen:]))
	m.Op = KeyOpKind(rest[keyOpIDLen+8])
	rest = rest[keyOpIDLen+8+1:]
	if m.Op < KeyList || m.Op > KeyRemove {
		return nil, fmt.Errorf("unknown key operation %d", uint8(m.Op))
	}
	n, rest, err := readLen(rest, "key", maxKeyLen)
	if err != nil {
		return nil, err
	}
	if len(rest) != n {
		return nil, fmt.Errorf("%d bytes after a %d-byte key length", len(rest), n)
	}
	switch {
	case m.Op == KeyList && n != 0:
		return nil, errors.New("a list operation carries no key")
	case m.Op != KeyList && n != 16 && n != 24 && n != 32:
		return nil, fmt.Errorf("key of %d bytes; want 16, 24 or 32", n)
	}
	if n > 0 {
		m.Key = bytes.Clone(rest)
	}
	return m, nil
}

func decodeKeyResult(b []byte) (message, error) {
	from, rest, err := readName(b)
	if err != nil {
		return nil, err
	}
	m := keyResultMsg{From: from}
	if len(rest) < keyOpIDLen {
		return nil, errors.New("truncated id")
	}
	copy(m.ID[:], rest)
	rest = rest[keyOpIDLen:]
	n, rest, err := readLen(rest, "error text", maxKeyError)
	if err != nil {
		return nil, err
	}
	if len(rest) < n {
		return nil, errors.New("truncated error text")
	}
	m.Error = string(rest[:n])
	rest = rest[n:]
	if !printable(m.Error) {
		return nil, errors.New("error text is not printable UTF-8")
	}
	count, rest, err := readLen(rest, "key count", maxResultKeys)
	if err != nil {
		return nil, err
	}
	if len(rest) != (count+1)*fingerprintLen {
		return nil, fmt.Errorf("%d bytes for %d key fingerprints and the primary's, want %d", len(rest), count, (count+1)*fingerprintLen)
	}
	if count > 0 {
		m.Keys = make([][fingerprintLen]byte, count)
		for i := range m.Keys {
			copy(m.Keys[i][:], rest[i*fingerprintLen:])
		}
	}
	copy(m.Primary[:], rest[count*fingerprintLen:])
	return m, nil
}

// readLen reads a minimal uvarint of at most limit, naming what in errors.
func readLen(b []byte, what string, limit int) (int, []byte, error) {
	n, k := binary.Uvarint(b)
	switch {
	case k == 0:
		return 0, nil, fmt.Errorf("truncated %s length", what)
	case k < 0:
		return 0, nil, fmt.Errorf("%s length overflows 64 bits", what)
	case k != uvarintLen(n):
		return 0, nil, fmt.Errorf("%s length not minimally encoded", what)
	case n > uint64(limit):
		return 0, nil, fmt.Errorf("%s of %d, at most %d allowed", what, n, limit)
	}
	return int(n), b[k:], nil
}

// printable reports whether s is valid UTF-8 without control characters,
// so that a peer's error text is safe to log and print.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}
