package node

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/proxy"
)

// The memory tests of issue 13 measure the real proxy processes a load
// balancer manages: its master (a child of the test process, started by
// the proxy supervisor) and every process under it, read from /proc.

// procUsage is the memory of a process tree at one moment.
type procUsage struct {
	Procs int   // live processes: the master, its workers, old workers
	RSS   int64 // sum of VmRSS, bytes: shared pages counted in each process
	PSS   int64 // sum of Pss (smaps_rollup), bytes: shared pages split
	// Each is every process's "pid title RSS/PSS", for the log.
	Each []string
}

func (u procUsage) String() string {
	return fmt.Sprintf("%d processes, RSS %s, PSS %s", u.Procs, mib(u.RSS), mib(u.PSS))
}

// mib formats n bytes in MiB with one decimal.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// procStat returns the state and parent pid of pid from /proc/PID/stat.
func procStat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid …; comm may contain spaces and ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0], ppid, err == nil
}

// liveTree returns root and its live descendants (zombies excluded: an
// exited worker its master has not reaped yet holds no memory).
func liveTree(root int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, ppid, ok := procStat(pid); ok && state != "Z" && state != "X" {
			children[ppid] = append(children[ppid], pid)
		}
	}
	if state, _, ok := procStat(root); !ok || state == "Z" || state == "X" {
		return nil
	}
	tree := []int{root}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree
}

// procKB returns the value in kB of field (e.g. "VmRSS:", "Pss:") in a
// /proc file of "Name:   N kB" lines; 0 if absent (a kernel thread, an
// exited process).
func procKB(path, field string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// treeUsage sums the memory of root's live process tree. A process that
// exits between the listing and the read adds nothing.
func treeUsage(root int) procUsage {
	var u procUsage
	for _, pid := range liveTree(root) {
		rss := procKB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
		if rss == 0 {
			continue
		}
		pss := procKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
		u.Procs++
		u.RSS += rss << 10
		u.PSS += pss << 10
		title, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		title, _, _ = bytes.Cut(title, []byte{0})
		u.Each = append(u.Each, fmt.Sprintf("%d %q %s/%s", pid, title, mib(rss<<10), mib(pss<<10)))
	}
	return u
}

// proxyMaster returns the pid of the load balancer's managed proxy
// master: the pid its pid file names, checked in /proc to be a live child
// of this process (the supervisor starts it) run with the state
// directory. It fails the test if there is none.
func (tc *testCluster) proxyMaster(t testing.TB) int {
	t.Helper()
	d, ok := tc.lb.proxy.(interface{ Dir() string })
	k, known := proxy.LookupKind(tc.generator)
	if !ok || !known || k.PidFile == "" {
		t.Fatalf("the load balancer's %s proxy is not a managed one with a pid file", tc.generator)
	}
	b, err := os.ReadFile(filepath.Join(d.Dir(), k.PidFile))
	if err != nil {
		t.Fatalf("proxy master: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("proxy master: pid file %q: %v", b, err)
	}
	state, ppid, ok := procStat(pid)
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !ok || state == "Z" || ppid != os.Getpid() || !bytes.Contains(cmdline, []byte(d.Dir())) {
		t.Fatalf("pid %d from %s is not a live %s master under this test (state %q, parent %d, command %q)",
			pid, k.PidFile, tc.generator, state, ppid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
	}
	return pid
}

// proxyUsage is the memory and process count of the managed proxy's
// process tree now.
func (tc *testCluster) proxyUsage(t testing.TB) procUsage {
	t.Helper()
	return treeUsage(tc.proxyMaster(t))
}

// TestProcTreeUsage checks the helper on process trees of known shape: a
// shell with a sleeping child is two processes, and once the child is
// killed (and reaped) one; this test's own process has memory in both
// measures.
func TestProcTreeUsage(t *testing.T) {
	self := treeUsage(os.Getpid())
	if self.Procs < 1 || self.RSS < 1<<20 || self.PSS < 1<<20 {
		t.Fatalf("this test process: %v; want at least itself with 1 MiB", self)
	}
	cmd := exec.Command("sh", "-c", "sleep 60 & echo $!; wait; exec sleep 60")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	if u := treeUsage(cmd.Process.Pid); u.Procs != 2 || u.RSS <= 0 || u.PSS <= 0 {
		t.Fatalf("a shell and its child: %v, want 2 processes with memory", u)
	}
	if err := syscall.Kill(child, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the killed child to leave the tree", 5*time.Second, func() bool { return treeUsage(cmd.Process.Pid).Procs == 1 })
	if u := treeUsage(-1); u.Procs != 0 || u.RSS != 0 {
		t.Fatalf("no process: %v", u)
	}
}
