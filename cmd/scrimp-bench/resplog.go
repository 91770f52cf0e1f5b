package main

import (
	"context"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"
)

// response is one answered request of a respLog: when its answer came
// and which backend gave it ("" for a failed request).
type response struct {
	At      time.Time
	Backend string
	Err     error
}

// respLog sends GETs through a load balancer from several clients, each
// on a new connection (so every request is balanced afresh), and keeps
// every answer with its time. Start it with startRespLog; Stop ends it and
// returns the answers in time order. Safe for concurrent use.
type respLog struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	out    []response
}

// startRespLog starts clients loops that each send a request every
// interval (or back to back when a request takes longer) through get.
func startRespLog(clients int, interval time.Duration, get func(*http.Client) (string, error)) *respLog {
	ctx, cancel := context.WithCancel(context.Background())
	l := &respLog{cancel: cancel}
	for range clients {
		l.wg.Go(func() {
			client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			defer client.CloseIdleConnections()
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				name, err := get(client)
				l.mu.Lock()
				l.out = append(l.out, response{At: time.Now(), Backend: name, Err: err})
				l.mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	return l
}

// Stop ends the clients and returns every answer in time order.
func (l *respLog) Stop() []response {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.out)
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// lastFrom is the time of the last answer from backend; false if it never
// answered.
func lastFrom(rs []response, backend string) (time.Time, bool) {
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i].Backend == backend {
			return rs[i].At, true
		}
	}
	return time.Time{}, false
}

// rateSeries turns answers into one series per backend: answers per
// second in buckets of width step from start, in order of each backend's
// first answer. Failed requests form a series named "failed" when there
// are any.
func rateSeries(rs []response, start time.Time, end time.Time, step time.Duration) []series {
	if step <= 0 || !end.After(start) {
		return nil
	}
	buckets := int(end.Sub(start) / step) // whole buckets only: a partial last one would read low
	counts := map[string][]int{}
	var order []string
	for _, r := range rs {
		name := r.Backend
		if r.Err != nil || name == "" {
			name = "failed"
		}
		if r.At.Before(start) {
			continue
		}
		i := int(r.At.Sub(start) / step)
		if i >= buckets {
			continue
		}
		if counts[name] == nil {
			counts[name] = make([]int, buckets)
			order = append(order, name)
		}
		counts[name][i]++
	}
	var out []series
	for _, name := range order {
		s := series{Name: name}
		for i, n := range counts[name] {
			// The point is at the bucket's middle.
			x := (time.Duration(i)*step + step/2).Seconds()
			s.Points = append(s.Points, point{X: x, Y: float64(n) / step.Seconds()})
		}
		out = append(out, s)
	}
	return out
}
