package admin

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// serveTCP starts a Server on a loopback port with token and a socket,
// until the test ends.
func serveTCP(t *testing.T, token string, logs io.Writer) *Server {
	t.Helper()
	s, err := New(Config{Socket: t.TempDir() + "/admin.sock", Addr: "127.0.0.1:0", Token: []byte(token),
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

// noRedirect is a client that shows redirects rather than following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport: &http.Transport{DisableKeepAlives: true}}

// The status page on the TCP address: without the token only the login
// page and its style sheet; the token (in the address or the form) is
// swapped for an HttpOnly SameSite=Strict cookie that is not the token
// and admits reads only; every page and asset has the strict headers;
// the token never reaches the log.
func TestStatusPageAuth(t *testing.T) {
	const token = "page-token-0123456789abcdef"
	logs := &logBuf{}
	s := serveTCP(t, token, logs)
	base := "http://" + s.Addr()

	do := func(t *testing.T, method, path, cookie string, body io.Reader) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: uiCookie, Value: cookie})
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	login := func(t *testing.T, res *http.Response) string {
		t.Helper()
		if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" {
			t.Fatalf("login: %d to %q, want 303 to /", res.StatusCode, res.Header.Get("Location"))
		}
		cs := res.Cookies()
		if len(cs) != 1 || cs[0].Name != uiCookie || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode || cs[0].Path != "/" {
			t.Fatalf("login cookies %+v: want one HttpOnly SameSite=Strict cookie %s for /", cs, uiCookie)
		}
		if strings.Contains(cs[0].Value, token) || len(cs[0].Value) < 32 {
			t.Fatalf("the cookie %q holds the token or is short", cs[0].Value)
		}
		return cs[0].Value
	}

	cookie := login(t, do(t, "GET", "/?token="+url.QueryEscape(token), "", nil))
	if form := login(t, do(t, "POST", "/ui/login", "", strings.NewReader("token="+url.QueryEscape(token)))); form != cookie {
		t.Errorf("the form's cookie differs from the address's")
	}

	cases := []struct {
		name, method, path, cookie string
		want                       int
	}{
		{"login page", "GET", "/", "", http.StatusUnauthorized},
		{"wrong token", "GET", "/?token=page-token-0123456789abcdeX", "", http.StatusUnauthorized},
		{"style for the login page", "GET", "/ui/style.css", "", http.StatusOK},
		{"script without a cookie", "GET", "/ui/app.js", "", http.StatusUnauthorized},
		{"data without a cookie", "GET", "/v1/status", "", http.StatusUnauthorized},
		{"wrong cookie", "GET", "/v1/status", "0123456789abcdef0123456789abcdef", http.StatusUnauthorized},
		{"page", "GET", "/", cookie, http.StatusOK},
		{"script", "GET", "/ui/app.js", cookie, http.StatusOK},
		{"icon", "GET", "/ui/icon.svg", cookie, http.StatusOK},
		{"data (no views here)", "GET", "/v1/status", cookie, http.StatusNotImplemented},
		{"proxy (no views here)", "GET", "/v1/proxy", cookie, http.StatusNotImplemented},
		{"missing asset", "GET", "/ui/none.js", cookie, http.StatusNotFound},
		{"escape attempt", "GET", "/ui/..%2fui.go", cookie, http.StatusNotFound},
		{"drain with only the cookie", "POST", "/v1/drain", cookie, http.StatusUnauthorized},
		{"key change with only the cookie", "POST", "/v1/keys/install", cookie, http.StatusUnauthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := do(t, c.method, c.path, c.cookie, nil)
			if res.StatusCode != c.want {
				t.Fatalf("%s %s: %d, want %d", c.method, c.path, res.StatusCode, c.want)
			}
			if strings.HasSuffix(res.Header.Get("Content-Type"), "charset=utf-8") && strings.HasPrefix(res.Header.Get("Content-Type"), "text/") {
				if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe") {
					t.Errorf("CSP %q", csp)
				}
				if res.Header.Get("X-Content-Type-Options") != "nosniff" {
					t.Error("no nosniff")
				}
			}
		})
	}
	// The socket serves the page without a token: only the node's user
	// reaches it.
	res, err := NewClient(s.Socket()).hc.Get("http://x/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("page on the socket: %d, CSP %q", res.StatusCode, res.Header.Get("Content-Security-Policy"))
	}
	if strings.Contains(logs.String(), token) {
		t.Errorf("the token is in the log:\n%s", logs)
	}
}

// The embedded page works offline under its CSP: no inline script or
// style, no address outside the node.
func TestStatusPageSelfContained(t *testing.T) {
	inline := regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]|<script(?:\s(?:[^s>]|s[^r>])*)?>|\sstyle=|\son[a-z]+=|javascript:`)
	external := regexp.MustCompile(`(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	err := fs.WalkDir(uiFiles, "ui", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(uiFiles, path)
		if err != nil {
			return err
		}
		text := strings.ReplaceAll(string(b), "http://www.w3.org/2000/svg", "") // an XML namespace, never fetched
		if strings.HasSuffix(path, ".html") {
			if m := inline.FindString(text); m != "" {
				t.Errorf("%s: inline script or style %q", path, m)
			}
		}
		if m := external.FindString(text); m != "" {
			t.Errorf("%s: external address %q", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
