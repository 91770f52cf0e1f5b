package admin

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/scrimplb/scrimp/cluster"
)

// Client talks to a node's admin socket. It is safe for concurrent use.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client of the admin socket at path; nothing is
// dialled until a request.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}
	return &Client{socket: path, hc: &http.Client{Transport: tr}}
}

// Keys runs a key operation through the node: "list" (key nil),
// "install", "use" or "remove". An error names the socket and why the
// request failed: the node's own error message, or why it could not be
// reached.
func (c *Client) Keys(ctx context.Context, op string, key []byte) (KeysResponse, error) {
	var resp KeysResponse
	var req *http.Request
	var err error
	if op == "list" {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, "http://scrimp/v1/keys", nil)
	} else {
		body, _ := json.Marshal(KeyRequest{Key: base64.StdEncoding.EncodeToString(key)})
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, "http://scrimp/v1/keys/"+op, bytes.NewReader(body))
		if req != nil {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	if err != nil {
		return resp, fmt.Errorf("admin socket %s: %w", c.socket, err)
	}
	if err := c.do(req, &resp); err != nil {
		return resp, err
	}
	if resp.Errors == nil {
		resp.Errors = map[string]string{}
	}
	return resp, nil
}

// do sends req and decodes a 200 answer into out; any other status is an
// error carrying the node's message.
func (c *Client) do(req *http.Request, out any) error {
	res, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin socket %s: %s", c.socket, dialReason(err))
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("admin socket %s: reading the answer: %w", c.socket, err)
	}
	if res.StatusCode != http.StatusOK {
		var e Error
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("admin socket %s: %s (HTTP %d)", c.socket, e.Error, res.StatusCode)
		}
		return fmt.Errorf("admin socket %s: HTTP %d", c.socket, res.StatusCode)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("admin socket %s: undecodable answer: %w", c.socket, err)
	}
	return nil
}

// dialReason explains the usual ways a unix socket cannot be reached.
func dialReason(err error) string {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return "no such socket: is the node running, and is admin-socket in its configuration this path?"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: the node that made this socket is not running"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return "permission denied: run as the user scrimp runs as (the socket is mode 0600)"
	}
	return err.Error()
}

var _ KeyManager = (*cluster.Cluster)(nil)
