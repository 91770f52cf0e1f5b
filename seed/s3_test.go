package seed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/scrimplb/scrimp/internal/proctest"
	"github.com/scrimplb/scrimp/internal/s3test"
)

const testBucket = "seeds"

// s3Store is a real S3 server (versitygw) with the test bucket, reached
// through a counting reverse proxy on loopback: the proxy only forwards,
// so what the provider's requests get back is what S3 answers, while the
// tests can still count the requests it makes.
type s3Store struct {
	url          string // the proxy's endpoint, for the provider
	gets, lists  atomic.Int64
	puts, delete atomic.Int64
}

// startS3 starts versitygw with the test bucket and a counting proxy in
// front of it on addr ("" for any free loopback port). Everything stops
// when the test ends.
func startS3(t *testing.T, addr string) *s3Store {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	endpoint := s3test.Start(t)
	// The bucket is made directly on versitygw, so that the counts start
	// at zero.
	objs, err := NewObjects(ObjectsOptions{
		Bucket: testBucket, Region: "us-east-1", Endpoint: endpoint, PathStyle: true,
		RequestTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := objs.CreateBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}

	f := &s3Store{}
	transport := &http.Transport{}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			// SigV4 signs the Host header: keep the one the client sent.
			r.Out.Host = r.In.Host
		},
		Transport: transport,
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Path style: /bucket lists, /bucket/key is an object.
		object := strings.Count(strings.Trim(r.URL.Path, "/"), "/") > 0
		switch {
		case r.Method == http.MethodGet && object:
			f.gets.Add(1)
		case r.Method == http.MethodGet:
			f.lists.Add(1)
		case r.Method == http.MethodPut:
			f.puts.Add(1)
		case r.Method == http.MethodDelete:
			f.delete.Add(1)
		}
		proxy.ServeHTTP(w, r)
	})
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		transport.CloseIdleConnections()
	})
	f.url = srv.URL
	return f
}

// s3Section is a provider section for the store at endpoint, with extra
// overriding the defaults.
func s3Section(endpoint string, extra map[string]any) map[string]any {
	m := map[string]any{
		"bucket":                 testBucket,
		"endpoint":               endpoint,
		"path-style":             true,
		"checksum-when-required": true,
		"request-timeout":        "5s",
	}
	maps.Copy(m, extra)
	return m
}

// newS3Test builds an s3 provider through the registry.
func newS3Test(t *testing.T, section map[string]any, env Env) *s3Seeds {
	t.Helper()
	return newTestProvider(t, "s3", section, env).(*s3Seeds)
}

func publish(t *testing.T, p Publisher, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Publish(ctx, addr); err != nil {
		t.Fatalf("Publish(%s): %v", addr, err)
	}
}

func withdrawNow(t *testing.T, p Publisher, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Withdraw(ctx, addr); err != nil {
		t.Fatalf("Withdraw(%s): %v", addr, err)
	}
}

// putRaw stores body under key with the provider's own client, to plant
// records no load balancer would write.
func putRaw(t *testing.T, p *s3Seeds, key string, body []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := p.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(p.bucket), Key: aws.String(key), Body: bytes.NewReader(body),
	})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func getRaw(t *testing.T, p *s3Seeds, key string) []byte {
	t.Helper()
	data, err := p.get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return data
}

