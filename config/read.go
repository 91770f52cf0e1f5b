package config

import (
	"fmt"
	"io"
	"os"
)

// MaxFileSize bounds the main configuration file. A real one is a few
// kilobytes; the limit keeps a wrong path (a log, a device such as
// /dev/zero) from being read without end.
const MaxFileSize = 1 << 20

// readFile reads the configuration file at path, at most MaxFileSize
// bytes. It reads what the path names, whatever its type, so that a
// pipe (--config <(…), /dev/stdin) still works; the limit bounds that too.
// Errors name the file.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	tooLarge := fmt.Errorf("config: %s: larger than the limit of %d bytes (1 MiB) for a configuration file", path, MaxFileSize)
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > MaxFileSize {
		return nil, tooLarge
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, tooLarge
	}
	return data, nil
}
