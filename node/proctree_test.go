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
	// Own is the sum of Pss_Anon and Pss_Shmem: the heap and shared
	// memory zones the proxy allocated, each page counted once however
	// many of its processes share it. Unlike RSS and PSS it leaves out
	// the binary and libraries mapped from files, whose share moves with
	// every other process on the machine mapping them.
	Own int64
	// Each is every process's "pid state title RSS/PSS/own", for the log.
	Each []string
	// Children are the processes under the master: its workers.
	Children []child
}

// child is a worker of the proxy's master.
type child struct {
	pid   int
	start uint64 // clock ticks after boot
}

// old returns the workers that are not of the newest generation: those
// with at least workers (the number a configuration runs) started after
// them. A reload forks a full new generation, so these are the workers of
// earlier configurations, finishing their connections.
func (u procUsage) old(workers int) []int {
	var out []int
	for _, c := range u.Children {
		newer := 0
		for _, d := range u.Children {
			if d.start > c.start || d.start == c.start && d.pid > c.pid {
				newer++
			}
		}
		if newer >= workers {
			out = append(out, c.pid)
		}
	}
	return out
}

func (u procUsage) String() string {
	return fmt.Sprintf("%d processes, RSS %s, PSS %s, own %s", u.Procs, mib(u.RSS), mib(u.PSS), mib(u.Own))
}

// mib formats n bytes in MiB with one decimal.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// procInfo is what /proc/PID/stat says of a process.
type procInfo struct {
	state string // R, S, D, Z…
	ppid  int
	start uint64 // start time, clock ticks after boot
}

// procStat reads /proc/PID/stat; false if pid is gone.
func procStat(pid int) (procInfo, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procInfo{}, false
	}
	// pid (comm) state ppid …; comm may contain spaces and ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return procInfo{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	start, err2 := strconv.ParseUint(f[19], 10, 64) // field 22
	return procInfo{state: f[0], ppid: ppid, start: start}, err1 == nil && err2 == nil
}

// live reports whether the process runs: not a zombie an exited worker's
// master has not reaped yet, which holds no memory.
func (p procInfo) live() bool { return p.state != "Z" && p.state != "X" }

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
		if p, ok := procStat(pid); ok && p.live() {
			children[p.ppid] = append(children[p.ppid], pid)
		}
	}
	if p, ok := procStat(root); !ok || !p.live() {
		return nil
	}
	tree := []int{root}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree
}

// procKB returns the values in kB of fields (e.g. "VmRSS:", "Pss:") in a
// /proc file of "Name:   N kB" lines, in order; 0 for one absent (a
// kernel thread, an exited process).
func procKB(path string, fields ...string) []int64 {
	out := make([]int64, len(fields))
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		for i, field := range fields {
			if rest, ok := strings.CutPrefix(s.Text(), field); ok {
				out[i], _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			}
		}
	}
	return out
}

// treeUsage sums the memory of root's live process tree. A process that
// exits between the listing and the read adds nothing.
func treeUsage(root int) procUsage {
	var u procUsage
	for _, pid := range liveTree(root) {
		rss := procKB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")[0]
		if rss == 0 {
			continue
		}
		kb := procKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:", "Pss_Anon:", "Pss_Shmem:")
		pss, own := kb[0], kb[1]+kb[2]
		u.Procs++
		u.RSS += rss << 10
		u.PSS += pss << 10
		u.Own += own << 10
		title, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		title, _, _ = bytes.Cut(title, []byte{0})
		p, _ := procStat(pid)
		if pid != root {
			u.Children = append(u.Children, child{pid, p.start})
		}
		u.Each = append(u.Each, fmt.Sprintf("%d %s %q %s/%s/%s", pid, p.state, title, mib(rss<<10), mib(pss<<10), mib(own<<10)))
	}
	return u
}

// connectionsOf describes, for diagnosis, the TCP sockets each of pids
// holds: "PID: local>remote STATE, …" from /proc/PID/fd and
// /proc/net/tcp (IPv4 only; the tests use 127.0.0.0/8).
func connectionsOf(pids []int) []string {
	type sock struct{ local, remote, state string }
	socks := map[string]sock{}
	if b, err := os.ReadFile("/proc/net/tcp"); err == nil {
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 9 {
				socks[f[9]] = sock{hexAddr(f[1]), hexAddr(f[2]), f[3]}
			}
		}
	}
	var out []string
	for _, pid := range pids {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		var held []string
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			inode, ok := strings.CutPrefix(link, "socket:[")
			if err != nil || !ok {
				continue
			}
			if s, ok := socks[strings.TrimSuffix(inode, "]")]; ok {
				held = append(held, fmt.Sprintf("%s>%s %s", s.local, s.remote, s.state))
			}
		}
		out = append(out, fmt.Sprintf("%d: %s", pid, strings.Join(held, ", ")))
	}
	return out
}

// hexAddr turns /proc/net/tcp's "0100007F:1F90" into "127.0.0.1:8080".
func hexAddr(s string) string {
	ip, port, ok := strings.Cut(s, ":")
	a, err1 := strconv.ParseUint(ip, 16, 32)
	p, err2 := strconv.ParseUint(port, 16, 16)
	if !ok || err1 != nil || err2 != nil || len(ip) != 8 {
		return s
	}
	return fmt.Sprintf("%d.%d.%d.%d:%d", a&0xff, a>>8&0xff, a>>16&0xff, a>>24, p)
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
	// HAProxy's master re-executes itself on a reload: for a moment its
	// command line reads empty. Look again for up to 2 s.
	var (
		p       procInfo
		cmdline []byte
	)
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		p, ok = procStat(pid)
		cmdline, _ = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if ok && p.live() && p.ppid == os.Getpid() && bytes.Contains(cmdline, []byte(d.Dir())) || time.Now().After(deadline) {
			break
		}
	}
	if !ok || !p.live() || p.ppid != os.Getpid() || !bytes.Contains(cmdline, []byte(d.Dir())) {
		t.Fatalf("pid %d from %s is not a live %s master under this test (state %q, parent %d, command %q)",
			pid, k.PidFile, tc.generator, p.state, p.ppid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
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
	if self.Procs < 1 || self.RSS < 1<<20 || self.PSS < 1<<20 || self.Own < 1<<20 {
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
	if u := treeUsage(cmd.Process.Pid); u.Procs != 2 || u.RSS <= 0 || u.PSS <= 0 || u.Own <= 0 || len(u.Children) != 1 || u.Children[0].pid != child {
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
