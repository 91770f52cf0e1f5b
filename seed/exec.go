//go:build unix

package seed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/scrimplb/scrimp/keyring"
)

func init() { Register("exec", newExec) }

// execOptions is the "seed.exec" section. Commands are argv lists run
// without a shell, so nothing in them is ever interpreted twice.
type execOptions struct {
	// Command prints the seeds on stdout. Required.
	Command []string `json:"command"`
	// Timeout bounds each run of any of the commands.
	Timeout string `json:"timeout"`
	// PublishCommand advertises a load balancer; its address is appended
	// as the last argument, and its seed record (signed when a keyring is
	// configured) is in the environment variable SCRIMP_SEED_RECORD.
	// Optional: without it load balancers do not publish through this
	// provider.
	PublishCommand []string `json:"publish-command"`
	// WithdrawCommand removes a load balancer's advertisement; its address
	// is appended as the last argument. Optional, needs PublishCommand.
	WithdrawCommand []string `json:"withdraw-command"`
}

const (
	// execMaxOutput caps what is kept of a command's stdout: a seed list
	// is small, and a runaway program must not eat the daemon's memory.
	execMaxOutput = 1 << 20
	// execStderrShown is how much of stderr goes into an error message.
	execStderrShown = 200
	// execWaitDelay is how long Wait waits for a killed command's output
	// pipes to close, in case a descendant left its process group.
	execWaitDelay = time.Second
)

// execSeeds runs an external program: the plugin point for anything
// scrimp does not support itself, in any language.
type execSeeds struct {
	command     []string
	timeout     time.Duration
	defaultPort int
	signer      *signer // nil: entries need no signature (no keyring)
	name        string  // this node's name, for the records it publishes
	log         *slog.Logger
	now         func() time.Time

	mu      sync.Mutex
	lastOut []byte // stdout of the previous successful run
}

// execPublisher is an execSeeds that also runs publish and withdraw
// commands. It is a separate type so that a provider without a
// publish-command does not claim to implement Publisher.
type execPublisher struct {
	*execSeeds
	publish, withdraw []string
}

// Rekey implements Rekeyer: the command's output is checked, and the
// records this node publishes are signed, with the new keys from now on.
func (e *execSeeds) Rekey(keys keyring.Keys) error { return e.signer.rekey(keys) }

func newExec(raw json.RawMessage, env Env) (Provider, error) {
	var o execOptions
	if err := DecodeStrict(raw, &o); err != nil {
		return nil, err
	}
	var errs []error
	checkArgv := func(field string, argv []string, required bool) {
		switch {
		case len(argv) == 0 && required:
			errs = append(errs, fmt.Errorf("%s: required, e.g. [\"/usr/local/bin/seeds\", \"--list\"]", field))
		case len(argv) == 0:
		case argv[0] == "":
			errs = append(errs, fmt.Errorf("%s[0]: empty program name", field))
		default:
			// Catch typos at startup rather than on every join attempt.
			if _, err := exec.LookPath(argv[0]); err != nil {
				errs = append(errs, fmt.Errorf("%s[0]: %w", field, err))
			}
		}
	}
	checkArgv("command", o.Command, true)
	checkArgv("publish-command", o.PublishCommand, false)
	checkArgv("withdraw-command", o.WithdrawCommand, false)
	if len(o.WithdrawCommand) > 0 && len(o.PublishCommand) == 0 {
		errs = append(errs, errors.New("withdraw-command: needs publish-command"))
	}
	timeout, err := durationOption("timeout", o.Timeout, 10*time.Second, 10*time.Millisecond)
	if err != nil {
		errs = append(errs, err)
	}
	signer, err := newSigner(env.Keys)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	e := &execSeeds{
		command: o.Command, timeout: timeout, defaultPort: env.DefaultPort,
		signer: signer, name: env.NodeName, log: env.Logger, now: time.Now,
	}
	if len(o.PublishCommand) == 0 {
		return e, nil
	}
	return &execPublisher{execSeeds: e, publish: o.PublishCommand, withdraw: o.WithdrawCommand}, nil
}

