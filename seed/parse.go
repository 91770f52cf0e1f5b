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
// providers: either a JSON array whose entries are address strings or
// seed records (objects, as SignRecord makes them), or one entry per line:
// an address (blank lines and # comments ignored) or a record on one line.
// Without a keyring (s == nil) addresses and records are accepted as they
// are; with one, only records signed with one of its keys are, and
// addresses are refused as unsigned. Entries that fail are skipped with
// one warning each naming source and line, so one typo does not hide the
// other seeds. Only a malformed JSON array is an error. The result is
// sorted and free of duplicates.
func parseAddressList(data []byte, source string, defaultPort int, s *signer, log *slog.Logger) ([]string, error) {
	var addrs []string
	add := func(line int, raw string, isRecord bool, err error) {
		if err == nil {
			var addr string
			if addr, err = parseEntry(raw, isRecord, defaultPort, s); err == nil {
				addrs = append(addrs, addr)
				return
			}
		}
		log.Warn("seed: skipping entry", "source", source, "line", line, "err", err)
	}
	if isJSONList(data) {
		if err := parseJSONList(data, add); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
	} else {
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 1<<20)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if strings.HasPrefix(line, "{") { // a record: a # in it is no comment
				add(n, line, true, nil)
				continue
			}
			line, _, _ = strings.Cut(line, "#")
			if line = strings.TrimSpace(line); line != "" {
				add(n, line, false, nil)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), nil
}

// parseEntry checks one entry of a list: a record (JSON object) or a bare
// address, which is refused when a keyring is configured.
func parseEntry(raw string, isRecord bool, defaultPort int, s *signer) (string, error) {
	if !isRecord {
		if s != nil {
			return "", fmt.Errorf("address %q: %w", raw, errUnsigned)
		}
		return CheckAddress(raw, defaultPort)
	}
	var r record
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return "", fmt.Errorf("not a seed record: %w", err)
	}
	addr, err := s.check(&r, defaultPort)
	if err != nil {
		return "", fmt.Errorf("record of %q: %w", r.Address, err)
	}
	return addr, nil
}

// isJSONList tells a JSON array from the line format, where a line may
// also start with "[" (an IPv6 address): the array's bracket is followed
// by a string, an object or the closing bracket.
func isJSONList(data []byte) bool {
	rest, ok := bytes.CutPrefix(bytes.TrimSpace(data), []byte("["))
	rest = bytes.TrimSpace(rest)
	return ok && len(rest) > 0 && strings.IndexByte(`"{]`, rest[0]) >= 0
}

// parseJSONList calls add for every element of a JSON array with the
// element's line number: a string's value, an object's JSON (isRecord),
// or an error for anything else.
func parseJSONList(data []byte, add func(line int, raw string, isRecord bool, err error)) error {
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
		if bytes.HasPrefix(elem, []byte("{")) {
			add(line, string(elem), true, nil)
			continue
		}
		var s string
		if err := json.Unmarshal(elem, &s); err != nil {
			add(line, "", false, fmt.Errorf("%s is neither an address string nor a seed record", elem))
			continue
		}
		add(line, s, false, nil)
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
