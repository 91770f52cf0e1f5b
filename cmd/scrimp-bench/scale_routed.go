package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/scrimplb/scrimp/generator"
	"github.com/scrimplb/scrimp/internal/loopback"
)

// routed reads which backends the load balancer's proxy routes to now,
// from what the proxy itself holds where the configuration file does not
// say: nginx's lua balancer keeps its servers in a shared dict (its
// state endpoint names their addresses, which byAddr maps to node names);
// HAProxy's and nginx's reload-mode servers are in the rendered file.
func (p *lbProcess) routed(ctx context.Context, byAddr map[string]string) (map[string]bool, error) {
	sock := filepath.Join(p.dir, "state", generator.NginxLuaSocket)
	if p.gen == "nginx" {
		if _, err := os.Stat(sock); err == nil {
			return luaRouted(ctx, sock, byAddr)
		}
	}
	cfg, err := p.admin.Render(ctx)
	if err != nil {
		return nil, err
	}
	return routedNames(cfg), nil
}

// luaRouted asks an nginx worker's lua balancer, on its state socket, for
// the peers of every upstream.
func luaRouted(ctx context.Context, sock string, byAddr map[string]string) (map[string]bool, error) {
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://scrimp"+generator.NginxLuaStatePath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("lua balancer state: %w", err)
	}
	defer resp.Body.Close()
	var state struct {
		Upstreams map[string][]struct {
			Addr string `json:"addr"`
		} `json:"upstreams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&state); err != nil {
		return nil, fmt.Errorf("lua balancer state: %w", err)
	}
	out := map[string]bool{}
	for _, peers := range state.Upstreams {
		for _, p := range peers {
			if name, ok := byAddr[p.Addr]; ok {
				out[name] = true
			}
		}
	}
	return out, nil
}

// unfetched counts the backends the load balancer knows as members but
// whose application sets it does not hold (a backend it cannot route yet).
func (p *lbProcess) unfetched(ctx context.Context) (int, error) {
	m, err := p.admin.Members(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, x := range m.Members {
		if x.Role == "backend" && x.State == "alive" && x.Applications == nil {
			n++
		}
	}
	return n, nil
}

// servedCheck sends requests through the load balancer at addr (keep-alive
// clients, several at once) until every name in names has answered one,
// or timeout; it returns how many answered, how many requests were
// answered and how many failed (no answer within 10 s, or an error), with
// the first failure. The demo apps answer "hello from NAME".
func servedCheck(ctx context.Context, addr string, names []string, timeout time.Duration) (served, requests, failed int, firstErr error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			hc := &http.Client{Timeout: 10 * time.Second}
			defer hc.CloseIdleConnections()
			for ctx.Err() == nil {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
				if err != nil {
					return
				}
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						failed++
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
					}
					continue
				}
				line, _ := bufio.NewReader(io.LimitReader(resp.Body, 256)).ReadString('\n')
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				name, ok := strings.CutPrefix(strings.TrimSpace(line), loopback.AppAnswer)
				mu.Lock()
				requests++
				if ok && want[name] {
					seen[name] = true
				}
				done := len(seen) == len(want)
				mu.Unlock()
				if done {
					cancel()
				}
			}
		})
	}
	wg.Wait()
	return len(seen), requests, failed, firstErr
}
