package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/scrimplb/scrimp/lb"
)

// Views answers the read-only endpoints and drain (node does, from its
// cluster, load balancer and backend). Every method may be called
// concurrently from request goroutines; all but Drain return at once.
type Views interface {
	// MembersView is every member the node knows.
	MembersView() MembersResponse
	// StatusView is the node's own state.
	StatusView() Status
	// AppsView is every application with its backends' states.
	AppsView() AppsResponse
	// Render returns the configuration text the current membership
	// renders; an error wrapping ErrWrongRole on a backend.
	Render() ([]byte, error)
	// Drain starts (or, with Cancel, ends) draining this backend and,
	// with Wait, waits until every load balancer acknowledged or ctx
	// ends. An error wrapping ErrWrongRole on a load balancer.
	Drain(ctx context.Context, req DrainRequest) (DrainResponse, error)
}

// ErrWrongRole is wrapped by errors of operations this node's role does
// not have (answered with 409).
var ErrWrongRole = errors.New("not for this node's role")

// MembersResponse answers GET /v1/members.
type MembersResponse struct {
	// Self is this node's name.
	Self    string   `json:"self"`
	Members []Member `json:"members"`
}

// Member is one member as the node sees it.
type Member struct {
	Name string `json:"name"`
	// Role is "lb" or "backend".
	Role string `json:"role"`
	// Addr is its gossip address, host:port.
	Addr string `json:"addr"`
	// State is alive, suspect, dead or left.
	State string `json:"state"`
	// Self marks the node answering.
	Self bool `json:"self,omitempty"`
	// Applications are its applications with their instance states;
	// null when the node does not know them (a backend sees its peers
	// without applications).
	Applications []InstanceState `json:"applications"`
	// LastSeen is when the node last heard from it (a probe answered, a
	// beacon, an application set).
	LastSeen *time.Time `json:"last-seen,omitempty"`
	// Since is when a dead or left member was lost.
	Since *time.Time `json:"since,omitempty"`
}

// InstanceState is an application instance's advertised state.
type InstanceState struct {
	Name string `json:"name"`
	// State is up, draining or down.
	State string `json:"state"`
}

// Status answers GET /v1/status.
type Status struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// GossipAddr is where peers reach this node, host:port.
	GossipAddr string `json:"gossip-addr"`
	// Members counts the live members, this node included.
	Members int        `json:"members"`
	Seeds   SeedStatus `json:"seeds"`
	// KeyFingerprints are the gossip keyring's, primary first; empty for
	// plaintext gossip. Never a key.
	KeyFingerprints []string `json:"key-fingerprints"`
	// LB is set on a load balancer, Backend on a backend.
	LB      *LBStatus      `json:"lb,omitempty"`
	Backend *BackendStatus `json:"backend,omitempty"`
}

// SeedStatus is the seed provider and its last answer.
type SeedStatus struct {
	Provider string      `json:"provider"`
	Last     *SeedAnswer `json:"last,omitempty"`
}

// SeedAnswer is one call of the seed provider.
type SeedAnswer struct {
	At        time.Time `json:"at"`
	Took      Duration  `json:"took"`
	Addresses []string  `json:"addresses"`
	Error     string    `json:"error,omitempty"`
}

// LBStatus is a load balancer's part of Status.
type LBStatus struct {
	// Proxy is the proxy kind (nginx, haproxy, ...), Mode managed or
	// external.
	Proxy string `json:"proxy"`
	Mode  string `json:"mode"`
	// ProxyPID is the managed proxy's master process; 0 when external or
	// not running.
	ProxyPID int `json:"proxy-pid,omitempty"`
	// Reloads is how many reloads the managed proxy was sent.
	Reloads int `json:"reloads"`
	// Last is the newest pass of the loop; History the last passes that
	// changed something or failed, oldest first.
	Last    *lb.Outcome  `json:"last,omitempty"`
	History []lb.Outcome `json:"history"`
	// Refused are the application instances not routed, with why.
	Refused   []Refusal `json:"refused"`
	Guarded   int       `json:"guarded"`
	CheckDown int       `json:"check-down"`
	// ACME is the state of each certificate lb.acme manages; absent
	// without lb.acme.
	ACME []CertStatus `json:"acme,omitempty"`
}

// CertStatus is one domain whose certificate lb.acme manages.
type CertStatus struct {
	Domain string `json:"domain"`
	// State is placeholder (self-signed, none obtained yet), valid,
	// renewing or failed (the last order or renewal failed; the current
	// certificate is still served).
	State     string    `json:"state"`
	NotAfter  time.Time `json:"not-after"`
	Issuer    string    `json:"issuer,omitempty"`
	Serial    string    `json:"serial,omitempty"`
	LastError string    `json:"last-error,omitempty"`
}

