package node

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/admin"
)

func TestParseStubStatus(t *testing.T) {
	cases := []struct {
		name, in string
		want     admin.NginxStats
		wantErr  string
	}{
		{name: "nginx 1.22", in: "Active connections: 2 \nserver accepts handled requests\n 10 11 25 \nReading: 0 Writing: 1 Waiting: 1 \n",
			want: admin.NginxStats{Active: 2, Accepts: 10, Handled: 11, Requests: 25, Writing: 1, Waiting: 1}},
		{name: "html error page", in: "<html><body>404</body></html>", wantErr: "lines"},
		{name: "garbled counters", in: "Active connections: 2\nserver accepts handled requests\n x y z\nReading: 0 Writing: 1 Waiting: 1\n", wantErr: "line 3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseStubStatus(c.in)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

func TestParseShowStat(t *testing.T) {
	in := "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,status,type,addr,\n" +
		"http_8080,FRONTEND,,,1,2,100,40,100,200,OPEN,0,,\n" +
		"scrimp_web,b1,0,0,1,1,,25,1000,2000,UP,2,10.0.0.1:8080,\n" +
		"scrimp_web,s2,0,0,0,0,,0,0,0,MAINT,2,10.0.0.2:8080,\n" +
		"scrimp_web,BACKEND,0,0,1,1,,25,1000,2000,UP,1,,\n" +
		"other,x,0,0,0,0,,9,0,0,UP,2,10.0.0.9:1,\n\n"
	got, err := parseShowStat(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []admin.ServerStats{
		{Backend: "scrimp_web", Server: "b1", Addr: "10.0.0.1:8080", Status: "UP", Current: 1, Total: 25, BytesIn: 1000, BytesOut: 2000},
		{Backend: "scrimp_web", Server: "s2", Addr: "10.0.0.2:8080", Status: "MAINT"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if _, err := parseShowStat(strings.NewReader("Unknown command\n")); err == nil {
		t.Error("an answer without the CSV header parsed")
	}
}

// GET /v1/proxy's counts from a real managed HAProxy, with plain server
// lines and with runtime slots: every backend's server is listed under
// its node's name, and the sessions add up to the requests sent.
func TestProxyStatsHAProxy(t *testing.T) {
	for i, c := range []struct{ name, options string }{
		{"servers", ""},
		{"runtime slots", `{"runtime-api": true, "server-slots": 4}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var opts json.RawMessage
			if c.options != "" {
				opts = json.RawMessage(c.options)
			}
			tc := newTestClusterOptions(t, fmt.Sprintf("127.0.%d", 76+i), "local", "haproxy", opts)
			tc.addBackend(1)
			tc.addBackend(2)
			tc.waitServed(15*time.Second, "backend-1", "backend-2")
			const requests = 20
			if counts, errs := tc.burst(requests); len(errs) > 0 {
				t.Fatalf("requests: %v, %d failed (first %v)", counts, len(errs), first(errs))
			}
			var st admin.ProxyStats
			waitFor(t, "both backends counted", 10*time.Second, func() bool {
				var err error
				if st, err = (views{tc.lb}).ProxyStats(adminCtx(t)); err != nil {
					t.Fatal(err)
				}
				var total int64
				nodes := map[string]bool{}
				for _, s := range st.Servers {
					total += s.Total
					if s.Node != "" && s.Status != "MAINT" {
						nodes[s.Node] = true
					}
				}
				return total >= requests && nodes["backend-1"] && nodes["backend-2"]
			})
			if !st.Available || st.Proxy != "haproxy" || !strings.HasSuffix(st.Source, "admin.sock") {
				t.Errorf("proxy stats %+v: want haproxy's, from its stats socket", st)
			}
			t.Logf("servers: %+v", st.Servers)
		})
	}
}

// Without status-port nginx reports nothing, and the answer says how to
// turn it on.
func TestProxyStatsNginxOff(t *testing.T) {
	tc := newTestCluster(t, "127.0.78", "local")
	_, err := (views{tc.lb}).ProxyStats(adminCtx(t))
	if err == nil || !strings.Contains(err.Error(), "status-port") {
		t.Fatalf("err %v, want one naming status-port", err)
	}
}
