package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// MinTokenLen is the shortest bearer token accepted for the TCP address.
const MinTokenLen = 16

// MaxTokenFile bounds a token file: a token is one short line.
const MaxTokenFile = 4 << 10

// ReadTokenFile returns the content of a file holding a secret (the admin
// and metrics tokens). It refuses a file that is not regular, that group
// or others may access, or that holds more than MaxTokenFile bytes: what
// it checks is the open file, the one it reads. Errors name the file,
// never its content.
func ReadTokenFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (mode %s)", path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s: mode %04o lets group or others read the token; fix it with: chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxTokenFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > MaxTokenFile {
		clear(data)
		return nil, fmt.Errorf("%s: more than the %d bytes a token file may have", path, MaxTokenFile)
	}
	return data, nil
}

// LoadToken reads the bearer token from path: its first line, trimmed.
// The file must pass ReadTokenFile, and the token be at least MinTokenLen
// bytes. Errors never quote the token.
func LoadToken(path string) ([]byte, error) {
	b, err := ReadTokenFile(path)
	if err != nil {
		return nil, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	token := []byte(strings.TrimSpace(line))
	clear(b)
	if len(token) < MinTokenLen {
		return nil, fmt.Errorf("%s: the token is %d bytes, at least %d are required", path, len(token), MinTokenLen)
	}
	return token, nil
}

var errNoToken = errors.New("missing or wrong bearer token")

// authorized lets through only requests carrying the bearer token, or
// (reads only) the status page's session cookie (see ui.go); without
// either, a browser gets the page's login. The comparison takes the same
// time whatever the token sent (both sides are hashed first, so not even
// the length shows).
func (s *Server) authorized(h http.Handler) http.Handler {
	want := sha256.Sum256(s.cfg.Token)
	ui := newUIAuth(s.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || !ok {
			if ui.cookieOK(r) {
				h.ServeHTTP(w, r)
				return
			}
			if ui.serve(w, r) {
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="scrimp"`)
			writeError(w, http.StatusUnauthorized, errNoToken.Error())
			return
		}
		h.ServeHTTP(w, r)
	})
}
