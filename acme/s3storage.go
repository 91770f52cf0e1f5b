package acme

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/scrimplb/scrimp/seed"
)

// Objects is the part of seed.Objects the S3 storage uses.
type Objects interface {
	Get(ctx context.Context, key string) ([]byte, seed.ObjectInfo, error)
	Stat(ctx context.Context, key string) (seed.ObjectInfo, error)
	Put(ctx context.Context, key string, data []byte) error
	PutIfAbsent(ctx context.Context, key string, data []byte) (bool, error)
	DeleteIfMatch(ctx context.Context, key, etag string) error
	List(ctx context.Context, prefix string, recursive bool) ([]seed.ObjectInfo, error)
}

// S3Storage is a certmagic.Storage in an S3 bucket (through seed.Objects),
// shared by every load balancer configured with the same bucket and
// prefix: certificates, account keys, challenge tokens (so that whichever
// load balancer the CA reaches answers) and locks.
//
// A lock is an object locks/NAME.lock created with a conditional write
// (If-None-Match: *), so exactly one of several concurrent Lock calls
// creates it. It holds its owner and an expiry that its holder pushes
// forward every LockTTL/3 while it holds it; a lock whose expiry passed
// (its holder crashed) is deleted with If-Match on the ETag that was read,
// so that of several load balancers taking over the same stale lock only
// one deletes it and none deletes the fresh lock another one created.
// Its methods are safe for concurrent use.
type S3Storage struct {
	objects Objects
	ttl     time.Duration
	log     *slog.Logger
	owner   string // this process's identity in lock objects
	now     func() time.Time

	mu    sync.Mutex
	held  map[string]*heldLock
	count int // locks ever taken; makes tokens unique
}

type heldLock struct {
	token string
	stop  chan struct{}
	done  chan struct{}
}

