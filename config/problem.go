package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	// File is the configuration file's path.
	File string
	// Path is the JSON path of the offending value, e.g.
	// "backend.applications[0].listen-port"; empty for the whole file.
	Path string
	// Reason says what is wrong.
	Reason string
}

// String formats the problem as FILE: PATH: REASON, leaving out an empty
// file or path.
func (p Problem) String() string {
	var b strings.Builder
	for _, s := range []string{p.File, p.Path} {
		if s != "" {
			b.WriteString(s)
			b.WriteString(": ")
		}
	}
	b.WriteString(p.Reason)
	return b.String()
}

// Problems is every problem found in one file; as an error it prints one
// problem per line.
type Problems []Problem

// Error joins the problems, one per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Duration is a time.Duration written in JSON as a string such as "200ms".
// A value that does not parse is kept and reported by Validate with its
// path, so that one bad duration does not hide the file's other problems.
type Duration struct {
	time.Duration
	// bad is the JSON text of a value that is not a duration, or empty.
	bad string
}

// D wraps a time.Duration.
func D(d time.Duration) Duration { return Duration{Duration: d} }

// UnmarshalJSON accepts a Go duration string such as "1m30s". JSON null
// leaves d as it is, like encoding/json does for other types. Anything else
// is not an error here: it is kept for Validate to report.
func (d *Duration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		*d = Duration{Duration: d.Duration, bad: string(b)}
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		*d = Duration{Duration: d.Duration, bad: string(b)}
		return nil
	}
	*d = Duration{Duration: v}
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// check reports a duration that did not parse or is negative.
func (d Duration) check() string {
	if d.bad != "" {
		return fmt.Sprintf("%s is not a duration (write e.g. \"200ms\", \"5s\")", d.bad)
	}
	if d.Duration < 0 {
		return "must not be negative"
	}
	return ""
}
