package admin

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// ProxyView is what a Views also implements to answer GET /v1/proxy:
// the requests the proxy itself counts. ProxyStats may block on the
// proxy's local status endpoint or socket until ctx ends; it is called
// concurrently from request goroutines.
type ProxyView interface {
	ProxyStats(ctx context.Context) (ProxyStats, error)
}

// ErrNoProxyStats is wrapped by ProxyStats errors meaning the proxy does
// not report counts (external mode, a status endpoint not configured):
// answered with 200 and Available false, the reason in Reason.
var ErrNoProxyStats = errors.New("the proxy reports no counts")

// ProxyStats answers GET /v1/proxy.
type ProxyStats struct {
	// Proxy is the proxy kind (nginx, haproxy).
	Proxy string `json:"proxy"`
	// Available says whether counts were read; Reason says why not.
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	// Source is where they were read (a loopback URL, a socket path).
	Source string    `json:"source,omitempty"`
	At     time.Time `json:"at"`
	// Nginx is nginx's stub_status: counts of the whole server.
	Nginx *NginxStats `json:"nginx,omitempty"`
	// Servers are HAProxy's per backend server counts ("show stat").
	Servers []ServerStats `json:"servers,omitempty"`
}

// NginxStats are nginx's stub_status counters, since nginx started.
type NginxStats struct {
	Active   int64 `json:"active"`
	Accepts  int64 `json:"accepts"`
	Handled  int64 `json:"handled"`
	Requests int64 `json:"requests"`
	Reading  int64 `json:"reading"`
	Writing  int64 `json:"writing"`
	Waiting  int64 `json:"waiting"`
}

// ServerStats is one HAProxy backend server's line of "show stat".
type ServerStats struct {
	// Backend is HAProxy's backend name, Server the server's; Node the
	// scrimp node it is, when known.
	Backend string `json:"backend"`
	Server  string `json:"server"`
	Node    string `json:"node,omitempty"`
	// Addr is the server's address, host:port.
	Addr string `json:"addr,omitempty"`
	// Status is HAProxy's (UP, DOWN, MAINT, DRAIN, no check...).
	Status string `json:"status"`
	// Current and Total are sessions now and since the worker started.
	Current int64 `json:"current"`
	Total   int64 `json:"total"`
	// BytesIn and BytesOut are bytes from and to clients.
	BytesIn  int64 `json:"bytes-in"`
	BytesOut int64 `json:"bytes-out"`
}

// proxyTimeout bounds one read of the proxy's counts.
const proxyTimeout = 2 * time.Second

func (s *Server) proxyStats(w http.ResponseWriter, r *http.Request) {
	if !s.views(w) {
		return
	}
	pv, ok := s.cfg.Views.(ProxyView)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this node reports no proxy counts")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), proxyTimeout)
	defer cancel()
	st, err := pv.ProxyStats(ctx)
	switch {
	case errors.Is(err, ErrNoProxyStats):
		st.Available, st.Reason = false, err.Error()
	case err != nil:
		s.log.Warn("proxy counts", "err", err)
		writeError(w, errorStatus(err), err.Error())
		return
	}
	if st.At.IsZero() {
		st.At = time.Now()
	}
	writeJSON(w, http.StatusOK, st)
}
