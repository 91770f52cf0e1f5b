package seed

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/scrimplb/scrimp/keyring"
)

// recordPurpose derives the key that signs seed records from a cluster
// key (keyring.Derive), so that the gossip encryption key itself never
// signs anything. It is also the first thing a signature covers.
const recordPurpose = "scrimp seed record v1"

// recordVersion is the only record format this code writes and reads.
// Readers skip other versions, so a future format can be rolled out by
// publishing both side by side. Version 1 records written before signing
// existed lack name and sig, and still parse.
const recordVersion = 1

// maxNodeName bounds the name a record may carry.
const maxNodeName = 256

// record is one load balancer's advertisement: an S3 object, or an entry
// of a file or exec seed list. Updated stays the string that was signed,
// so verifying never depends on how a time is formatted.
type record struct {
	Version int    `json:"version"`
	Name    string `json:"name,omitempty"`
	Address string `json:"address"`
	Updated string `json:"updated,omitempty"`
	// Sig is the base64 HMAC-SHA256 of message() under a key derived
	// from the keyring's primary; empty when no keyring is configured.
	Sig string `json:"sig,omitempty"`
}

// message is what the signature covers: the purpose, then every field as
// a length-prefixed string, so that no two different records can have
// the same message.
func (r *record) message() []byte {
	b := []byte(recordPurpose)
	for _, f := range []string{strconv.Itoa(r.Version), r.Name, r.Address, r.Updated} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

var (
	errUnsigned = errors.New("unsigned record: a keyring is configured, so only records signed with one of its keys are accepted")
	errBadSig   = errors.New("signature matches no key of the keyring: the record was altered, or signed by another cluster")
)

// signer signs records with the keyring's primary and verifies them
// against every key, so that records signed before a rotation stay valid
// while their key is kept. A nil *signer is the unsigned mode of a
// cluster without a keyring: it signs nothing and accepts every record.
// Its keys change only as a whole (rekey, after a rotation of the
// cluster's keyring), so it is safe for concurrent use.
type signer struct {
	keys atomic.Pointer[[][]byte] // HMAC keys derived from the keyring, the primary's first
}

// newSigner derives the record keys from keys; no keys means unsigned
// mode (a nil signer).
func newSigner(keys keyring.Keys) (*signer, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	s := &signer{}
	if err := s.rekey(keys); err != nil {
		return nil, err
	}
	return s, nil
}

// rekey replaces the record keys with ones derived from keys. A nil
// signer (a node started without a keyring) cannot take keys.
func (s *signer) rekey(keys keyring.Keys) error {
	if s == nil {
		return errors.New("seed: records are unsigned on this node (it started without a keyring)")
	}
	if err := keyring.Validate(keys); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	derived := make([][]byte, len(keys))
	for i, k := range keys {
		derived[i] = keyring.Derive(k, recordPurpose)
	}
	s.keys.Store(&derived)
	return nil
}

func mac(key, msg []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	return h.Sum(nil)
}

// sign sets r.Sig (clears it in unsigned mode).
func (s *signer) sign(r *record) {
	r.Sig = ""
	if s == nil {
		return
	}
	r.Sig = base64.StdEncoding.EncodeToString(mac((*s.keys.Load())[0], r.message()))
}

// verify returns nil if r is signed with one of the keys, or in unsigned
// mode whatever r carries: a cluster without keys cannot check a
// signature, and accepting signed records lets load balancers get keys
// before backends do.
func (s *signer) verify(r *record) error {
	if s == nil {
		return nil
	}
	if r.Sig == "" {
		return errUnsigned
	}
	sig, err := base64.StdEncoding.DecodeString(r.Sig)
	if err != nil || len(sig) != sha256.Size {
		return errBadSig
	}
	msg := r.message()
	for _, k := range *s.keys.Load() {
		if hmac.Equal(sig, mac(k, msg)) {
			return nil
		}
	}
	return errBadSig
}

// check validates a decoded record the same way for every provider:
// version, signature, name and address, in that order, so that a record
// of another cluster is reported as such rather than for its content. It
// returns the address in host:port form (defaultPort as for CheckAddress).
// The time is left to the caller: only S3 records expire.
func (s *signer) check(r *record, defaultPort int) (string, error) {
	if r.Version != recordVersion {
		return "", fmt.Errorf("unknown record version %d (this node reads version %d)", r.Version, recordVersion)
	}
	if err := s.verify(r); err != nil {
		return "", err
	}
	if err := checkNodeName(r.Name); err != nil {
		return "", err
	}
	return CheckAddress(r.Address, defaultPort)
}

// checkNodeName accepts an empty name (records of versions that did not
// carry one) or a short name of printable characters.
func checkNodeName(name string) error {
	if len(name) > maxNodeName {
		return fmt.Errorf("node name is longer than %d bytes", maxNodeName)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) || r == unicode.ReplacementChar {
			return fmt.Errorf("node name %q has an invalid character", name)
		}
	}
	return nil
}

// SignRecord returns a seed record for a load balancer named name at
// address, as JSON, signed with the primary of keys (unsigned when keys is
// empty). The file and exec providers accept such records as entries of
// their lists; a command line tool uses it to write them. updated is the
// time the record is made; readers other than S3 do not expire records.
func SignRecord(keys keyring.Keys, name, address string, updated time.Time) ([]byte, error) {
	s, err := newSigner(keys)
	if err != nil {
		return nil, fmt.Errorf("seed record: %w", err)
	}
	addr, err := CheckAddress(address, 0)
	if err != nil {
		return nil, fmt.Errorf("seed record: %w", err)
	}
	if err := checkNodeName(name); err != nil {
		return nil, fmt.Errorf("seed record: %w", err)
	}
	return s.marshal(name, addr, updated)
}

// marshal builds, signs and encodes the record of name at addr (already
// checked) made at updated.
func (s *signer) marshal(name, addr string, updated time.Time) ([]byte, error) {
	r := record{Version: recordVersion, Name: name, Address: addr, Updated: updated.UTC().Format(time.RFC3339Nano)}
	s.sign(&r)
	return json.Marshal(r)
}