func TestS3Options(t *testing.T) {
	s3test.Env(t)
	tests := []struct {
		name    string
		section any
		wantErr string
	}{
		{name: "no section", section: nil, wantErr: "bucket: required"},
		{name: "no bucket", section: map[string]any{"prefix": "x/"}, wantErr: "bucket: required"},
		{name: "unknown field", section: map[string]any{"bucket": "b", "bukket": "b"}, wantErr: `unknown field "bukket"`},
		{name: "bad push-period", section: map[string]any{"bucket": "b", "push-period": "x"}, wantErr: `push-period: "x" is not a duration`},
		{name: "bad jitter", section: map[string]any{"bucket": "b", "jitter": "-1s"}, wantErr: `jitter: "-1s" is less than 0s`},
		{name: "bad max-age", section: map[string]any{"bucket": "b", "max-age": "soon"}, wantErr: `max-age: "soon" is not a duration`},
		{name: "bad request-timeout", section: map[string]any{"bucket": "b", "request-timeout": "1ns"}, wantErr: "request-timeout:"},
		{name: "jitter not below period", section: map[string]any{"bucket": "b", "push-period": "5s", "jitter": "5s"}, wantErr: "jitter: 5s must be less than push-period"},
		{name: "max-age too short", section: map[string]any{"bucket": "b", "max-age": "35s"}, wantErr: "max-age: 35s must exceed push-period + jitter (35s)"},
		{name: "endpoint without scheme", section: map[string]any{"bucket": "b", "endpoint": "minio:9000"}, wantErr: `endpoint: "minio:9000" is not an http:// or https:// URL`},
		{name: "empty region", section: map[string]any{"bucket": "b", "region": ""}, wantErr: "region: required"},
		{name: "every problem at once", section: map[string]any{"push-period": "x", "jitter": "y"}, wantErr: "bucket: required\npush-period"},
		{name: "minimal", section: map[string]any{"bucket": "b"}},
		{name: "everything", section: map[string]any{
			"bucket": "b", "prefix": "", "region": "eu-west-1", "endpoint": "https://s3.example.com",
			"path-style": true, "checksum-when-required": true, "push-period": "1m",
			"jitter": "0s", "max-age": "3m", "request-timeout": "1s",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _ := testEnv(t)
			_, err := newFromSection("s3", tt.section, env)
			wantErr(t, err, tt.wantErr)
			if err != nil && !strings.HasPrefix(err.Error(), "seed.s3: ") {
				t.Errorf("error %q does not name the provider", err)
			}
		})
	}
}

func TestS3Defaults(t *testing.T) {
	s3test.Env(t)
	env, _ := testEnv(t)
	p := newS3Test(t, map[string]any{"bucket": "b"}, env)
	if p.prefix != "scrimp/seeds/" || p.maxAge != 2*time.Minute || p.timeout != 10*time.Second {
		t.Errorf("prefix %q, max-age %s, request-timeout %s; want scrimp/seeds/, 2m, 10s", p.prefix, p.maxAge, p.timeout)
	}
	if period, jitter := p.PublishSchedule(); period != 30*time.Second || jitter != 5*time.Second {
		t.Errorf("PublishSchedule() = %s, %s; want 30s, 5s", period, jitter)
	}
	if p.client.Options().Region != "us-east-1" {
		t.Errorf("region %q, want us-east-1", p.client.Options().Region)
	}
}

// TestS3TwoLoadBalancers runs in both checksum modes: versitygw accepts
// the newer SDK's default checksums as well as none.
func TestS3TwoLoadBalancers(t *testing.T) {
	for _, whenRequired := range []bool{true, false} {
		t.Run(fmt.Sprintf("checksum-when-required=%t", whenRequired), func(t *testing.T) {
			testS3TwoLoadBalancers(t, whenRequired)
		})
	}
}

func testS3TwoLoadBalancers(t *testing.T, checksumWhenRequired bool) {
	s3test.Env(t)
	store := startS3(t, "")
	env, rec := testEnv(t)
	section := s3Section(store.url, map[string]any{"checksum-when-required": checksumWhenRequired})
	lb1, lb2, backend := newS3Test(t, section, env), newS3Test(t, section, env), newS3Test(t, section, env)

	if got := seedsNow(t, backend); len(got) != 0 {
		t.Fatalf("empty bucket: Seeds = %q, want none", got)
	}
	publish(t, lb1, "10.0.0.1:7946")
	publish(t, lb2, "[2001:db8::2]:7946")
	publish(t, lb1, "10.0.0.1:7946") // a refresh overwrites, it does not add
	want := []string{"10.0.0.1:7946", "[2001:db8::2]:7946"}
	if got := seedsNow(t, backend); !sameAddrs(got, want) {
		t.Fatalf("Seeds = %q, want %q", got, want)
	}

	// Each load balancer owns one versioned object named after its address.
	var r struct {
		Version int    `json:"version"`
		Address string `json:"address"`
		Updated string `json:"updated"`
	}
	key := "scrimp/seeds/MTAuMC4wLjE6Nzk0Ng.json" // base64url("10.0.0.1:7946")
	if err := json.Unmarshal(getRaw(t, backend, key), &r); err != nil {
		t.Fatal(err)
	}
	updated, err := time.Parse(time.RFC3339, r.Updated)
	if r.Version != 1 || r.Address != "10.0.0.1:7946" || err != nil || time.Since(updated).Abs() > time.Minute {
		t.Errorf("record %+v (updated parse error %v), want version 1, the address and a recent RFC 3339 time", r, err)
	}
	if n := rec.count("WARN"); n != 0 {
		t.Errorf("%d warnings, want none", n)
	}
}

