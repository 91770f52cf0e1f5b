package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/scrimplb/scrimp/catalog"
)

// The messages members send each other over memberlist's reliable (TCP)
// user messages. Each is one byte of type, then its body:
//
//	request: string from
//	state:   string from | 8-byte digest | encoded catalog.Meta (the rest)
//	ack:     string from | 8-byte digest
//	string = uvarint length (minimal) | bytes
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
)

func (t msgType) String() string {
	switch t {
	case msgRequest:
		return "request"
	case msgState:
		return "state"
	case msgAck:
		return "ack"
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

// message is one of requestMsg, stateMsg and ackMsg.
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
