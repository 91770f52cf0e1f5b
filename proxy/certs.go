package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/scrimplb/scrimp/generator"
)

// ErrCertNotLoaded is returned (wrapped) by UpdateCerts for a certificate
// file the running proxy has not loaded: only a reload can add it.
var ErrCertNotLoaded = errors.New("certificate file not loaded by the running proxy")

// ReloadCerts reloads the configuration nginx runs, unchanged, so that it reads
// its certificate files again (after `nginx -t` accepts them). Like Apply
// it is not safe for concurrent use.
func (n *ManagedNginx) ReloadCerts(ctx context.Context) error {
	n.mu.Lock()
	cur := n.current
	n.mu.Unlock()
	if cur == nil {
		return errors.New("proxy: nginx reload: no configuration applied yet")
	}
	return n.apply(ctx, cur, true)
}

// ReloadCerts reloads the configuration HAProxy runs, unchanged, so that it
// reads its certificate files again (after `haproxy -c` accepts them).
// Like Apply it is not safe for concurrent use.
func (h *ManagedHAProxy) ReloadCerts(ctx context.Context) error {
	h.mu.Lock()
	cur := h.current
	h.mu.Unlock()
	if cur == nil {
		return errors.New("proxy: haproxy reload: no configuration applied yet")
	}
	return h.apply(ctx, cur, true)
}

// ReloadCerts checks the configuration that includes Target and runs the reload
// command, without writing Target: the proxy reads its certificate files
// again.
func (e *External) ReloadCerts(ctx context.Context) error {
	if _, err := run(ctx, e.Timeout, e.Check...); err != nil {
		return fmt.Errorf("proxy: check before reloading for new certificates: %w", err)
	}
	if _, err := run(ctx, e.Timeout, e.Reload...); err != nil {
		return fmt.Errorf("proxy: reload: %w", err)
	}
	return nil
}

// haproxyStatsSocket is the worker's CLI socket the haproxy generator
// puts in a standalone configuration's state directory.
const haproxyStatsSocket = "admin.sock"

// UpdateCerts loads the current contents of certs' files into the running
// HAProxy without a reload, through the worker's CLI socket: for each,
// "set ssl cert FILE <<" with the certificate and its key as the payload,
// then "commit ssl cert FILE", which new TLS handshakes use at once
// (connections already open keep theirs). A certificate that fails is
// aborted ("abort ssl cert"), leaving the one loaded before, and the error
// names it; one the running configuration does not name fails with
// ErrCertNotLoaded. Either way the caller reloads. Certificates updated
// before a failure stay updated: their files are the current ones.
//
// Workers still finishing connections after a reload keep their
// certificates: they take no new connections. Like Apply it is not safe
// for concurrent use.
func (h *ManagedHAProxy) UpdateCerts(ctx context.Context, certs []generator.TLSCert) error {
	switch {
	case h.sup.isClosed():
		return h.sup.errClosed()
	case h.sup.current() == nil:
		return errors.New("proxy: haproxy certificates: haproxy is not running")
	}
	start := time.Now()
	sock := filepath.Join(h.dir, haproxyStatsSocket)
	for _, c := range certs {
		pem, err := certPayload(c)
		if err != nil {
			return fmt.Errorf("proxy: haproxy certificates: %w", err)
		}
		if strings.ContainsAny(c.Cert, " \t\r\n") {
			return fmt.Errorf("proxy: haproxy certificates: %q: a file name with white space cannot be named on the CLI", c.Cert)
		}
		reply, err := h.socketCommand(ctx, sock, "stats socket", "set ssl cert "+c.Cert+" <<\n"+pem, 1<<16)
		if err != nil {
			return fmt.Errorf("proxy: haproxy certificates: %w", err)
		}
		if strings.Contains(reply, "not referenced by the configuration") {
			return fmt.Errorf("proxy: haproxy certificates: %s: %w", c.Cert, ErrCertNotLoaded)
		}
		if !strings.Contains(reply, "Transaction created") && !strings.Contains(reply, "Transaction updated") {
			h.abortCert(ctx, sock, c.Cert)
			return fmt.Errorf("proxy: haproxy certificates: set ssl cert %s: %s", c.Cert, oneLine(reply))
		}
		reply, err = h.socketCommand(ctx, sock, "stats socket", "commit ssl cert "+c.Cert, 1<<16)
		if err != nil || !strings.Contains(reply, "Success!") {
			h.abortCert(ctx, sock, c.Cert)
			if err == nil {
				err = errors.New(oneLine(reply))
			}
			return fmt.Errorf("proxy: haproxy certificates: commit ssl cert %s: %w", c.Cert, err)
		}
	}
	h.mu.Lock()
	h.certUpdates++
	h.mu.Unlock()
	h.log.Info("haproxy certificates updated without a reload", "certificates", len(certs), "took", time.Since(start).Round(time.Microsecond))
	return nil
}

// CertUpdates returns how many UpdateCerts succeeded.
func (h *ManagedHAProxy) CertUpdates() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.certUpdates
}

// abortCert ends a failed transaction, best effort: the next
// "set ssl cert" of another file would fail while it is open.
func (h *ManagedHAProxy) abortCert(ctx context.Context, sock, file string) {
	if reply, err := h.socketCommand(ctx, sock, "stats socket", "abort ssl cert "+file, 1<<16); err != nil {
		h.log.Warn("aborting a certificate transaction failed", "file", file, "err", err, "reply", oneLine(reply))
	}
}

// certPayload returns c's certificate file, followed by its key file when
// that is another file, as a CLI payload: without empty lines (an empty
// line ends a payload) and ending in a newline.
func certPayload(c generator.TLSCert) (string, error) {
	data, err := os.ReadFile(c.Cert)
	if err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	if c.Key != "" && c.Key != c.Cert {
		key, err := os.ReadFile(c.Key)
		if err != nil {
			return "", fmt.Errorf("key of %s: %w", c.Cert, err)
		}
		data = append(append(data, '\n'), key...)
	}
	var b strings.Builder
	for line := range bytes.Lines(data) {
		line = bytes.TrimRight(line, "\r\n")
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("certificate %s is empty", c.Cert)
	}
	return b.String(), nil
}

// oneLine shortens a CLI reply for an error message.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// firstLine is s up to its first newline, for naming a command with a
// payload in an error without the payload (a private key).
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
