package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
)

// One member advertising 500 applications (issue 13: 4,096 of them grew
// nginx from 16 MB to 550 MB) gets at most lb.limits.apps-per-member of
// them rendered, the first by name; the rest are refused and reported,
// and a legitimate application beside them is still served.
func TestAppsPerMemberLimit(t *testing.T) {
	const flood, limit = 500, 64
	if d := config.DefaultLBLimits().AppsPerMember; d != limit {
		t.Fatalf("default apps-per-member is %d, this test expects %d", d, limit)
	}
	var logs *tapLines
	tc := newTestClusterSetup(t, "127.0.137", "local", "nginx", nil, func(tc *testCluster) {
		tc.host = "shop.example"
		tc.logger, logs = tapLogger(tc.logger)
	})
	legit := tc.addBackendEdit(1, 5*time.Second, 0, webFor("shop.example", 1))
	tc.waitServed(10*time.Second, legit.name)

	var apps []catalog.Application
	for i := range flood {
		apps = append(apps, catalog.Application{Name: fmt.Sprintf("flood-%03d", i), ListenPort: tc.listenPort,
			Protocol: catalog.ProtocolHTTP, Domains: []string{fmt.Sprintf("f%03d.flood.example", i)}})
	}
	tc.addBackendEdit(2, 5*time.Second, 0, renamed("aaa-flood", apps...))
	tc.waitDecided(t, "flood-499", "aaa-flood")
	tc.requireAll(t, legit.name)

	conf := renderedConfig(t, tc)
	if n := strings.Count(conf, "upstream scrimp_flood-"); n != limit {
		t.Errorf("%d flood upstreams in nginx.conf (%d bytes), want %d", n, len(conf), limit)
	}
	for _, name := range []string{"flood-000", fmt.Sprintf("flood-%03d", limit-1)} {
		if !strings.Contains(conf, "upstream scrimp_"+name+" ") {
			t.Errorf("%s, within the limit by name, is not rendered", name)
		}
	}
	if strings.Contains(conf, fmt.Sprintf("scrimp_flood-%03d ", limit)) {
		t.Errorf("flood-%03d, beyond the limit, is rendered", limit)
	}
	if s := tc.lb.Stats(); s.Refused != flood-limit || s.Rejected != 0 {
		t.Errorf("stats: %d refused, %d configurations rejected; want %d and 0", s.Refused, s.Rejected, flood-limit)
	}
	r := tc.refusal(t, fmt.Sprintf("flood-%03d", limit), "aaa-flood")
	if !strings.Contains(r.Reason, "limit lb.limits.apps-per-member") {
		t.Errorf("reason %q does not name the limit", r.Reason)
	}
	requireRefusalReported(t, tc, logs, r)
	if n := logs.count("refused: more instances not routed", fmt.Sprintf("more=%d", flood-limit-maxLogged)); n != 1 {
		t.Errorf("%d summary lines for the refusals beyond the logged ones, want 1", n)
	}
}

// maxLogged is how many refusal lines one render logs (lb.maxRefusalLines).
const maxLogged = 20
