package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"

	"github.com/scrimplb/scrimp/keyring"
)

// Key rotation, as serf and consul do it: install the new key on every
// node (all accept it), use it (all encrypt with it; everybody can read
// it already), remove the old one. Each step is a KeyOp, which applies
// the step on this node and then sends it to every live member over
// memberlist's reliable messages, which are encrypted with the keyring,
// so only a key holder can ask. Every member answers with the
// fingerprints of its keys, never the keys.

// Errors of KeyOp that concern the request, not a member.
var (
	// ErrNoKeyring: this node gossips in plaintext; there is no keyring
	// to change and key operations would travel unencrypted.
	ErrNoKeyring = errors.New("cluster: gossip is not encrypted, so there is no keyring to manage: set cluster.keyring-file")
	// ErrBadKey: the key is missing, of a wrong length, or given to list.
	ErrBadKey = errors.New("cluster: bad key")
	// ErrKeyRefused: this node refused the operation (using a key it
	// does not hold, removing its primary); nothing was sent to others.
	ErrKeyRefused = errors.New("cluster: key operation refused")
	// ErrKeyOpsBusy: too many key operations are running on this node.
	ErrKeyOpsBusy = fmt.Errorf("cluster: %d key operations are running already", maxKeyOps)
)

const (
	// maxKeyOps bounds the key operations waiting for answers at once.
	maxKeyOps = 8
	// maxKeySends bounds the concurrent sends of one key operation.
	maxKeySends = 16
	// keyOpMaxAge is how far a key operation's issue time may be from
	// this node's clock (either way): older ones are refused as replays
	// (or a clock gone wrong).
	keyOpMaxAge = 5 * time.Minute
	// maxSeenKeyOps bounds the ids remembered to refuse a replay within
	// keyOpMaxAge; only key holders can send key operations at all.
	maxSeenKeyOps = 4096
)

// KeyResult is how a key operation went across the cluster.
type KeyResult struct {
	// Members is how many live members were asked, this node included.
	Members int `json:"members"`
	// Responded is how many of them answered (successfully or not).
	Responded int `json:"responded"`
	// Errors are the members that refused the operation, could not be
	// reached or did not answer in time, with why.
	Errors map[string]string `json:"errors"`
	// Keys counts, per key fingerprint, the members that answered
	// holding it afterwards.
	Keys map[string]int `json:"keys"`
	// Primaries counts, per key fingerprint, the members that answered
	// using it as their primary.
	Primaries map[string]int `json:"primaries"`
}

func (r *KeyResult) add(m keyResultMsg) {
	r.Responded++
	if m.Error != "" {
		r.Errors[m.From] = m.Error
	}
	for _, fp := range m.Keys {
		r.Keys[hex.EncodeToString(fp[:])]++
	}
	if len(m.Keys) > 0 {
		r.Primaries[hex.EncodeToString(m.Primary[:])]++
	}
}

// keyCollect gathers the answers to one key operation. want and results
// are guarded by Cluster.mu; results is buffered for every wanted answer,
// so handing one over never blocks.
type keyCollect struct {
	want    map[string]bool
	results chan keyResultMsg
}

// fingerprint is keyring.Fingerprint in binary, as key results carry it.
func fingerprint(key []byte) [fingerprintLen]byte {
	sum := sha256.Sum256(key)
	return [fingerprintLen]byte(sum[:fingerprintLen])
}

