package admin

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
)

// The status page: a read-only view of /v1/status, /v1/members, /v1/apps
// and /v1/proxy for a person, embedded in the binary (no external asset,
// works offline). The page's script polls those endpoints; it holds no
// server-side state per client, so any number of tabs costs only their
// requests.
//
// How a browser authenticates on the TCP address: the token never goes
// into the page or a script. GET /?token=TOKEN (or the login form, POST
// /ui/login) checks it and answers with an HttpOnly, SameSite=Strict
// session cookie holding an HMAC of the token (not the token), then
// redirects to / so the token leaves the address bar. The cookie admits
// only GET and HEAD requests: drain and key changes still need the bearer
// token. Request logs carry the path only, never the query.

//go:embed ui
var uiFiles embed.FS

// uiCookie is the session cookie's name.
const uiCookie = "scrimp-admin"

// maxLoginBody bounds the login form.
const maxLoginBody = 4 << 10

// uiCookieValue is the session cookie of token: an HMAC of a fixed label,
// so the cookie proves the token without being it.
func uiCookieValue(token []byte) string {
	m := hmac.New(sha256.New, token)
	m.Write([]byte("scrimp admin ui session v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// uiAuth decides requests on the TCP address that carry no bearer token.
// It is built when the server is (the token is cleared after New).
type uiAuth struct {
	token  [sha256.Size]byte // sha256 of the token
	cookie [sha256.Size]byte // sha256 of the cookie value
	value  string            // the cookie value to set
}

func newUIAuth(token []byte) *uiAuth {
	v := uiCookieValue(token)
	return &uiAuth{token: sha256.Sum256(token), cookie: sha256.Sum256([]byte(v)), value: v}
}

// cookieOK reports whether r carries the session cookie; it admits reads
// only.
func (a *uiAuth) cookieOK(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	c, err := r.Cookie(uiCookie)
	if err != nil {
		return false
	}
	sum := sha256.Sum256([]byte(c.Value))
	return subtle.ConstantTimeCompare(sum[:], a.cookie[:]) == 1
}

func (a *uiAuth) tokenOK(t string) bool {
	sum := sha256.Sum256([]byte(strings.TrimSpace(t)))
	return subtle.ConstantTimeCompare(sum[:], a.token[:]) == 1
}

// serve answers the requests an unauthenticated browser may make: the
// login page and its style sheet, a login by ?token= or by the form. It
// returns false for anything else (answered 401 by the caller).
func (a *uiAuth) serve(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		if r.URL.Query().Has("token") {
			a.login(w, r, r.URL.Query().Get("token"))
			return true
		}
		serveUIFile(w, r, "login.html", http.StatusUnauthorized)
		return true
	case r.URL.Path == "/ui/style.css" && r.Method == http.MethodGet:
		serveUIFile(w, r, "style.css", http.StatusOK)
		return true
	case r.URL.Path == "/ui/login" && r.Method == http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
		if err := r.ParseForm(); err != nil {
			writeError(w, http.StatusBadRequest, "the login form is not a form")
			return true
		}
		a.login(w, r, r.PostForm.Get("token"))
		return true
	}
	return false
}

// login sets the session cookie for the right token and sends the
// browser to the page; a wrong one gets the login page again.
func (a *uiAuth) login(w http.ResponseWriter, r *http.Request, token string) {
	if !a.tokenOK(token) {
		serveUIFile(w, r, "login.html", http.StatusUnauthorized)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: uiCookie, Value: a.value, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode})
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// uiRoutes registers the page, its assets and /v1/proxy.
func (s *Server) uiRoutes() {
	s.handle("GET", "/{$}", func(w http.ResponseWriter, r *http.Request) {
		serveUIFile(w, r, "index.html", http.StatusOK)
	})
	s.mux.HandleFunc("GET /ui/{file}", func(w http.ResponseWriter, r *http.Request) {
		serveUIFile(w, r, r.PathValue("file"), http.StatusOK)
	})
	s.handle("GET", "/v1/proxy", s.proxyStats)
}

// securityHeaders are on every page and asset: only the page's own
// scripts, styles and requests, no framing, no referrer, no sniffing.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
}

// serveUIFile writes an embedded file with status; 404 for a name not
// embedded (sub-directories and dot files included).
func serveUIFile(w http.ResponseWriter, r *http.Request, name string, status int) {
	if name == "" || strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") {
		writeError(w, http.StatusNotFound, "no such file")
		return
	}
	b, err := fs.ReadFile(uiFiles, path.Join("ui", name))
	if err != nil {
		writeError(w, http.StatusNotFound, "no such file")
		return
	}
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	securityHeaders(w.Header())
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(b)
	}
}
