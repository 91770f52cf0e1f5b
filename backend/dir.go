package backend

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/scrimplb/scrimp/config"
)

// maxFileSize bounds an application file. A real one is a few hundred
// bytes; the limit keeps a stray large file from being read in full.
const maxFileSize = 1 << 20

// isAppFile reports whether name is an application file: it ends in
// ".json" and does not start with '.' or '#'. That leaves out the files
// editors and tools write next to the real ones (".web.json.swp",
// "web.json~", "#web.json#", ".#web.json") and Kubernetes' "..data"
// entries, so a half-written temporary file is never taken for an
// application.
func isAppFile(name string) bool {
	return strings.HasSuffix(name, ".json") && len(name) > len(".json") &&
		!strings.HasPrefix(name, ".") && !strings.HasPrefix(name, "#")
}

// listAppFiles returns the names of the application files in dir, sorted.
func listAppFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if isAppFile(e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// errNotAppFile marks an entry with an application file's name that is not
// a regular file (a directory, a FIFO, a socket, a device, or a symbolic
// link to one of those); it is skipped, never opened for reading.
var errNotAppFile = errors.New("not a regular file")

// readAppFile reads one application file. It follows a symbolic link to a
// regular file (a Kubernetes ConfigMap's files are links), and refuses
// anything else without blocking: the type is checked before opening, the
// open is non-blocking (a FIFO or device swapped in meanwhile cannot hang
// it), and the opened file is checked again, so the file read is the one
// checked. It also refuses a file over maxFileSize, reading at most one
// byte past the limit.
func readAppFile(path string) ([]byte, error) {
	info, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if info.Mode()&fs.ModeSymlink != 0 {
		if info, err = os.Stat(path); err != nil {
			return nil, err // dangling: as good as absent
		}
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s", errNotAppFile, fileKind(info.Mode()))
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if info, err = f.Stat(); err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s", errNotAppFile, fileKind(info.Mode()))
	}
	tooLarge := fmt.Errorf("larger than the limit of %d bytes (1 MiB) for an application file", maxFileSize)
	if info.Size() > maxFileSize {
		return nil, tooLarge
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, tooLarge // grew while being read
	}
	return data, nil
}

// fileKind names the type of a file that is not a regular one, for logs.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "not a regular file (" + m.Type().String() + ")"
}

// fileState is what the backend knows of one application file.
type fileState struct {
	// data is the content last read, nil after a read error.
	data []byte
	// readErr is the last read error, empty after a successful read.
	readErr string
	// good is the last version that parsed and validated, nil if none
	// has. It stays advertised while the file is broken.
	good *config.Application
	// broken reports whether the current content has problems.
	broken bool
	// skipped is why the entry is not read at all (it is not a regular
	// file), empty for a file; logged once per change.
	skipped string
}

// scanDir re-reads the application files in dir into files, which it
// updates in place, and reports whether anything that could change the
// advertisement changed. A file is parsed again only when its bytes changed,
// so a broken file is logged once per edit, not once per scan.
func scanDir(dir string, files map[string]*fileState, log *slog.Logger) (changed bool) {
	names, err := listAppFiles(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			if len(files) > 0 {
				log.Warn("application directory is gone: withdrawing its applications", "dir", dir,
					"applications", goodNames(files))
				clear(files)
				return true
			}
			return false
		}
		// Unreadable for now (permissions, I/O): withdrawing everything on
		// a transient error would flap the cluster, so keep what we have.
		log.Error("cannot read application directory: keeping the applications read before", "dir", dir, "err", err)
		return false
	}
	seen := map[string]bool{}
	for _, name := range names {
		path := filepath.Join(dir, name)
		data, err := readAppFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since listed, or a dangling link: as good as absent
		}
		seen[name] = true
		st := files[name]
		if st == nil {
			st = &fileState{}
			files[name] = st
		}
		if errors.Is(err, errNotAppFile) {
			// Not a file: as good as absent, but said once, since a
			// FIFO or directory with an application's name is a mistake.
			if st.good != nil {
				log.Warn("application file: replaced by something that is not a regular file: withdrawing its application",
					"file", path, "application", st.good.Name, "err", err)
				changed = true
			} else if st.skipped != err.Error() {
				log.Warn("application file: skipped: not a regular file", "file", path, "err", err)
			}
			*st = fileState{skipped: err.Error()}
			continue
		}
		st.skipped = ""
		if err != nil {
			if st.readErr != err.Error() {
				st.readErr, st.data, st.broken = err.Error(), nil, true
				logBroken(log, path, st, []any{"err", err})
			}
			continue
		}
		st.readErr = ""
		if st.data != nil && bytes.Equal(data, st.data) {
			continue
		}
		st.data = data
		app, problems := config.ParseApplication(path, data)
		if len(problems) > 0 {
			st.broken = true
			for _, p := range problems {
				logProblem(log, "application file: invalid", p)
			}
			logBroken(log, path, st, nil)
			continue
		}
		switch {
		case st.good == nil:
			log.Info("application file: added", "file", path, "application", app.Name)
		case st.broken:
			log.Info("application file: fixed, advertising the new version", "file", path, "application", app.Name)
		default:
			log.Info("application file: changed", "file", path, "application", app.Name)
		}
		st.good, st.broken = app, false
		changed = true
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if seen[name] {
			continue
		}
		st := files[name]
		attrs := []any{"file", filepath.Join(dir, name)}
		if st.good != nil {
			attrs = append(attrs, "application", st.good.Name)
			changed = true
		}
		log.Info("application file: removed", attrs...)
		delete(files, name)
	}
	return changed
}

