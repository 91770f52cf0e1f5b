package seed

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// durationOption parses the duration option named field. An empty value
// means def, so that a field left out of the JSON keeps its default. The
// result must be at least minimum; errors name the field as the
// configuration spells it.
func durationOption(field, value string, def, minimum time.Duration) (time.Duration, error) {
	if value == "" {
		return def, nil
	}
	d, err := time.ParseDuration(value)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration", field, value)
	}
	if d < minimum {
		return 0, fmt.Errorf("%s: %q is less than %s", field, value, minimum)
	}
	return d, nil
}

// parseAddressList reads the seed list format shared by the file and exec
// providers: either a JSON array of strings, or one address per line with
// blank lines and # comments ignored. Entries that fail CheckAddress are
// skipped with a warning naming source and line, so one typo does not hide
// the other seeds. Only a malformed JSON array is an error. The result is
// sorted and free of duplicates.
func parseAddressList(data []byte, source string, defaultPort int, log *slog.Logger) ([]string, error) {
	var addrs []string
	add := func(line int, raw string, err error) {
		if err == nil {
			var addr string
			if addr, err = CheckAddress(raw, defaultPort); err == nil {
				addrs = append(addrs, addr)
				return
			}
		}
		log.Warn("seed: skipping invalid address", "source", source, "line", line, "err", err)
	}
	if isJSONList(data) {
		if err := parseJSONList(data, add); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
	} else {
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 1<<20)
		for n := 1; sc.Scan(); n++ {
			line, _, _ := strings.Cut(sc.Text(), "#")
			if line = strings.TrimSpace(line); line != "" {
				add(n, line, nil)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), nil
}

// isJSONList tells a JSON array from the line format, where a line may
// also start with "[" (an IPv6 address): the array's bracket is followed
// by a string or by the closing bracket.
func isJSONList(data []byte) bool {
	rest, ok := bytes.CutPrefix(bytes.TrimSpace(data), []byte("["))
	rest = bytes.TrimSpace(rest)
	return ok && (bytes.HasPrefix(rest, []byte(`"`)) || bytes.HasPrefix(rest, []byte("]")))
}

// parseJSONList calls add for every element of a JSON array of strings with
// the element's line number, and with an error for an element that is not
// a string.
func parseJSONList(data []byte, add func(line int, raw string, err error)) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // the opening bracket
		return fmt.Errorf("JSON list: %w", err)
	}
	for dec.More() {
		line := lineAt(data, dec.InputOffset())
		var elem json.RawMessage
		if err := dec.Decode(&elem); err != nil {
			return fmt.Errorf("JSON list, line %d: %w", line, err)
		}
		var s string
		if err := json.Unmarshal(elem, &s); err != nil {
			add(line, "", fmt.Errorf("%s is not a string", elem))
			continue
		}
		add(line, s, nil)
	}
	if _, err := dec.Token(); err != nil { // the closing bracket
		return fmt.Errorf("JSON list: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("JSON list: data after the closing bracket")
	}
	return nil
}

// lineAt returns the 1-based line of the first non-blank byte at or after
// offset, which is where the decoder's next value starts.
func lineAt(data []byte, offset int64) int {
	i := int(offset)
	for i < len(data) && strings.IndexByte(" \t\r\n,", data[i]) >= 0 {
		i++
	}
	return bytes.Count(data[:i], []byte("\n")) + 1
}
