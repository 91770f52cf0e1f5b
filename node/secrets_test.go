package node

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/internal/proctest"
	"github.com/scrimplb/scrimp/internal/s3test"
	"github.com/scrimplb/scrimp/keyring"
)

// secretForms are the ways a secret could show up in text: as it is and,
// for key bytes, in base64, hex and Go's %v of a byte slice.
func secretForms(name string, raw []byte, text bool) map[string][]byte {
	forms := map[string][]byte{name + " (raw)": raw}
	if !text {
		forms[name+" (base64)"] = []byte(base64.StdEncoding.EncodeToString(raw))
		forms[name+" (base64, unpadded)"] = []byte(base64.RawStdEncoding.EncodeToString(raw))
		forms[name+" (hex)"] = []byte(hex.EncodeToString(raw))
		forms[name+" (%v)"] = []byte(fmt.Sprint(raw))
		forms[name+" (%x)"] = []byte(fmt.Sprintf("%x", raw))
	}
	return forms
}

// assertNoSecrets fails the test for every form of a secret found in out.
func assertNoSecrets(t *testing.T, what string, out []byte, secrets map[string][]byte) {
	t.Helper()
	if len(out) == 0 {
		t.Errorf("%s: no output at all: the check would prove nothing", what)
	}
	for name, s := range secrets {
		if i := bytes.Index(out, s); i >= 0 {
			lo, hi := max(0, i-200), min(len(out), i+len(s)+50)
			t.Errorf("%s shows the %s:\n…%s…", what, name, out[lo:hi])
		}
	}
}

// No key and no S3 credential reaches a log line, an error or the metrics:
// a load balancer and a backend with a keyring, finding each other through
// an S3 bucket with credentials from the environment, log everything at
// debug level (memberlist's own lines included) as JSON while they join,
// serve, and shut down; both serve /metrics; Check reports a keyring that
// is readable by others, truncated and of a wrong size.
func TestSecretsStayOutOfOutput(t *testing.T) {
	requireNginx(t)
	// The bucket's server (versitygw) takes its fixed credentials from
	// the environment (s3test.Env); its secret key is the one to look
	// for. (It refuses requests that carry a session token, so none is
	// set: the SDK signs with it exactly as with the secret key.)
	section := s3SeedSection(t)
	secretKey := s3test.SecretKey

	key, second := keyring.Generate(), keyring.Generate()
	secrets := map[string][]byte{}
	for name, k := range map[string][]byte{"primary key": key, "second key": second,
		"derived seed key": keyring.Derive(key, "scrimp seed record v1")} {
		for f, v := range secretForms(name, k, false) {
			secrets[f] = v
		}
	}
	for f, v := range secretForms("S3 secret access key", []byte(secretKey), true) {
		secrets[f] = v
	}
	dir := t.TempDir()
	ringFile := filepath.Join(dir, "keyring.json")
	ring, _ := json.Marshal([]string{base64.StdEncoding.EncodeToString(key), base64.StdEncoding.EncodeToString(second)})
	if err := os.WriteFile(ringFile, ring, 0o600); err != nil {
		t.Fatal(err)
	}

	secure := func(cfg *config.Config) {
		cfg.Seed = config.Seed{Provider: "s3", Sections: map[string]json.RawMessage{"s3": section}}
		cfg.Cluster.KeyringFile, cfg.Cluster.Label = ringFile, "prod"
		cfg.LogLevel = "debug"
	}
	var logs proctest.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	const net = "127.0.14"
	lbIP, backendIP := net+".1", net+".2"
	listenPort := mustFreePort(t, lbIP)
	lbMetrics := fmt.Sprintf("%s:%d", lbIP, mustFreePort(t, lbIP))
	backendMetrics := fmt.Sprintf("%s:%d", backendIP, mustFreePort(t, backendIP))

	lbCfg, err := LocalConfig("lb", lbIP, nil)
	if err != nil {
		t.Fatal(err)
	}
	secure(lbCfg)
	lbCfg.MetricsAddr = lbMetrics
	lbc := config.DefaultLB()
	lbc.StateDir, lbc.ListenAddr = filepath.Join(dir, "state"), lbIP
	lbCfg.LB = &lbc

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	appPort, err := loopback.ServeApp(ctx, &wg, backendIP, "backend")
	if err != nil {
		t.Fatal(err)
	}
	bCfg, err := LocalConfig("backend", backendIP, []string{})
	if err != nil {
		t.Fatal(err)
	}
	secure(bCfg)
	bCfg.MetricsAddr = backendMetrics
	bCfg.Backend = &config.Backend{Applications: []config.Application{{Application: catalog.Application{
		Name: "web", ListenPort: listenPort, ApplicationPort: appPort, Protocol: catalog.ProtocolHTTP,
	}}}}

	// The nodes run in a subtest so that their cleanup (drain, leave,
	// proxy stop) has logged everything before the logs are read.
	var metrics []byte
	t.Run("run", func(t *testing.T) {
		runTestNode(t, lbCfg, logger)
		runTestNode(t, bCfg, logger)
		tc := &testCluster{t: t, net: net, listenPort: listenPort}
		tc.waitServed(15*time.Second, "backend")
		for _, addr := range []string{lbMetrics, backendMetrics} {
			resp, err := client.Get("http://" + addr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			metrics = append(metrics, body...)
		}
	})
	if t.Failed() {
		return
	}
	out := []byte(logs.String())
	// The logs must hold what the check is about, or it proves nothing:
	// memberlist's debug lines and the seed provider's.
	for _, want := range []string{`"level":"DEBUG"`, "memberlist", `"component":"seed"`} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("the logs have no %s line", want)
		}
	}
	assertNoSecrets(t, "the debug log", out, secrets)
	assertNoSecrets(t, "the metrics", metrics, secrets)

	// Errors about the keyring name the file, never a key.
	var errs []byte
	for name, content := range map[string]struct {
		data string
		mode os.FileMode
	}{
		"readable.json":   {string(ring), 0o644},
		"truncated.json":  {string(ring[:len(ring)-10]), 0o600},
		"short-key.json":  {`["` + base64.StdEncoding.EncodeToString(key[:20]) + `"]`, 0o600},
		"not-base64.json": {`["` + base64.StdEncoding.EncodeToString(key) + `!"]`, 0o600},
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content.data), content.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, content.mode); err != nil {
			t.Fatal(err)
		}
		cfg := *bCfg
		cfg.Cluster.KeyringFile = p
		err := Check(&cfg)
		if err == nil {
			t.Errorf("%s: Check passed", name)
			continue
		}
		errs = fmt.Appendf(errs, "%v\n", err)
		if _, err := Start(&cfg, logger); err == nil {
			t.Errorf("%s: Start passed", name)
		} else {
			errs = fmt.Appendf(errs, "%v\n", err)
		}
	}
	assertNoSecrets(t, "the keyring errors", errs, secrets)
}