// Seeds runs command and parses its stdout: a JSON array of addresses and
// seed records, or one address or record per line with blank lines and #
// comments ignored. With a keyring only signed records count. Invalid
// entries are skipped with a warning (once per distinct output). A non-zero
// exit, a timeout or a malformed JSON array is an error. It blocks for at
// most the timeout, or until ctx ends.
func (e *execSeeds) Seeds(ctx context.Context) ([]string, error) {
	out, err := e.run(ctx, e.command, nil)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	log := e.log
	if bytes.Equal(out, e.lastOut) {
		log = slog.New(slog.DiscardHandler) // already warned about this output
	}
	e.lastOut = out
	e.mu.Unlock()
	addrs, err := parseAddressList(out, fmt.Sprintf("output of %s", e.command[0]), e.defaultPort, e.signer, log)
	if err != nil {
		return nil, fmt.Errorf("seed exec: %w", err)
	}
	return addrs, nil
}

// Publish runs publish-command with self appended and self's seed record
// in SCRIMP_SEED_RECORD, for a program that stores records rather than
// addresses (with a keyring, Seeds accepts nothing else). It blocks for
// at most the timeout and may run concurrently with Seeds.
func (p *execPublisher) Publish(ctx context.Context, self string) error {
	var env []string
	// An address that does not parse is passed on as before, without a
	// record: the program may know better, and Seeds would refuse it.
	if addr, err := CheckAddress(self, 0); err == nil {
		rec, err := p.signer.marshal(p.name, addr, p.now())
		if err != nil {
			return fmt.Errorf("seed exec: publish: %w", err)
		}
		env = []string{"SCRIMP_SEED_RECORD=" + string(rec)}
	}
	_, err := p.run(ctx, append(slices.Clip(p.publish), self), env)
	return err
}

// Withdraw runs withdraw-command with self appended, or does nothing when
// there is none. It blocks for at most the timeout.
func (p *execPublisher) Withdraw(ctx context.Context, self string) error {
	if len(p.withdraw) == 0 {
		return nil
	}
	_, err := p.run(ctx, append(slices.Clip(p.withdraw), self), nil)
	return err
}

// errTimedOut marks a command killed at the provider's own timeout, as
// opposed to the caller's context ending; both wrap the context's error.
var errTimedOut = errors.New("timed out")

// run executes argv in its own process group, with env added to scrimp's
// environment, and returns its stdout. On timeout or cancellation the
// whole group is killed, so that a hung script does not leave its
// children behind.
func (e *execSeeds) run(parent context.Context, argv, env []string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(parent, e.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The child leads its group, so its pid is the group's id.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = execWaitDelay
	stdout := &cappedBuffer{max: execMaxOutput}
	stderr := &cappedBuffer{max: 4 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr

	err := cmd.Run()
	name := argv[0]
	switch {
	case parent.Err() != nil:
		return nil, fmt.Errorf("seed exec: %s: %w", name, parent.Err())
	case ctx.Err() != nil:
		return nil, fmt.Errorf("seed exec: %s: %w after %s, killed its process group: %w", name, errTimedOut, e.timeout, ctx.Err())
	case err != nil:
		if msg := firstBytes(stderr.Bytes(), execStderrShown); msg != "" {
			return nil, fmt.Errorf("seed exec: %s: %w; stderr: %q", name, err, msg)
		}
		return nil, fmt.Errorf("seed exec: %s: %w", name, err)
	case stdout.over:
		return nil, fmt.Errorf("seed exec: %s: output is larger than %d bytes", name, execMaxOutput)
	}
	if msg := firstBytes(stderr.Bytes(), execStderrShown); msg != "" {
		e.log.Debug("seed exec: command wrote to stderr", "command", name, "stderr", msg)
	}
	return stdout.Bytes(), nil
}

// cappedBuffer keeps the first max bytes written to it and discards the
// rest while still accepting it, so the child never blocks on a full pipe.
// (It does not embed bytes.Buffer: io.Copy would use the buffer's
// ReadFrom and bypass the cap.)
type cappedBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room < len(p) {
		b.over = true
		b.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.buf.Write(p)
}

// Bytes returns what was kept.
func (b *cappedBuffer) Bytes() []byte { return b.buf.Bytes() }

// firstBytes returns about the first n bytes of b, trimmed, cut at a rune
// boundary, with "…" when it was cut.
func firstBytes(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) <= n {
		return string(b)
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return strings.TrimSpace(string(b[:n])) + "…"
}
