package node

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

// requireChromium skips when chromium is missing on a developer machine,
// and fails in CI, where `make test` installs it.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("chromium is required in CI: %v", err)
		}
		t.Skipf("chromium not installed at %s (make test installs it; or apt-get install -y chromium): %v", chromiumPath, err)
	}
}

// newBrowser starts a headless Chromium with a fresh profile, stopped
// when the test ends, and returns a context for its first tab.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("force-color-profile", "srgb"),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Run starts the browser; it lives as long as ctx.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// step bounds one browser action.
func step[T any](t *testing.T, ctx context.Context, what string, timeout time.Duration, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// screenshot saves a full-page PNG to dir/name and logs its path.
func screenshot(t *testing.T, ctx context.Context, width, height int64, path string) {
	t.Helper()
	n := step(t, ctx, "refreshes", 5*time.Second, chromedp.Evaluate[int](`Number(document.body.dataset.refreshes)`))
	step(t, ctx, "resize", 10*time.Second, chromedp.Steps(chromedp.EmulateViewport(width, height)))
	// The page's next refresh redraws it at the new width.
	step(t, ctx, "redraw", 10*time.Second, chromedp.Poll[chromedp.Void](fmt.Sprintf(`Number(document.body.dataset.refreshes) > %d`, n)))
	png := step(t, ctx, "screenshot", 20*time.Second, chromedp.FullScreenshot(100))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("status page screenshot (%dx%d viewport, %d bytes): %s", width, height, len(png), path)
}

// The status page, loaded by a real headless Chromium from a load
// balancer running managed nginx with three backends: the browser logs
// in with the token (and keeps only an HttpOnly cookie), the page shows
// the three backends up, nginx's request counters and the reloads; a
// drain through one backend's admin socket shows on the page as
// draining without a reload of the page. Screenshots are saved to the
// temporary directory (paths in the log).
func TestStatusPageInChromium(t *testing.T) {
	requireChromium(t)
	const net = "127.0.74"
	lbIP := net + ".1"
	token := "ui-test-token-0123456789abcdef"
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	adminPort, err := loopback.FreePort(lbIP)
	if err != nil {
		t.Fatal(err)
	}
	statusPort, err := loopback.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	var logs *tapLines
	tc := newTestClusterSetup(t, net, "local", "nginx", fmt.Appendf(nil, `{"status-port": %d}`, statusPort), func(tc *testCluster) {
		tc.logger, logs = tapLogger(tc.logger)
		tc.edit = func(cfg *config.Config) {
			if cfg.NodeName == "lb" {
				cfg.AdminAddr, cfg.AdminTokenFile = fmt.Sprintf("%s:%d", lbIP, adminPort), tokenFile
			}
		}
	})
	backends := []*testBackend{tc.addBackend(1), tc.addBackend(2), tc.addBackend(3)}
	tc.waitServed(15*time.Second, "backend-1", "backend-2", "backend-3")
	const requests = 30
	if counts, errs := tc.burst(requests); len(errs) > 0 {
		t.Fatalf("requests through nginx: %v, %d failed (first %v)", counts, len(errs), first(errs))
	}
	base := "http://" + tc.lb.AdminAddr()

	t.Run("headers", func(t *testing.T) {
		for _, path := range []string{"/", "/ui/app.js", "/ui/style.css"} {
			req, _ := http.NewRequest(http.MethodGet, base+path, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			h := res.Header
			if res.StatusCode != http.StatusOK || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'self'") ||
				h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" {
				t.Errorf("GET %s: %d, headers %v; want 200 with a CSP default-src 'self', nosniff and no framing", path, res.StatusCode, h)
			}
		}
		// Without a token: the login page, and no data.
		for path, want := range map[string]int{"/": http.StatusUnauthorized, "/v1/apps": http.StatusUnauthorized, "/ui/app.js": http.StatusUnauthorized, "/ui/style.css": http.StatusOK} {
			res, err := client.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != want {
				t.Errorf("GET %s without a token: %d, want %d", path, res.StatusCode, want)
			}
		}
	})

	ctx := newBrowser(t)
	// Log in: the token in the address is swapped for a cookie and a
	// redirect to /, so it leaves the address bar.
	step(t, ctx, "load the page", 20*time.Second, chromedp.Navigate(base+"/?token="+token))
	step(t, ctx, "first refresh", 20*time.Second, chromedp.Poll[chromedp.Void](`document.body.dataset.loaded === "true"`))
	loc := step(t, ctx, "location", 5*time.Second, chromedp.Evaluate[string](`location.href`))
	if loc != base+"/" {
		t.Errorf("after the login the page is at %s, want %s/ (the token out of the address)", loc, base)
	}
	if c := step(t, ctx, "cookies", 5*time.Second, chromedp.Evaluate[string](`document.cookie`)); c != "" {
		t.Errorf("the page's script can read cookies %q; the session cookie must be HttpOnly", c)
	}
	// A mark only this load of the page carries: gone if it reloads.
	step(t, ctx, "mark", 5*time.Second, chromedp.Evaluate[bool](`window.scrimpTestMark = true`))

	text := step(t, ctx, "page text", 5*time.Second, chromedp.Evaluate[string](`document.body.innerText`))
	for _, want := range []string{"backend-1", "backend-2", "backend-3", "web", "applied", "Members", "load balancer"} {
		if !strings.Contains(text, want) {
			t.Errorf("the page does not show %q:\n%s", want, text)
		}
	}
	for _, b := range backends {
		state := step(t, ctx, "state of "+b.name, 5*time.Second,
			chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector('tr[data-app="web"][data-node="%s"]') || {dataset: {}}).dataset.state || ""`, b.name)))
		if state != "up" {
			t.Errorf("%s is %q on the page, want up", b.name, state)
		}
	}
	// nginx's counters, from its loopback stub_status: at least the
	// requests sent above.
	shown := step(t, ctx, "requests", 10*time.Second, chromedp.Poll[int](
		`(() => { const v = document.querySelector("#proxy .kv .v"); const n = v ? parseInt(v.textContent.replace(/,/g, "")) : 0; return n > 0 ? n : false })()`))
	if shown < requests {
		t.Errorf("the page shows %d requests through nginx, want at least %d", shown, requests)
	}
	screenshot(t, ctx, 1280, 900, filepath.Join(os.TempDir(), "scrimp-status-before-drain.png"))

	// Drain backend-2 through its own admin socket; the page shows it
	// draining on its next refresh, without being reloaded.
	res, err := admin.NewClient(backends[1].node.AdminSocket()).Drain(adminCtx(t), admin.DrainRequest{Wait: true})
	if err != nil || !res.Acknowledged {
		t.Fatalf("drain backend-2: %+v, %v", res, err)
	}
	start := time.Now()
	step(t, ctx, "backend-2 draining on the page", 15*time.Second, chromedp.Poll[chromedp.Void](
		`(() => { const r = document.querySelector('tr[data-app="web"][data-node="backend-2"]'); return r && r.dataset.state === "draining" && r.innerText.includes("draining") })()`))
	t.Logf("the page showed backend-2 draining %s after the drain was acknowledged", time.Since(start).Round(time.Millisecond))
	if !step(t, ctx, "mark after", 5*time.Second, chromedp.Evaluate[bool](`window.scrimpTestMark === true`)) {
		t.Error("the page was reloaded to show the drain")
	}
	for _, name := range []string{"backend-1", "backend-3"} {
		state := step(t, ctx, "state of "+name, 5*time.Second,
			chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector('tr[data-app="web"][data-node="%s"]').dataset.state`, name)))
		if state != "up" {
			t.Errorf("%s is %q on the page after backend-2's drain, want up", name, state)
		}
	}
	screenshot(t, ctx, 1280, 900, filepath.Join(os.TempDir(), "scrimp-status.png"))
	screenshot(t, ctx, 390, 844, filepath.Join(os.TempDir(), "scrimp-status-narrow.png"))

	if n := logs.count(token); n != 0 {
		t.Errorf("the token is in %d log lines", n)
	}
}
