// Package keyring reads and writes the cluster key file and derives
// sub-keys from its keys. The file (cluster.keyring-file) is a JSON array
// of base64 keys of 16, 24 or 32 bytes (AES-128/192/256, what memberlist
// accepts); the first is the primary, used to encrypt and sign, and every
// key is accepted when decrypting and verifying, so keys can be rotated
// without a flag day.
//
// Key material never leaves this package in printable form: Keys redacts
// itself in fmt, slog and JSON, and errors name a key by its index.
package keyring

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

const (
	// MaxFileSize bounds the key file: a key is 44 base64 characters, so
	// this allows well over a thousand keys and stops a wrong path (a log
	// file, a device) from being read whole.
	MaxFileSize = 64 << 10
	// GeneratedSize is the length of keys made by Generate: AES-256.
	GeneratedSize = 32
)

// Keys is a keyring: the primary first, then the other accepted keys. Its
// String, Format, LogValue and MarshalJSON print only the number of keys
// and their fingerprints, so a keyring that reaches a log line or an
// error message does not leak.
type Keys [][]byte

// Primary returns the key to encrypt and sign with, or nil for an empty
// keyring.
func (k Keys) Primary() []byte {
	if len(k) == 0 {
		return nil
	}
	return k[0]
}

// Fingerprints returns Fingerprint of every key, in order.
func (k Keys) Fingerprints() []string {
	fps := make([]string, len(k))
	for i, key := range k {
		fps[i] = Fingerprint(key)
	}
	return fps
}

// String describes the keyring without key material.
func (k Keys) String() string {
	return fmt.Sprintf("keyring(%d keys: %s)", len(k), strings.Join(k.Fingerprints(), " "))
}

// GoString redacts %#v as well.
func (k Keys) GoString() string { return k.String() }

// Format redacts every verb, including %x and %q, which would otherwise
// print the bytes of the keys.
func (k Keys) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// LogValue implements slog.LogValuer: the keys are logged as their count
// and fingerprints.
func (k Keys) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("count", len(k)), slog.Any("fingerprints", k.Fingerprints()))
}

// MarshalJSON redacts as well: keys are written to disk only by Save.
func (k Keys) MarshalJSON() ([]byte, error) { return json.Marshal(k.String()) }

// Fingerprint identifies a key for display: the first 8 bytes of its
// SHA-256, in hex. It is what logs, errors and the CLI show instead of
// the key, and it reveals nothing usable about the key.
func Fingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// Check returns an error unless key has a length AES (and so memberlist)
// accepts: 16, 24 or 32 bytes.
func Check(key []byte) error {
	switch len(key) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("key is %d bytes; want 16, 24 or 32 (AES-128, -192 or -256)", len(key))
}

// Validate checks a whole keyring: at least one key, every key of a valid
// length, no key twice. Errors name keys by index, e.g. "[2]", never by
// content; every problem is reported.
func Validate(keys Keys) error {
	if len(keys) == 0 {
		return errors.New("no keys: the keyring needs at least one (the primary)")
	}
	var errs []error
	seen := map[string]int{}
	for i, key := range keys {
		if err := Check(key); err != nil {
			errs = append(errs, fmt.Errorf("[%d]: %w", i, err))
			continue
		}
		if j, dup := seen[string(key)]; dup {
			errs = append(errs, fmt.Errorf("[%d]: same key as [%d]", i, j))
			continue
		}
		seen[string(key)] = i
	}
	return errors.Join(errs...)
}

// Generate returns a new random 32-byte (AES-256) key from crypto/rand.
func Generate() []byte {
	key := make([]byte, GeneratedSize)
	rand.Read(key) // never fails: it crashes the program rather than return weak bytes
	return key
}

// Derive returns a 32-byte sub-key of key for purpose (HKDF-SHA256 with
// purpose as the info string), so that a key is never used directly for
// two things: the gossip key encrypts, keys derived from it sign. purpose
// should name the use and a version, e.g. "scrimp seed record v1".
func Derive(key []byte, purpose string) []byte {
	sub, err := hkdf.Key(sha256.New, key, nil, purpose, 32)
	if err != nil {
		// Only an output longer than 255 hashes fails; 32 bytes cannot.
		panic("keyring: hkdf: " + err.Error())
	}
	return sub
}

// Load reads and validates the key file at path. It refuses a file that
// group or others can access (the keys are the cluster's only secret),
// that is not a regular file, that is larger than MaxFileSize, or whose
// content is not a non-empty JSON array of distinct base64 keys of a
// valid length. Errors name the file, and the key's index when one is bad.
func Load(path string) (Keys, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	defer f.Close()
	// Stat the open file, not the path, so the checked file is the read one.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("keyring %s: not a regular file (mode %s)", path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("keyring %s: mode %04o lets group or others access the cluster keys; fix it with: chmod 600 %s",
			path, perm, path)
	}
	if fi.Size() > MaxFileSize {
		return nil, fmt.Errorf("keyring %s: %d bytes, more than the %d bytes a key file may have", path, fi.Size(), MaxFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	if len(data) > MaxFileSize { // grew since Stat
		return nil, fmt.Errorf("keyring %s: more than the %d bytes a key file may have", path, MaxFileSize)
	}
	keys, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	return keys, nil
}

// Parse decodes and validates the content of a key file. Errors never
// quote the content.
func Parse(data []byte) (Keys, error) {
	var raw []json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		// The decoder's messages quote at most a character or a type,
		// never a whole string, but say only where it failed to be sure.
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("not a JSON array of base64 keys: syntax error at byte %d", se.Offset)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errors.New("not a JSON array of base64 keys: truncated")
		}
		return nil, errors.New(`not a JSON array of base64 keys, e.g. ["<base64 key>"]`)
	}
	if dec.More() {
		return nil, errors.New("data after the JSON array")
	}
	if len(raw) == 0 {
		return nil, errors.New("no keys: the keyring needs at least one (the primary)")
	}
	keys := make(Keys, len(raw))
	var errs []error
	for i, r := range raw {
		var s string
		if err := json.Unmarshal(r, &s); err != nil {
			errs = append(errs, fmt.Errorf("[%d]: not a string", i))
			continue
		}
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		if err != nil {
			errs = append(errs, fmt.Errorf("[%d]: not valid base64", i))
			continue
		}
		keys[i] = key
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := Validate(keys); err != nil {
		return nil, err
	}
	return keys, nil
}

// Save writes keys to path atomically: a temporary file in the same
// directory with mode 0600, synced, renamed over path, and the directory
// synced, so a crash leaves either the old or the new keyring, never a
// partial one. keys are validated first.
func Save(path string, keys Keys) (err error) {
	if err := Validate(keys); err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	enc := make([]string, len(keys))
	for i, key := range keys {
		enc[i] = base64.StdEncoding.EncodeToString(key)
	}
	data, err := json.MarshalIndent(enc, "", "  ")
	if err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	data = append(data, '\n')

	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp already uses 0600; say so explicitly in case that changes.
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("keyring %s: write: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("keyring %s: sync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("keyring %s: close: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keyring %s: sync directory: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("keyring %s: sync directory: %w", path, err)
	}
	return nil
}