// lockRecord is the content of a lock object.
type lockRecord struct {
	Owner   string    `json:"owner"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// DefaultLockTTL is how long a lock outlives its last refresh.
const DefaultLockTTL = 30 * time.Second

// NewS3Storage returns a storage over objects; ttl is how long a lock
// whose holder stopped refreshing it stays valid (0: DefaultLockTTL).
func NewS3Storage(objects Objects, ttl time.Duration, log *slog.Logger) *S3Storage {
	if ttl <= 0 {
		ttl = DefaultLockTTL
	}
	if log == nil {
		log = slog.Default()
	}
	var b [8]byte
	rand.Read(b[:])
	return &S3Storage{objects: objects, ttl: ttl, log: log, owner: hex.EncodeToString(b[:]), now: time.Now, held: map[string]*heldLock{}}
}

var _ certmagic.Storage = (*S3Storage)(nil)

// Store writes value at key.
func (s *S3Storage) Store(ctx context.Context, key string, value []byte) error {
	return s.objects.Put(ctx, key, value)
}

// Load reads key; a missing key is an error wrapping fs.ErrNotExist.
func (s *S3Storage) Load(ctx context.Context, key string) ([]byte, error) {
	data, _, err := s.objects.Get(ctx, key)
	return data, err
}

// Delete removes key, and every key under it when it is a directory.
func (s *S3Storage) Delete(ctx context.Context, key string) error {
	if err := s.objects.DeleteIfMatch(ctx, key, ""); err != nil {
		return err
	}
	under, err := s.objects.List(ctx, key+"/", true)
	if err != nil {
		return err
	}
	for _, o := range under {
		if err := s.objects.DeleteIfMatch(ctx, o.Key, ""); err != nil {
			return err
		}
	}
	return nil
}

// Exists reports whether key is a file or a directory.
func (s *S3Storage) Exists(ctx context.Context, key string) bool {
	if _, err := s.objects.Stat(ctx, key); err == nil {
		return true
	}
	under, err := s.objects.List(ctx, key+"/", false)
	return err == nil && len(under) > 0
}

// List returns the keys under prefix: its direct children (files and
// directories) or, recursive, every file beneath it. An empty prefix is
// an error wrapping fs.ErrNotExist, as with certmagic.FileStorage.
func (s *S3Storage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	p := strings.TrimSuffix(prefix, "/")
	if p != "" {
		p += "/"
	}
	infos, err := s.objects.List(ctx, p, recursive)
	if err != nil {
		return nil, err
	}
	if len(infos) == 0 {
		return nil, fmt.Errorf("list %q: %w", prefix, fs.ErrNotExist)
	}
	keys := make([]string, 0, len(infos))
	for _, o := range infos {
		keys = append(keys, strings.TrimSuffix(o.Key, "/"))
	}
	return keys, nil
}

// Stat describes key: a file, or a directory (IsTerminal false).
func (s *S3Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	info, err := s.objects.Stat(ctx, key)
	if err == nil {
		return certmagic.KeyInfo{Key: key, Modified: info.Modified, Size: info.Size, IsTerminal: true}, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return certmagic.KeyInfo{}, err
	}
	under, lerr := s.objects.List(ctx, key+"/", false)
	if lerr != nil || len(under) == 0 {
		return certmagic.KeyInfo{}, err
	}
	return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
}

func lockKey(name string) string { return path.Join("locks", certmagic.StorageKeys.Safe(name)+".lock") }

// Lock takes the named lock, waiting (polling with backoff from 100 ms to
// 2 s) while another holder's lock is fresh; it returns ctx's error when
// ctx ends first. The lock stays fresh until Unlock.
func (s *S3Storage) Lock(ctx context.Context, name string) error {
	key := lockKey(name)
	wait := 100 * time.Millisecond
	for {
		s.mu.Lock()
		s.count++
		token := fmt.Sprintf("%s-%d", s.owner, s.count)
		s.mu.Unlock()
		rec := lockRecord{Owner: s.owner, Token: token, Expires: s.now().Add(s.ttl)}
		body, _ := json.Marshal(rec)
		ok, err := s.objects.PutIfAbsent(ctx, key, body)
		if err != nil {
			return fmt.Errorf("lock %s: %w", name, err)
		}
		if ok {
			s.hold(name, key, token)
			return nil
		}
		if err := s.takeOverStale(ctx, name, key); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lock %s: %w", name, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// takeOverStale deletes the lock object if it expired (or is unreadable
// garbage): only the version read, so a fresh lock is never deleted.
func (s *S3Storage) takeOverStale(ctx context.Context, name, key string) error {
	data, info, err := s.objects.Get(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // released meanwhile: try again at once
	}
	if err != nil {
		return fmt.Errorf("lock %s: read the lock: %w", name, err)
	}
	var rec lockRecord
	if json.Unmarshal(data, &rec) == nil && s.now().Before(rec.Expires) {
		return nil // fresh: wait for it
	}
	s.log.Warn("acme storage: taking over a stale lock", "lock", name, "owner", rec.Owner, "expired", rec.Expires)
	if err := s.objects.DeleteIfMatch(ctx, key, info.ETag); err != nil && !errors.Is(err, seed.ErrPreconditionFailed) {
		return fmt.Errorf("lock %s: delete the stale lock: %w", name, err)
	}
	return nil
}

// hold records the lock and keeps it fresh until Unlock.
func (s *S3Storage) hold(name, key, token string) {
	h := &heldLock{token: token, stop: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	s.held[name] = h
	s.mu.Unlock()
	go func() {
		defer close(h.done)
		t := time.NewTicker(s.ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), s.ttl/3)
			data, _, err := s.objects.Get(ctx, key)
			var rec lockRecord
			if err == nil && json.Unmarshal(data, &rec) == nil && rec.Token == token {
				rec.Expires = s.now().Add(s.ttl)
				body, _ := json.Marshal(rec)
				err = s.objects.Put(ctx, key, body)
			} else if err == nil {
				err = errors.New("another holder took it over")
			}
			cancel()
			if err != nil {
				s.log.Warn("acme storage: refreshing a lock failed", "lock", name, "err", err)
			}
		}
	}()
}

// Unlock releases a lock this storage holds.
func (s *S3Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("unlock %s: not held", name)
	}
	close(h.stop)
	<-h.done
	key := lockKey(name)
	data, info, err := s.objects.Get(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unlock %s: %w", name, err)
	}
	var rec lockRecord
	if json.Unmarshal(data, &rec) != nil || rec.Token != h.token {
		return nil // taken over after it went stale: not ours any more
	}
	if err := s.objects.DeleteIfMatch(ctx, key, info.ETag); err != nil && !errors.Is(err, seed.ErrPreconditionFailed) {
		return fmt.Errorf("unlock %s: %w", name, err)
	}
	return nil
}

// Close stops refreshing every held lock (they expire); safe twice.
func (s *S3Storage) Close() {
	s.mu.Lock()
	held := s.held
	s.held = map[string]*heldLock{}
	s.mu.Unlock()
	for _, h := range held {
		close(h.stop)
		<-h.done
	}
}
