package node

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
)

// One member advertising 500 applications (issue 13: 4,096 of them grew
// nginx from 16 MB to 550 MB) gets at most lb.limits.apps-per-member of
// them rendered, the first by name; the rest are refused and reported,
// and a legitimate application beside them is still served, with nginx
// and with HAProxy.
func TestAppsPerMemberLimit(t *testing.T) {
	for _, c := range []struct{ generator, net string }{{"nginx", "127.0.137"}, {"haproxy", "127.0.138"}} {
		t.Run(c.generator, func(t *testing.T) { testAppsPerMemberLimit(t, c.generator, c.net) })
	}
}

func testAppsPerMemberLimit(t *testing.T, generator, net3 string) {
	const flood, limit = 500, 64
	if d := config.DefaultLBLimits().AppsPerMember; d != limit {
		t.Fatalf("default apps-per-member is %d, this test expects %d", d, limit)
	}
	var logs *tapLines
	tc := newTestClusterSetup(t, net3, "local", generator, nil, func(tc *testCluster) {
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

	// An nginx upstream or an HAProxy backend per application.
	conf := renderedConfig(t, tc)
	section := regexp.MustCompile(`(?m)^\s*(?:upstream|backend) scrimp_(flood-\d+)\b`)
	var rendered []string
	for _, m := range section.FindAllStringSubmatch(conf, -1) {
		rendered = append(rendered, m[1])
	}
	var want []string
	for i := range limit {
		want = append(want, fmt.Sprintf("flood-%03d", i))
	}
	t.Logf("%s configuration with %d of %d flood applications: %d bytes", generator, len(rendered), flood, len(conf))
	if !slices.Equal(rendered, want) {
		t.Errorf("flood applications in %s's configuration (%d bytes): %d %v, want the first %d by name",
			generator, len(conf), len(rendered), rendered, limit)
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
