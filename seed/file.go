package seed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/fsnotify/fsnotify"

	"github.com/scrimplb/scrimp/keyring"
)

func init() { Register("file", newFile) }

// Notifier is implemented by providers that learn of changes to their
// source without being asked, so a node that is alone can try to join as
// soon as seeds appear instead of at its next rejoin check.
//
// Changed returns the same channel on every call, never blocks, and may be
// called from any goroutine. The channel has a buffer of one: several
// changes before the receiver looks coalesce into one notification, and
// none is lost. It is never closed; after Close it no longer fires.
type Notifier interface {
	Changed() <-chan struct{}
}

// fileOptions is the "seed.file" section.
type fileOptions struct {
	// Path is the seed list: one address or seed record per line (blank
	// lines and # comments ignored) or a JSON array of addresses and
	// records. With a keyring only signed records count. Required.
	Path string `json:"path"`
}

// fileSeeds reads a seed list maintained by something else: configuration
// management, a Kubernetes ConfigMap, an operator's editor.
//
// Seeds re-reads the file on every call, which is cheap and right on any
// file system, and parses it again only when its bytes changed, so bad
// lines are logged once per edit rather than on every join attempt. A
// watcher on the parent directory (not the file: editors and ConfigMaps
// replace files by renaming over them, which a watch on the file itself
// would lose) re-reads on every event and notifies Changed when the
// content differs.
type fileSeeds struct {
	path        string
	defaultPort int
	signer      *signer // nil: entries need no signature (no keyring)
	log         *slog.Logger
	changed     chan struct{}

	watcher   *fsnotify.Watcher // nil when the directory could not be watched
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	mu    sync.Mutex // serialises reads by Seeds and by the watcher
	have  bool       // content and addrs hold the last successful read
	data  []byte
	addrs []string
	err   error // parse error of data, if any
}

func newFile(raw json.RawMessage, env Env) (Provider, error) {
	var o fileOptions
	if err := DecodeStrict(raw, &o); err != nil {
		return nil, err
	}
	if o.Path == "" {
		return nil, errors.New("path: required")
	}
	path, err := filepath.Abs(o.Path)
	if err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	signer, err := newSigner(env.Keys)
	if err != nil {
		return nil, err
	}
	f := &fileSeeds{path: path, defaultPort: env.DefaultPort, signer: signer, log: env.Logger, changed: make(chan struct{}, 1)}
	if err := f.watch(); err != nil {
		// Not fatal: Seeds still reads the file on every call; only the
		// early notification is lost.
		f.log.Warn("seed file: cannot watch for changes; they will be seen at the next join attempt",
			"path", f.path, "err", err)
	}
	return f, nil
}

// watch starts the goroutine that re-reads the file on events in its
// directory.
func (f *fileSeeds) watch() error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	if err := w.Add(filepath.Dir(f.path)); err != nil {
		w.Close()
		return err
	}
	f.watcher = w
	f.wg.Go(func() {
		for {
			select {
			case _, ok := <-w.Events:
				if !ok {
					return
				}
				// Any event may matter: a ConfigMap update renames a
				// symlinked directory, not the file. Comparing content
				// filters out the noise of unrelated files.
				if changed, err := f.reload(); err != nil {
					f.log.Debug("seed file: re-read after change failed", "path", f.path, "err", err)
				} else if changed {
					select {
					case f.changed <- struct{}{}:
					default:
					}
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				f.log.Warn("seed file: watcher error", "path", f.path, "err", err)
			}
		}
	})
	return nil
}

// reload reads the file and parses it if its content changed since the
// last read; it reports whether it did.
func (f *fileSeeds) reload() (changed bool, err error) {
	data, err := os.ReadFile(f.path)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		// Forget the old content: a file that comes back must be parsed
		// again, and logged again if it is bad.
		f.have, f.data, f.addrs, f.err = false, nil, nil, nil
		return false, err
	}
	if f.have && bytes.Equal(data, f.data) {
		return false, nil
	}
	f.have, f.data = true, data
	f.addrs, f.err = parseAddressList(data, f.path, f.defaultPort, f.signer, f.log)
	return true, nil
}

// Seeds re-reads the file and returns its valid addresses, sorted and
// deduplicated; with a keyring, only those of signed records. A missing or unreadable file, or a malformed JSON array,
// is an error; invalid lines are skipped. It blocks only on the read and
// may run concurrently with the watcher.
func (f *fileSeeds) Seeds(context.Context) ([]string, error) {
	if _, err := f.reload(); err != nil {
		return nil, fmt.Errorf("seed file: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, fmt.Errorf("seed file: %w", f.err)
	}
	return slices.Clone(f.addrs), nil // callers must not modify the cache
}

// Rekey implements Rekeyer. The file is parsed again at the next read,
// so entries are checked against the new keys.
func (f *fileSeeds) Rekey(keys keyring.Keys) error {
	if err := f.signer.rekey(keys); err != nil {
		return err
	}
	f.mu.Lock()
	f.have = false
	f.mu.Unlock()
	return nil
}

// Changed implements Notifier: it fires when the file's content changes.
func (f *fileSeeds) Changed() <-chan struct{} { return f.changed }

// Close stops the watcher and waits for its goroutine. It is safe to call
// more than once and concurrently; Seeds keeps working afterwards.
func (f *fileSeeds) Close() error {
	f.closeOnce.Do(func() {
		if f.watcher != nil {
			f.closeErr = f.watcher.Close()
			f.wg.Wait()
		}
	})
	return f.closeErr
}