func TestS3PublishRejectsBadAddress(t *testing.T) {
	s3test.Env(t)
	store := startS3(t, "")
	env, _ := testEnv(t)
	lb := newS3Test(t, s3Section(store.url, nil), env)
	err := lb.Publish(context.Background(), "no-port")
	wantErr(t, err, "seed s3: publish")
	if store.puts.Load() != 0 {
		t.Errorf("%d PUTs for an invalid address, want none", store.puts.Load())
	}
}

func TestS3DeadLoadBalancerAgesOut(t *testing.T) {
	s3test.Env(t)
	store := startS3(t, "")
	env, rec := testEnv(t)
	section := s3Section(store.url, map[string]any{"push-period": "1s", "jitter": "0s", "max-age": "2s"})
	alive, dead, backend := newS3Test(t, section, env), newS3Test(t, section, env), newS3Test(t, section, env)

	publish(t, alive, "10.0.0.1:7946")
	publish(t, dead, "10.0.0.2:7946")
	if got, want := seedsNow(t, backend), []string{"10.0.0.1:7946", "10.0.0.2:7946"}; !sameAddrs(got, want) {
		t.Fatalf("Seeds = %q, want %q", got, want)
	}
	// The dead one stops refreshing; the live one goes on.
	eventually(t, 20*time.Second, func() string {
		publish(t, alive, "10.0.0.1:7946")
		got := seedsNow(t, backend)
		if !sameAddrs(got, []string{"10.0.0.1:7946"}) {
			return fmt.Sprintf("Seeds = %q, want only the live load balancer", got)
		}
		return ""
	})
	seedsNow(t, backend)
	seedsNow(t, backend)
	if n := rec.count("WARN", "stale"); n != 1 {
		t.Errorf("%d warnings about the stale record, want exactly 1 over several calls", n)
	}
}

func TestS3Withdraw(t *testing.T) {
	s3test.Env(t)
	store := startS3(t, "")
	env, _ := testEnv(t)
	section := s3Section(store.url, nil)
	lb1, lb2, backend := newS3Test(t, section, env), newS3Test(t, section, env), newS3Test(t, section, env)
	publish(t, lb1, "10.0.0.1:7946")
	publish(t, lb2, "10.0.0.2:7946")
	withdrawNow(t, lb1, "10.0.0.1:7946")
	if got, want := seedsNow(t, backend), []string{"10.0.0.2:7946"}; !sameAddrs(got, want) {
		t.Fatalf("after Withdraw: Seeds = %q, want %q", got, want)
	}
	withdrawNow(t, lb1, "10.0.0.1:7946") // withdrawing twice is not an error
	withdrawNow(t, lb2, "10.0.0.2:7946")
	if got := seedsNow(t, backend); len(got) != 0 {
		t.Fatalf("all withdrawn: Seeds = %q, want none", got)
	}
}