// logProblem logs one problem of an application file.
func logProblem(log *slog.Logger, msg string, p config.Problem) {
	attrs := []any{"file", p.File}
	if p.Path != "" {
		attrs = append(attrs, "field", p.Path)
	}
	log.Warn(msg, append(attrs, "reason", p.Reason)...)
}

// logBroken says what happens to a file's application while the file is
// broken.
func logBroken(log *slog.Logger, path string, st *fileState, attrs []any) {
	attrs = append(attrs, "file", path)
	if st.good != nil {
		log.Warn("application file: broken; its last good version stays advertised until the file is fixed or removed",
			append(attrs, "application", st.good.Name)...)
		return
	}
	log.Warn("application file: broken; not advertised until it is fixed", attrs...)
}

func goodNames(files map[string]*fileState) []string {
	var names []string
	for _, st := range files {
		if st.good != nil {
			names = append(names, st.good.Name)
		}
	}
	slices.Sort(names)
	return names
}

// source is one application with where it was defined.
type source struct {
	app config.Application
	// file is the application file's path; empty for the main
	// configuration.
	file string
}

// merge combines the static applications (already validated, with unique
// names) with the directory's good applications, keyed by file name. A name
// defined twice is kept where it was defined first: the main configuration
// before files, and files in name order. Each file left out is reported as
// a problem of that file.
func merge(static []config.Application, dir string, files map[string]*config.Application) ([]source, config.Problems) {
	out := make([]source, 0, len(static)+len(files))
	where := map[string]string{}
	for i, a := range static {
		out = append(out, source{app: a})
		where[a.Name] = fmt.Sprintf("backend.applications[%d] of the main configuration", i)
	}
	var conflicts config.Problems
	for _, name := range slices.Sorted(maps.Keys(files)) {
		a := files[name]
		path := filepath.Join(dir, name)
		if w, dup := where[a.Name]; dup {
			conflicts = append(conflicts, config.Problem{File: path, Path: "name",
				Reason: fmt.Sprintf("%q is also defined in %s; this file is ignored", a.Name, w)})
			continue
		}
		out = append(out, source{app: *a, file: path})
		where[a.Name] = path
	}
	slices.SortFunc(out, func(x, y source) int { return strings.Compare(x.app.Name, y.app.Name) })
	return out, conflicts
}

// CheckDir reads the application files in dir as a running backend would
// and returns every problem: files that are not valid JSON, unknown or
// mistyped fields, invalid values, and names also defined in static (the
// main configuration's backend.applications) or in another file. Each
// problem names its file and JSON path. A directory that does not exist is
// not a problem, since the backend watches for it to appear; anything else
// that is not a readable directory is. Entries that are not regular files
// are skipped, as the backend skips them, without blocking; a file over
// 1 MiB is a problem.
func CheckDir(dir string, static []config.Application) config.Problems {
	if dir == "" {
		return nil
	}
	names, err := listAppFiles(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return config.Problems{{File: dir, Reason: fmt.Sprintf("cannot read application directory: %v", err)}}
	}
	var problems config.Problems
	good := map[string]*config.Application{}
	for _, name := range names {
		path := filepath.Join(dir, name)
		data, err := readAppFile(path)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotAppFile) {
			continue
		}
		if err != nil {
			problems = append(problems, config.Problem{File: path, Reason: fmt.Sprintf("cannot read: %v", err)})
			continue
		}
		app, ps := config.ParseApplication(path, data)
		if len(ps) > 0 {
			problems = append(problems, ps...)
			continue
		}
		good[name] = app
	}
	_, conflicts := merge(static, dir, good)
	problems = append(problems, conflicts...)
	slices.SortStableFunc(problems, func(a, b config.Problem) int { return strings.Compare(a.File, b.File) })
	return problems
}