// KeyOp applies op (with key, nil for KeyList) to this node's gossip
// keyring and then to every live member's (those whose metadata this node
// accepted), and collects their answers
// until every member has answered or ctx ends; members that have not
// answered by then are reported in KeyResult.Errors. If this node refuses
// the operation, nothing is sent and the error wraps ErrKeyRefused.
// Give ctx a deadline: a member whose answer is lost is waited for until
// it ends. It blocks for the sends too, which the transport bounds
// (limitsFor). Safe for concurrent use; at most maxKeyOps run at once.
func (c *Cluster) KeyOp(ctx context.Context, op KeyOpKind, key []byte) (KeyResult, error) {
	if c.keyring == nil {
		return KeyResult{}, ErrNoKeyring
	}
	switch {
	case op < KeyList || op > KeyRemove:
		return KeyResult{}, fmt.Errorf("%w: unknown operation %d", ErrBadKey, uint8(op))
	case op == KeyList && len(key) != 0:
		return KeyResult{}, fmt.Errorf("%w: list takes no key", ErrBadKey)
	case op != KeyList:
		if err := keyring.Check(key); err != nil {
			return KeyResult{}, fmt.Errorf("%w: %w", ErrBadKey, err)
		}
	}
	var id [keyOpIDLen]byte
	rand.Read(id[:])

	// The members as this node records them, copied under its lock:
	// memberlist's Members hands out the records its alive handler
	// rewrites without a lock a caller could take (a data race). A member
	// whose metadata this node refused is not asked.
	var targets []memberlist.Node
	c.mu.Lock()
	for name, m := range c.members {
		if name != c.self {
			targets = append(targets, memberlist.Node{Name: name, Addr: m.addr.AsSlice(), Port: m.port})
		}
	}
	c.mu.Unlock()
	col := &keyCollect{want: map[string]bool{}, results: make(chan keyResultMsg, len(targets))}
	for _, n := range targets {
		col.want[n.Name] = true
	}
	c.mu.Lock()
	if len(c.keyOps) >= maxKeyOps {
		c.mu.Unlock()
		return KeyResult{}, ErrKeyOpsBusy
	}
	c.keyOps[id] = col
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.keyOps, id)
		c.mu.Unlock()
	}()

	res := KeyResult{Members: 1 + len(targets), Errors: map[string]string{}, Keys: map[string]int{}, Primaries: map[string]int{}}
	local := c.applyKeyOp(op, key, "")
	if !local.applied {
		return KeyResult{}, fmt.Errorf("%w on this node: %s", ErrKeyRefused, local.Error)
	}
	res.add(local.keyResultMsg)

	msg := encodeMessage(keyOpMsg{From: c.self, ID: id, Issued: time.Now().Unix(), Op: op, Key: key})
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxKeySends)
	var sendMu sync.Mutex
	sendErrs := map[string]string{}
	for _, n := range targets {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := c.ml.SendReliable(&n, msg); err != nil {
				sendMu.Lock()
				sendErrs[n.Name] = "unreachable: " + err.Error()
				sendMu.Unlock()
			}
		})
	}
	wg.Wait()
	clear(msg) // it holds the key

	// Every member asked answers through col.results once, unless it
	// could not be sent to (and has not answered anyway).
	waiting := len(targets)
	c.mu.Lock()
	for name, why := range sendErrs {
		if col.want[name] {
			delete(col.want, name)
			res.Errors[name] = why
			waiting--
		}
	}
	c.mu.Unlock()
	for ; waiting > 0; waiting-- {
		select {
		case m := <-col.results:
			res.add(m)
			continue
		case <-ctx.Done():
		}
		break
	}
	// Answers that came with the end of ctx still count.
	c.mu.Lock()
	for {
		select {
		case m := <-col.results:
			res.add(m)
			continue
		default:
		}
		break
	}
	for name := range col.want {
		if _, ok := res.Errors[name]; !ok {
			res.Errors[name] = "no answer in time"
		}
	}
	clear(col.want)
	c.mu.Unlock()
	return res, nil
}

// localResult is this node's own answer, and whether its keyring changed
// or the operation was merely refused.
type localResult struct {
	keyResultMsg
	applied bool // the operation succeeded (an error is then about saving)
}

