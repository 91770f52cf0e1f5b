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

// Client talks to a node's admin socket, or to its TCP address. It is
// safe for concurrent use.
type Client struct {
	socket string // what errors name: "admin socket PATH" or "admin address ADDR"
	base   string // the URL's scheme and host
	token  string // the bearer token, TCP only
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
	return &Client{socket: "admin socket " + path, base: "http://scrimp", hc: &http.Client{Transport: tr}}
}

// NewTCPClient returns a client of the admin interface at a TCP address
// (host:port), sending token as its bearer token.
func NewTCPClient(addr string, token []byte) *Client {
	return &Client{socket: "admin address " + addr, base: "http://" + addr, token: string(token),
		hc: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
}

// Members asks GET /v1/members.
func (c *Client) Members(ctx context.Context) (MembersResponse, error) {
	var out MembersResponse
	return out, c.get(ctx, "/v1/members", &out)
}

// Status asks GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var out Status
	return out, c.get(ctx, "/v1/status", &out)
}

// Apps asks GET /v1/apps.
func (c *Client) Apps(ctx context.Context) (AppsResponse, error) {
	var out AppsResponse
	return out, c.get(ctx, "/v1/apps", &out)
}

// Render asks GET /v1/render: the configuration text.
func (c *Client) Render(ctx context.Context) ([]byte, error) {
	var out []byte
	return out, c.get(ctx, "/v1/render", &out)
}

// Drain asks POST /v1/drain.
func (c *Client) Drain(ctx context.Context, req DrainRequest) (DrainResponse, error) {
	var out DrainResponse
	body, _ := json.Marshal(req)
	r, err := c.request(ctx, http.MethodPost, "/v1/drain", bytes.NewReader(body))
	if err != nil {
		return out, err
	}
	r.Header.Set("Content-Type", "application/json")
	return out, c.do(r, &out)
}

func (c *Client) get(ctx context.Context, path string, out any) error {
	r, err := c.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	return c.do(r, out)
}

func (c *Client) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	r, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.socket, err)
	}
	return r, nil
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
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/keys", nil)
	} else {
		body, _ := json.Marshal(KeyRequest{Key: base64.StdEncoding.EncodeToString(key)})
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/keys/"+op, bytes.NewReader(body))
		if req != nil {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	if err != nil {
		return resp, fmt.Errorf("%s: %w", c.socket, err)
	}
	if err := c.do(req, &resp); err != nil {
		return resp, err
	}
	if resp.Errors == nil {
		resp.Errors = map[string]string{}
	}
	return resp, nil
}

// maxAnswer bounds an answer: a rendered configuration of thousands of
// backends, or their members, fits.
const maxAnswer = 64 << 20

// do sends req and decodes a 200 answer into out (or, for a *[]byte, takes
// it as it is); any other status is an error carrying the node's message.
func (c *Client) do(req *http.Request, out any) error {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %s", c.socket, dialReason(err))
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("%s: reading the answer: %w", c.socket, err)
	}
	if res.StatusCode != http.StatusOK {
		var e Error
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s: %s (HTTP %d)", c.socket, e.Error, res.StatusCode)
		}
		return fmt.Errorf("%s: HTTP %d", c.socket, res.StatusCode)
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = body
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s: undecodable answer: %w", c.socket, err)
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
