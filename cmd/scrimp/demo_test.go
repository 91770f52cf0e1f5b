package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/e2e"
	"github.com/scrimplb/scrimp/internal/proctest"
)

func TestDemoServesEveryBackend(t *testing.T) {
	e2e.RequireBinary(t, "nginx")
	out := &proctest.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- runDemo(ctx, out, demoOptions{backends: 3, nginx: "nginx"}, ready) }()
	t.Cleanup(cancel)

	var url string
	select {
	case url = <-ready:
	case err := <-done:
		t.Fatalf("demo stopped early: %v\n%s", err, out)
	case <-time.After(10 * time.Second):
		t.Fatalf("demo not ready after 10s\n%s", out)
	}
	firstLine, _, _ := strings.Cut(out.String(), "\n")
	if firstLine != "serving on "+url {
		t.Fatalf("first line = %q, want %q", firstLine, "serving on "+url)
	}

	seen := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < 3 && time.Now().Before(deadline) {
		if resp, err := client.Get(url); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				seen[strings.TrimSpace(string(body))] = true
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, name := range []string{"backend-1", "backend-2", "backend-3"} {
		if !seen["hello from "+name] {
			t.Errorf("%s never answered through the demo's nginx; answers: %v", name, seen)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("demo did not stop within 15s of cancel")
	}
	if !strings.Contains(out.String(), "configuration applied") || !strings.Contains(out.String(), "member joined") {
		t.Errorf("demo output lacks membership or reload lines:\n%s", out)
	}
}