// applyKeyOp applies op to this node's keyring and, when that changed it,
// saves the keyring through Config.SaveKeys. by names the member that
// asked, "" for this node. It may block on the save; never call it on
// memberlist's callback goroutines.
func (c *Cluster) applyKeyOp(op KeyOpKind, key []byte, by string) localResult {
	out := localResult{keyResultMsg: keyResultMsg{From: c.self}}
	if c.keyring == nil {
		out.Error = ErrNoKeyring.Error()
		return out
	}
	// The keyring keeps the slices it is given (as a key or the
	// primary): give it its own, whatever the caller does with key.
	key = bytes.Clone(key)
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	before := cloneKeys(c.keyring.GetKeys())
	var err error
	switch op {
	case KeyList:
	case KeyInstall:
		err = c.keyring.AddKey(key)
	case KeyUse:
		err = c.keyring.UseKey(key)
	case KeyRemove:
		err = c.keyring.RemoveKey(key)
	default:
		err = fmt.Errorf("unknown key operation %d", uint8(op))
	}
	after := cloneKeys(c.keyring.GetKeys())
	for _, k := range after {
		out.Keys = append(out.Keys, fingerprint(k))
	}
	if len(after) > 0 {
		out.Primary = fingerprint(after[0])
	}
	if len(out.Keys) > maxResultKeys {
		out.Keys = out.Keys[:maxResultKeys]
	}
	log := c.log.With("op", op.String())
	if len(key) > 0 {
		log = log.With("fingerprint", keyring.Fingerprint(key))
	}
	if by != "" {
		log = log.With("by", by)
	}
	if err != nil {
		out.Error = errorText(err.Error())
		log.Warn("gossip key operation refused", "err", err)
		return out
	}
	out.applied = true
	if slices.EqualFunc(before, after, bytes.Equal) {
		return out
	}
	log.Info("gossip keyring changed", "keys", len(after), "primary", keyring.Fingerprint(after[0]))
	if c.saveKeys != nil {
		if err := c.saveKeys(after); err != nil {
			log.Error("gossip keyring changed but not saved: a restart brings the old keys back", "err", err)
			out.Error = errorText("changed, but not saved: " + err.Error())
		}
	}
	return out
}

// answerKeyOp applies a member's key operation and answers it. It runs on
// the worker. The sender must be a member this node knows from gossip.
func (c *Cluster) answerKeyOp(m keyOpMsg) {
	c.mu.Lock()
	_, known := c.members[m.From]
	c.mu.Unlock()
	if !known {
		c.log.Warn("ignoring key operation from a node that is not a member", "member", sanitize(m.From))
		return
	}
	var res localResult
	if err := c.freshKeyOp(m, time.Now()); err != nil {
		c.log.Warn("refusing key operation", "member", m.From, "op", m.Op.String(), "err", err)
		res = localResult{keyResultMsg: keyResultMsg{From: c.self, Error: errorText(err.Error())}}
	} else {
		res = c.applyKeyOp(m.Op, m.Key, m.From)
	}
	res.ID = m.ID
	c.sendTo(m.From, taskKeyOp, laneFast, res.keyResultMsg)
}

// freshKeyOp refuses a key operation issued more than keyOpMaxAge from
// now, or whose id was seen already: a recorded message replayed later
// could otherwise undo a rotation (make an old key primary again). It
// remembers m's id.
func (c *Cluster) freshKeyOp(m keyOpMsg, now time.Time) error {
	issued := time.Unix(m.Issued, 0)
	if d := now.Sub(issued); d > keyOpMaxAge || d < -keyOpMaxAge {
		return fmt.Errorf("issued at %s, more than %s from this node's clock: a replay, or a clock that is wrong", issued.UTC().Format(time.RFC3339), keyOpMaxAge)
	}
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	if _, seen := c.keyOpsSeen[m.ID]; seen {
		return errors.New("this operation was applied already: a replay")
	}
	if len(c.keyOpsSeen) >= maxSeenKeyOps {
		for id, at := range c.keyOpsSeen {
			if now.Sub(at) > 2*keyOpMaxAge {
				delete(c.keyOpsSeen, id)
			}
		}
		if len(c.keyOpsSeen) >= maxSeenKeyOps {
			return fmt.Errorf("more than %d key operations in %s", maxSeenKeyOps, 2*keyOpMaxAge)
		}
	}
	c.keyOpsSeen[m.ID] = now
	return nil
}

// receiveKeyResult hands an answer to the key operation waiting for it:
// only for a pending id, and only once per member asked. It never blocks,
// as it runs on memberlist's callback.
func (c *Cluster) receiveKeyResult(m keyResultMsg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	col, ok := c.keyOps[m.ID]
	if !ok || !col.want[m.From] {
		c.log.Debug("ignoring key result nobody waits for", "member", sanitize(m.From))
		return
	}
	delete(col.want, m.From)
	select {
	case col.results <- m:
	default: // unreachable: the buffer holds an answer per member asked
	}
}

func cloneKeys(keys [][]byte) [][]byte {
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = bytes.Clone(k)
	}
	return out
}

// errorText makes s fit a key result: printable (see printable), at most
// maxKeyError bytes, cut at a rune boundary.
func errorText(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len(s) <= maxKeyError {
		return s
	}
	n := maxKeyError
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
