package acme

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/internal/s3test"
	"github.com/scrimplb/scrimp/seed"
)

// newObjects returns an object API on a fresh bucket of a real versitygw.
func newObjects(t *testing.T, endpoint, prefix string) *seed.Objects {
	t.Helper()
	o, err := seed.NewObjects(seed.ObjectsOptions{
		Bucket: "certs", Prefix: prefix, Region: "us-east-1", Endpoint: endpoint, PathStyle: true,
		RequestTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.CreateBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestS3Storage(t *testing.T) {
	endpoint := s3test.Start(t)
	objs := newObjects(t, endpoint, "scrimp/acme/")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("conditional-writes", func(t *testing.T) {
		// What the lock relies on, checked on the real server.
		if ok, err := objs.PutIfAbsent(ctx, "cond", []byte("1")); !ok || err != nil {
			t.Fatalf("first PutIfAbsent = %t, %v", ok, err)
		}
		if ok, err := objs.PutIfAbsent(ctx, "cond", []byte("2")); ok || err != nil {
			t.Fatalf("second PutIfAbsent = %t, %v; want false, nil", ok, err)
		}
		_, info, err := objs.Get(ctx, "cond")
		if err != nil {
			t.Fatal(err)
		}
		if err := objs.DeleteIfMatch(ctx, "cond", `"0123456789abcdef0123456789abcdef"`); !errors.Is(err, seed.ErrPreconditionFailed) {
			t.Fatalf("DeleteIfMatch with another ETag: %v, want ErrPreconditionFailed", err)
		}
		if err := objs.DeleteIfMatch(ctx, "cond", info.ETag); err != nil {
			t.Fatalf("DeleteIfMatch with its ETag: %v", err)
		}
		if _, err := objs.Stat(ctx, "cond"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("after DeleteIfMatch: %v", err)
		}
	})

	t.Run("store-load-list-stat", func(t *testing.T) {
		s := NewS3Storage(objs, time.Second, testLogger(t))
		defer s.Close()
		if _, err := s.Load(ctx, "certificates/x/a.crt"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Load of a missing key: %v, want fs.ErrNotExist", err)
		}
		for _, k := range []string{"certificates/ca/a.test/a.test.crt", "certificates/ca/a.test/a.test.key", "certificates/ca/b.test/b.test.crt", "users/x.json"} {
			if err := s.Store(ctx, k, []byte("v:"+k)); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := s.Load(ctx, "users/x.json"); err != nil || string(got) != "v:users/x.json" {
			t.Fatalf("Load = %q, %v", got, err)
		}
		list := func(prefix string, rec bool) []string {
			keys, err := s.List(ctx, prefix, rec)
			if err != nil {
				t.Fatalf("List(%q, %t): %v", prefix, rec, err)
			}
			slices.Sort(keys)
			return keys
		}
		if got, want := list("certificates/ca", false), []string{"certificates/ca/a.test", "certificates/ca/b.test"}; !slices.Equal(got, want) {
			t.Errorf("List non-recursive = %q, want %q", got, want)
		}
		if got, want := list("certificates", true), []string{"certificates/ca/a.test/a.test.crt", "certificates/ca/a.test/a.test.key", "certificates/ca/b.test/b.test.crt"}; !slices.Equal(got, want) {
			t.Errorf("List recursive = %q, want %q", got, want)
		}
		if _, err := s.List(ctx, "nothing", false); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("List of an empty prefix: %v, want fs.ErrNotExist", err)
		}
		ki, err := s.Stat(ctx, "users/x.json")
		if err != nil || !ki.IsTerminal || ki.Size != int64(len("v:users/x.json")) || ki.Modified.IsZero() {
			t.Errorf("Stat file = %+v, %v", ki, err)
		}
		if ki, err := s.Stat(ctx, "certificates/ca"); err != nil || ki.IsTerminal {
			t.Errorf("Stat directory = %+v, %v", ki, err)
		}
		if !s.Exists(ctx, "certificates/ca") || !s.Exists(ctx, "users/x.json") || s.Exists(ctx, "users/y.json") {
			t.Error("Exists is wrong")
		}
		if err := s.Delete(ctx, "certificates/ca/a.test"); err != nil {
			t.Fatal(err)
		}
		if got, want := list("certificates", true), []string{"certificates/ca/b.test/b.test.crt"}; !slices.Equal(got, want) {
			t.Errorf("after deleting a directory: %q, want %q", got, want)
		}
		if err := s.Delete(ctx, "users/none.json"); err != nil {
			t.Errorf("Delete of a missing key: %v", err)
		}
	})

	t.Run("lock-exclusive", func(t *testing.T) {
		a, b := NewS3Storage(objs, 1500*time.Millisecond, testLogger(t)), NewS3Storage(objs, 1500*time.Millisecond, testLogger(t))
		defer a.Close()
		defer b.Close()
		// Many lockers on two storages: never two holders at once.
		var holders, maxHolders, taken atomic.Int32
		var wg sync.WaitGroup
		for i := range 6 {
			s := a
			if i%2 == 1 {
				s = b
			}
			wg.Go(func() {
				for range 2 {
					if err := s.Lock(ctx, "issue_cert_app.test"); err != nil {
						t.Error(err)
						return
					}
					n := holders.Add(1)
					for {
						m := maxHolders.Load()
						if n <= m || maxHolders.CompareAndSwap(m, n) {
							break
						}
					}
					taken.Add(1)
					time.Sleep(20 * time.Millisecond)
					holders.Add(-1)
					if err := s.Unlock(ctx, "issue_cert_app.test"); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		if maxHolders.Load() != 1 || taken.Load() != 12 {
			t.Errorf("max concurrent holders %d (want 1), locks taken %d (want 12)", maxHolders.Load(), taken.Load())
		}
		// Lock honours its context while the lock is held elsewhere.
		if err := a.Lock(ctx, "held"); err != nil {
			t.Fatal(err)
		}
		short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancelShort()
		if err := b.Lock(short, "held"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Lock of a held lock: %v, want the context's deadline", err)
		}
		// The holder keeps it fresh past its TTL.
		time.Sleep(2 * time.Second)
		short2, cancelShort2 := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancelShort2()
		if err := b.Lock(short2, "held"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Lock of a held, refreshed lock after its TTL: %v, want the context's deadline", err)
		}
		if err := a.Unlock(ctx, "held"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("stale-takeover", func(t *testing.T) {
		// A crashed holder's lock: an expired record nobody refreshes.
		body, _ := json.Marshal(lockRecord{Owner: "crashed", Token: "crashed-1", Expires: time.Now().Add(-time.Second)})
		if err := objs.Put(ctx, lockKey("stale"), body); err != nil {
			t.Fatal(err)
		}
		// Several contenders take it over at once: exactly one wins at a
		// time.
		stores := []*S3Storage{NewS3Storage(objs, 2*time.Second, testLogger(t)), NewS3Storage(objs, 2*time.Second, testLogger(t)), NewS3Storage(objs, 2*time.Second, testLogger(t))}
		var holders, maxHolders atomic.Int32
		var wg sync.WaitGroup
		start := time.Now()
		for _, s := range stores {
			defer s.Close()
			wg.Go(func() {
				if err := s.Lock(ctx, "stale"); err != nil {
					t.Error(err)
					return
				}
				n := holders.Add(1)
				if n > maxHolders.Load() {
					maxHolders.Store(n)
				}
				time.Sleep(300 * time.Millisecond)
				holders.Add(-1)
				s.Unlock(ctx, "stale")
			})
		}
		wg.Wait()
		if maxHolders.Load() != 1 {
			t.Errorf("%d holders at once after a takeover, want 1", maxHolders.Load())
		}
		t.Logf("three contenders took over a stale lock and held it in turn in %s", time.Since(start).Round(time.Millisecond))
	})
}