// Refusal is an application instance a load balancer does not route to.
type Refusal struct {
	Application string `json:"application"`
	Node        string `json:"node"`
	Reason      string `json:"reason"`
}

// BackendStatus is a backend's part of Status.
type BackendStatus struct {
	Applications []InstanceState `json:"applications"`
	Draining     bool            `json:"draining"`
	// Unacknowledged are the load balancers that have not yet
	// acknowledged the current application set (while draining: still
	// routing here).
	Unacknowledged []string `json:"unacknowledged"`
}

// AppsResponse answers GET /v1/apps.
type AppsResponse struct {
	Applications []App `json:"applications"`
}

// App is one application and its backends.
type App struct {
	Name       string       `json:"name"`
	Protocol   string       `json:"protocol"`
	ListenPort int          `json:"listen-port"`
	Domains    []string     `json:"domains,omitempty"`
	Paths      []string     `json:"paths,omitempty"`
	Backends   []AppBackend `json:"backends"`
}

// AppBackend is one backend instance of an application.
type AppBackend struct {
	Node string `json:"node"`
	// Addr is where the proxy sends requests, host:port.
	Addr string `json:"addr"`
	// State is up, draining, down (the backend's own check), check-down
	// (the load balancer's checks fail), guarded (kept by the mass-loss
	// guard) or refused (see Reason).
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// Instance states beyond the advertised up, draining and down.
const (
	StateCheckDown = "check-down"
	StateGuarded   = "guarded"
	StateRefused   = "refused"
)

// DrainRequest is the body of POST /v1/drain; an empty body is {}.
type DrainRequest struct {
	// Cancel ends draining: the applications are advertised as their
	// checks say again.
	Cancel bool `json:"cancel,omitempty"`
	// Wait waits (up to the server's operation timeout) until every load
	// balancer has acknowledged a drain. Load balancers acknowledge only
	// draining sets: a cancel returns at once.
	Wait bool `json:"wait,omitempty"`
}

// DrainResponse answers POST /v1/drain.
type DrainResponse struct {
	Draining bool `json:"draining"`
	// Pending are the load balancers that have not acknowledged yet;
	// empty once every one runs a configuration with the change.
	Pending []string `json:"pending"`
	// Acknowledged reports a drain every load balancer acknowledged:
	// none routes new requests here.
	Acknowledged bool `json:"acknowledged"`
}

// Duration is a time.Duration written as text ("1.5s") in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// maxDrainBody bounds a drain request's body.
const maxDrainBody = 1 << 10

func (s *Server) members(w http.ResponseWriter, r *http.Request) {
	if s.views(w) {
		writeJSON(w, http.StatusOK, s.cfg.Views.MembersView())
	}
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if s.views(w) {
		writeJSON(w, http.StatusOK, s.cfg.Views.StatusView())
	}
}

func (s *Server) apps(w http.ResponseWriter, r *http.Request) {
	if s.views(w) {
		writeJSON(w, http.StatusOK, s.cfg.Views.AppsView())
	}
}

func (s *Server) render(w http.ResponseWriter, r *http.Request) {
	if !s.views(w) {
		return
	}
	text, err := s.cfg.Views.Render()
	if err != nil {
		writeError(w, errorStatus(err), err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(text)
}

func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	if !s.views(w) {
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "the body must be JSON (application/json)")
		return
	}
	var req DrainRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxDrainBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "body over 1 KiB")
		return
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, `the body is not {"cancel": bool, "wait": bool}: `+err.Error())
			return
		}
		if _, err := dec.Token(); err != io.EOF {
			writeError(w, http.StatusBadRequest, "data after the JSON body")
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.OpTimeout)
	defer cancel()
	res, err := s.cfg.Views.Drain(ctx, req)
	if err != nil {
		s.log.Warn("drain failed", "cancel", req.Cancel, "err", err)
		writeError(w, errorStatus(err), err.Error())
		return
	}
	s.log.Info("drain", "draining", res.Draining, "pending", res.Pending)
	writeJSON(w, http.StatusOK, res)
}

// views answers 501 when the server has no Views.
func (s *Server) views(w http.ResponseWriter) bool {
	if s.cfg.Views == nil {
		writeError(w, http.StatusNotImplemented, "this node serves no status")
		return false
	}
	return true
}

func errorStatus(err error) int {
	switch {
	case errors.Is(err, ErrWrongRole):
		return http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}
