package cluster

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/keyring"
)

func memberState(infos []MemberInfo, name string) (MemberInfo, bool) {
	i := slices.IndexFunc(infos, func(m MemberInfo) bool { return m.Name == name })
	if i < 0 {
		return MemberInfo{}, false
	}
	return infos[i], true
}

// MemberInfos, from a load balancer: every member alive with its role,
// address and (once fetched) applications, this node marked; then a
// graceful leave shows as left and a crash, after failure detection, as
// dead, each with when it was lost.
func TestMemberInfos(t *testing.T) {
	lb := testNode(t, 171, catalog.RoleLB)
	left := testNode(t, 172, catalog.RoleBackend, app("web", 8080))
	crashed := testNode(t, 173, catalog.RoleBackend, app("web", 8080))
	witness := testNode(t, 174, catalog.RoleBackend, app("other", 8080))
	for _, b := range []*Cluster{left, crashed, witness} {
		if _, err := b.Join([]string{lb.LocalAddr()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "all backends fetched", 5*time.Second, func() bool {
		n := 0
		for _, m := range lb.MemberInfos() {
			if m.State == MemberAlive && (m.Role == catalog.RoleLB || m.Fetched && len(m.Applications) == 1) {
				n++
			}
		}
		return n == 4
	})
	infos := lb.MemberInfos()
	if !slices.IsSortedFunc(infos, func(a, b MemberInfo) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("not sorted by name: %v", infos)
	}
	self, _ := memberState(infos, lb.LocalName())
	if !self.Self || self.Addr != lb.LocalAddr() || self.Role != catalog.RoleLB {
		t.Errorf("self %+v: want marked, at %s, a load balancer", self, lb.LocalAddr())
	}
	w, _ := memberState(infos, witness.LocalName())
	if w.Self || w.Addr != witness.LocalAddr() || w.Applications[0].Name != "other" || w.LastSeen.IsZero() {
		t.Errorf("witness %+v: want at %s with application other, last seen", w, witness.LocalAddr())
	}

	if err := left.Close(time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "graceful leave shown as left", 5*time.Second, func() bool {
		m, ok := memberState(lb.MemberInfos(), left.LocalName())
		return ok && m.State == MemberLeft && !m.Since.IsZero() && m.Addr == left.LocalAddr()
	})
	crashed.Kill()
	waitFor(t, "crash shown as dead", 20*time.Second, func() bool {
		m, ok := memberState(lb.MemberInfos(), crashed.LocalName())
		return ok && m.State == MemberDead
	})
	if m, _ := memberState(lb.MemberInfos(), witness.LocalName()); m.State != MemberAlive {
		t.Errorf("witness %+v, want alive", m)
	}
}

// KeyFingerprints lists the keyring's fingerprints, primary first, and
// nothing for plaintext gossip.
func TestKeyFingerprints(t *testing.T) {
	k1, k2 := keyring.Generate(), keyring.Generate()
	c := keyedNode(t, 175, catalog.RoleLB, [][]byte{k1, k2}, "")
	if got, want := c.KeyFingerprints(), []string{keyring.Fingerprint(k1), keyring.Fingerprint(k2)}; !slices.Equal(got, want) {
		t.Errorf("fingerprints %v, want %v", got, want)
	}
	if got := testNode(t, 176, catalog.RoleLB).KeyFingerprints(); got != nil {
		t.Errorf("plaintext: fingerprints %v, want none", got)
	}
}
