package node

import (
	"bytes"
	"os"
	"strconv"
	"testing"
)

// rssFileKB returns RssFile of this process, from /proc/self/status.
func rssFileKB(t *testing.T) int {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range bytes.Lines(status) {
		if v, ok := bytes.CutPrefix(line, []byte("RssFile:")); ok {
			n, err := strconv.Atoi(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))))
			if err != nil {
				t.Fatalf("RssFile %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestReleaseExecutablePages checks that the trim drops resident pages of
// the executable (this test binary), and that the process goes on: the
// pages it runs again come back from the page cache.
func TestReleaseExecutablePages(t *testing.T) {
	before := rssFileKB(t)
	released, err := releaseExecutablePages()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFileKB(t)
	t.Logf("advised %d kB of mappings; file-backed resident memory %d kB → %d kB", released>>10, before, after)
	if released <= 0 {
		t.Fatalf("released %d bytes: found no read-only mapping of the executable", released)
	}
	if after >= before {
		t.Errorf("RssFile %d kB after the trim, %d kB before: nothing was dropped", after, before)
	}
}
