package proctest

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain runs the test binary as the child when PROCTEST_LISTEN is set:
// a server that listens there until killed. Otherwise it runs the tests,
// failing if any goroutine outlives them.
func TestMain(m *testing.M) {
	if addr := os.Getenv("PROCTEST_LISTEN"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			os.Exit(2)
		}
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(1)
			}
			c.Close()
		}
	}
	goleak.VerifyTestMain(m)
}

// TestStart starts a child that listens, sees it answer, and sees Stop
// end it (twice, as the cleanup stops it again).
func TestStart(t *testing.T) {
	var addr string
	p := Start(t, "listener", func() (*exec.Cmd, []string) {
		addr = FreeAddr(t)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "PROCTEST_LISTEN="+addr)
		return cmd, []string{addr}
	})
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("the started child does not answer on %s: %v", addr, err)
	}
	c.Close()
	p.Stop()
	if WaitListening(addr, nil, time.Second) {
		t.Errorf("%s still answers after Stop", addr)
	}
}

// TestWaitListeningExited: a child that has exited is not waited for
// (were it, the test would run into go test's timeout).
func TestWaitListeningExited(t *testing.T) {
	exited := make(chan struct{})
	close(exited)
	if WaitListening(FreeAddr(t), exited, time.Hour) {
		t.Fatal("WaitListening = true with nothing listening")
	}
}

func TestBuffer(t *testing.T) {
	var b Buffer
	done := make(chan struct{})
	go func() { defer close(done); b.Write([]byte("out ")) }()
	b.Write([]byte("err "))
	<-done
	if got := b.String(); got != "out err " && got != "err out " {
		t.Errorf("String = %q", got)
	}
}
