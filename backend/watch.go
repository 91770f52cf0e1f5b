package backend

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watcher tells the backend when the application directory may have
// changed. It watches the directory for its files and the directory's
// nearest existing ancestor for the directory itself, so that it sees the
// directory appear after startup (at any depth: "mkdir -p" is followed
// level by level), disappear, or be replaced by a rename. Events are
// debounced: notify is called once a burst has been quiet for debounce,
// and at the latest maxDelay after the burst began, so that a save made of
// several writes is one change and a stream of changes cannot postpone it
// forever. Events only trigger a rescan; what changed is found by
// comparing file contents, so a missed or spurious event costs nothing but
// the scan.
type watcher struct {
	dir    string
	log    *slog.Logger
	notify func()

	debounce time.Duration
	maxDelay time.Duration
	// poll is how often the directory is rescanned when it cannot be
	// watched (no inotify instances left, a watch refused).
	poll time.Duration
	// resync is how often it is rescanned anyway, for file systems whose
	// changes raise no events (NFS, some FUSE mounts).
	resync time.Duration
}

// start establishes the watches, so that every change from now on is
// seen, and then watches in a goroutine until ctx is done; done is closed
// when it has ended. It does not give up: when watching is impossible it
// polls instead.
func (w *watcher) start(ctx context.Context, done chan<- struct{}) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		w.log.Warn("cannot watch the application directory: polling it instead", "dir", w.dir, "interval", w.poll, "err", err)
		go func() {
			defer close(done)
			w.pollLoop(ctx)
		}()
		return
	}
	ws := &watchSet{fsw: fsw, dir: w.dir}
	l := &watchLoop{watcher: w, fsw: fsw, ws: ws}
	l.arm()
	go func() {
		defer close(done)
		defer fsw.Close()
		l.run(ctx)
	}()
}

// pollLoop asks for a rescan every poll interval until ctx is done.
func (w *watcher) pollLoop(ctx context.Context) {
	poll := time.NewTicker(w.poll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
			w.notify()
		}
	}
}

// watchLoop is the state of one watching goroutine.
type watchLoop struct {
	*watcher
	fsw   *fsnotify.Watcher
	ws    *watchSet
	poll  *time.Ticker // set while arming fails
	pollC <-chan time.Time
}

// arm (re)establishes the watches, polling while that fails.
func (l *watchLoop) arm() {
	err := l.ws.arm()
	switch {
	case err != nil && l.poll == nil:
		l.log.Warn("cannot watch the application directory: polling it until watching works", "dir", l.dir,
			"interval", l.watcher.poll, "err", err)
		l.poll = time.NewTicker(l.watcher.poll)
		l.pollC = l.poll.C
	case err == nil && l.poll != nil:
		l.log.Info("watching the application directory again", "dir", l.dir)
		l.poll.Stop()
		l.poll, l.pollC = nil, nil
	}
}

func (l *watchLoop) run(ctx context.Context) {
	defer func() {
		if l.poll != nil {
			l.poll.Stop()
		}
	}()
	resync := time.NewTicker(l.resync)
	defer resync.Stop()
	var (
		fire  <-chan time.Time
		burst time.Time // when the pending burst began
	)
	schedule := func() {
		now := time.Now()
		if fire == nil {
			burst = now
		}
		fire = time.After(max(0, min(l.debounce, burst.Add(l.maxDelay).Sub(now))))
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-l.fsw.Events:
			if !ok {
				return
			}
			switch l.classify(ev.Name) {
			case eventDir:
				l.arm()
				schedule()
			case eventFile:
				schedule()
			}
		case err, ok := <-l.fsw.Errors:
			if !ok {
				return
			}
			// Most likely the kernel's event queue overflowed: events
			// were lost, so look at everything again.
			l.log.Warn("application directory watcher error: rescanning", "dir", l.dir, "err", err)
			l.arm()
			schedule()
		case <-l.pollC:
			l.arm()
			schedule()
		case <-resync.C:
			l.notify()
		case <-fire:
			fire = nil
			l.notify()
		}
	}
}

// Kinds of watch events.
const (
	eventOther = iota // something else in an ancestor: ignored
	eventFile         // an entry of the directory
	eventDir          // the directory or one of its ancestors
)

func (w *watcher) classify(name string) int {
	switch {
	case name == w.dir || strings.HasPrefix(w.dir, name+string(filepath.Separator)):
		return eventDir
	case filepath.Dir(name) == w.dir:
		return eventFile
	}
	return eventOther
}

// watchSet holds the watches on the directory and on its nearest existing
// ancestor.
type watchSet struct {
	fsw        *fsnotify.Watcher
	dir        string
	anc        string // the watched ancestor, or empty
	dirWatched bool
}

// arm (re)establishes the watches after the directory or an ancestor
// changed. It always watches the ancestor before looking for the level
// below it, so whatever is created in between raises an event: nothing
// can appear unseen.
func (s *watchSet) arm() error {
	if s.dirWatched {
		// The directory may have been replaced by another one: watch
		// whatever is at the path now. Errors mean the watch is gone
		// already.
		_ = s.fsw.Remove(s.dir)
		s.dirWatched = false
	}
	for range 64 {
		anc := nearestDir(filepath.Dir(s.dir))
		if anc != s.anc {
			if s.anc != "" {
				_ = s.fsw.Remove(s.anc)
				s.anc = ""
			}
			if err := s.fsw.Add(anc); err != nil {
				if vanished(err) {
					continue
				}
				return fmt.Errorf("watch %s: %w", anc, err)
			}
			s.anc = anc
		}
		if isDir(s.dir) {
			err := s.fsw.Add(s.dir)
			if err == nil {
				s.dirWatched = true
				return nil
			}
			if !vanished(err) {
				return fmt.Errorf("watch %s: %w", s.dir, err)
			}
		}
		if nearestDir(filepath.Dir(s.dir)) == anc {
			return nil // the directory does not exist; its creation will be seen
		}
	}
	return errors.New("the directory's ancestors keep changing")
}

// vanished reports whether err says a path went away while it was being
// watched.
func vanished(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

func isDir(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.IsDir()
}

// nearestDir returns path or its nearest ancestor that is a directory.
func nearestDir(path string) string {
	for !isDir(path) {
		parent := filepath.Dir(path)
		if parent == path {
			return path
		}
		path = parent
	}
	return path
}