func TestS3SkipsBadRecords(t *testing.T) {
	s3test.Env(t)
	store := startS3(t, "")
	env, rec := testEnv(t)
	p := newS3Test(t, s3Section(store.url, nil), env)
	now := time.Now().UTC()
	record := func(version int, addr string, updated time.Time) []byte {
		b, _ := json.Marshal(map[string]any{"version": version, "address": addr, "updated": updated})
		return b
	}
	bad := []struct {
		name, key string
		body      []byte
		warning   string // "" when the object is ignored without a warning
	}{
		{name: "garbage", key: "garbage.json", body: []byte("\x00not json at all"), warning: "not a JSON record"},
		{name: "bad address", key: "bad-address.json", body: record(1, "10.0.0.9", now), warning: "missing port"},
		{name: "bad port", key: "bad-port.json", body: record(1, "10.0.0.9:0", now), warning: "not in 1-65535"},
		{name: "unknown version", key: "v2.json", body: record(2, "10.0.0.9:1", now), warning: "unknown record version 2"},
		{name: "no time", key: "no-time.json", body: []byte(`{"version":1,"address":"10.0.0.9:1"}`), warning: "no updated time"},
		{name: "wrong field type", key: "types.json", body: []byte(`{"version":1,"address":5}`), warning: "not a JSON record"},
		{name: "future", key: "future.json", body: record(1, "10.0.0.9:1", now.Add(time.Hour)), warning: "in the future"},
		{name: "too big", key: "big.json", body: bytes.Repeat([]byte(" "), s3MaxRecord+10), warning: "larger than"},
		{name: "not a record key", key: "README.txt", body: record(1, "10.0.0.9:1", now)},
	}
	for _, b := range bad {
		putRaw(t, p, p.prefix+b.key, b.body)
	}
	putRaw(t, p, "elsewhere/x.json", record(1, "10.0.0.8:1", now)) // outside the prefix
	publish(t, p, "10.0.0.1:7946")

	for range 2 { // the second call must not warn again
		if got, want := seedsNow(t, p), []string{"10.0.0.1:7946"}; !sameAddrs(got, want) {
			t.Fatalf("Seeds = %q, want only the good record %q", got, want)
		}
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			n := rec.count("WARN", p.prefix+b.key)
			switch {
			case b.warning == "" && n != 0:
				t.Errorf("%d warnings, want none", n)
			case b.warning != "" && (n != 1 || rec.count("WARN", p.prefix+b.key, b.warning) != 1):
				t.Errorf("%d warnings, want exactly one saying %q", n, b.warning)
			}
		})
	}

	// A new version of a bad object is reported again.
	putRaw(t, p, p.prefix+"garbage.json", []byte("still not json"))
	seedsNow(t, p)
	if n := rec.count("WARN", "garbage.json"); n != 2 {
		t.Errorf("%d warnings about the changed garbage, want 2", n)
	}
}

func TestS3Pagination(t *testing.T) {
	s3test.Env(t)
	store := startS3(t, "")
	env, _ := testEnv(t)
	p := newS3Test(t, s3Section(store.url, nil), env)
	p.pageSize = 2
	var want []string
	for i := range 5 {
		addr := fmt.Sprintf("10.0.0.%d:7946", i+1)
		publish(t, p, addr)
		want = append(want, addr)
	}
	store.lists.Store(0)
	if got := seedsNow(t, p); !sameAddrs(got, want) {
		t.Fatalf("Seeds = %q, want %q", got, want)
	}
	if n := store.lists.Load(); n != 3 {
		t.Errorf("%d LIST requests for 5 objects in pages of 2, want 3", n)
	}
}

func TestS3LongDeadRecordsCostNoGet(t *testing.T) {
	s3test.Env(t)
	store := startS3(t, "")
	env, rec := testEnv(t)
	p := newS3Test(t, s3Section(store.url, nil), env)
	publish(t, p, "10.0.0.1:7946")
	store.gets.Store(0)
	if got := seedsNow(t, p); len(got) != 1 || store.gets.Load() != 1 {
		t.Fatalf("fresh record: Seeds = %q with %d GETs, want it with 1 GET", got, store.gets.Load())
	}
	// Within max-age + slack the record is read, and judged by its own time.
	p.now = func() time.Time { return time.Now().Add(30 * time.Minute) }
	store.gets.Store(0)
	if got := seedsNow(t, p); len(got) != 0 || store.gets.Load() != 1 || rec.count("WARN", "stale: updated 30m") != 1 {
		t.Fatalf("record 30m old: Seeds = %q with %d GETs; want none, 1 GET and a stale warning", got, store.gets.Load())
	}
	// Seen from two hours later, Last-Modified alone shows the record is
	// long dead: no GET, and no second warning for the same object.
	p.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	store.gets.Store(0)
	if got := seedsNow(t, p); len(got) != 0 || store.gets.Load() != 0 {
		t.Fatalf("record 2h old: Seeds = %q with %d GETs, want none with no GET", got, store.gets.Load())
	}
	if rec.count("WARN") != 1 || rec.count("DEBUG", "last modified long ago") != 1 {
		t.Error("want the one warning about the stale record, then a debug line about the long-dead one")
	}
}

func TestS3StoreAppearsLater(t *testing.T) {
	s3test.Env(t)
	addr := proctest.FreeAddr(t)
	env, _ := testEnv(t)
	p := newS3Test(t, s3Section("http://"+addr, map[string]any{"request-timeout": "2s"}), env)

	start := time.Now()
	_, err := seedsErr(p)
	wantErr(t, err, "seed s3: list s3://seeds/scrimp/seeds/")
	if err := p.Publish(context.Background(), "10.0.0.1:7946"); err == nil {
		t.Fatal("Publish to a store that is not there succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("failing took %s; request-timeout is 2s", d)
	}

	startS3(t, addr)
	if got := seedsNow(t, p); len(got) != 0 {
		t.Fatalf("empty store: Seeds = %q", got)
	}
	publish(t, p, "10.0.0.1:7946")
	if got, want := seedsNow(t, p), []string{"10.0.0.1:7946"}; !sameAddrs(got, want) {
		t.Fatalf("Seeds = %q, want %q", got, want)
	}
}

func TestS3MissingBucket(t *testing.T) {
	s3test.Env(t)
	store := startS3(t, "")
	env, _ := testEnv(t)
	p := newS3Test(t, s3Section(store.url, map[string]any{"bucket": "no-such-bucket"}), env)
	_, err := seedsErr(p)
	wantErr(t, err, "NoSuchBucket")
}

func TestS3RunPublisher(t *testing.T) {
	s3test.Env(t)
	store := startS3(t, "")
	env, _ := testEnv(t)
	section := s3Section(store.url, nil)
	lb, backend := newS3Test(t, section, env), newS3Test(t, section, env)

	period, jitter := Scheduled(lb).PublishSchedule()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunPublisher(ctx, lb, func() string { return "10.0.0.1:7946" }, period, jitter, env.Logger)
	}()
	t.Cleanup(func() { cancel(); <-done })

	// The default period is 30s: seeing the record within 10s shows it was
	// published at once.
	eventually(t, 10*time.Second, func() string {
		if got := seedsNow(t, backend); !sameAddrs(got, []string{"10.0.0.1:7946"}) {
			return fmt.Sprintf("Seeds = %q, want the load balancer", got)
		}
		return ""
	})
	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("RunPublisher did not return after cancellation")
	}
	if got := seedsNow(t, backend); len(got) != 0 {
		t.Fatalf("after RunPublisher returned: Seeds = %q, want the record withdrawn", got)
	}
}

// TestS3Versitygw runs the whole life cycle against a real S3 server, in
// both checksum modes.
func TestS3Versitygw(t *testing.T) {
	endpoint := s3test.Start(t)
	for _, whenRequired := range []bool{false, true} {
		t.Run(fmt.Sprintf("checksum-when-required=%t", whenRequired), func(t *testing.T) {
			env, rec := testEnv(t)
			prefix := fmt.Sprintf("cluster-%t/", whenRequired)
			section := s3Section(endpoint, map[string]any{"checksum-when-required": whenRequired, "prefix": prefix})
			lb1, lb2, backend := newS3Test(t, section, env), newS3Test(t, section, env), newS3Test(t, section, env)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := backend.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(testBucket)}); err != nil {
				if _, owned := errors.AsType[*types.BucketAlreadyOwnedByYou](err); !owned {
					t.Fatalf("create bucket: %v", err)
				}
			}

			if got := seedsNow(t, backend); len(got) != 0 {
				t.Fatalf("empty prefix: Seeds = %q", got)
			}
			publish(t, lb1, "10.0.0.1:7946")
			publish(t, lb2, "[2001:db8::2]:7946")
			putRaw(t, backend, prefix+"garbage.json", []byte("{{{"))
			want := []string{"10.0.0.1:7946", "[2001:db8::2]:7946"}
			if got := seedsNow(t, backend); !sameAddrs(got, want) {
				t.Fatalf("Seeds = %q, want %q", got, want)
			}
			if rec.count("WARN", "garbage.json") != 1 {
				t.Error("garbage object not reported")
			}
			withdrawNow(t, lb1, "10.0.0.1:7946")
			if got, want := seedsNow(t, backend), []string{"[2001:db8::2]:7946"}; !sameAddrs(got, want) {
				t.Fatalf("after Withdraw: Seeds = %q, want %q", got, want)
			}
		})
	}
}
