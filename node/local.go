package node

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
)

// LocalConfig returns the configuration of a node named name on a
// loopback address ip, with a free gossip port, the "local" gossip
// profile and quick joins: a load balancer (no LB section yet) when seeds
// is nil, else a backend (no backend section yet) joining through seeds.
// The demo, the bench and the tests build their clusters from it.
func LocalConfig(name, ip string, seeds []string) (*config.Config, error) {
	port, err := loopback.FreePort(ip)
	if err != nil {
		return nil, err
	}
	cfg := config.DefaultConfig()
	cfg.File = "demo:" + name
	cfg.NodeName = name
	cfg.Role = "backend"
	if seeds == nil {
		cfg.Role = "lb"
	}
	cfg.Cluster.BindAddr, cfg.Cluster.BindPort, cfg.Cluster.Profile = ip, port, "local"
	cfg.AdminSocket = localAdminSocket(ip, port)
	cfg.Cluster.JoinBackoffMin = config.D(100 * time.Millisecond)
	cfg.Cluster.JoinBackoffMax = config.D(2 * time.Second)
	cfg.Cluster.LeaveTimeout = config.D(time.Second)
	cfg.Seed = config.Seed{Provider: "static", Sections: map[string]json.RawMessage{}}
	addrs := `{"addresses":[`
	for i, s := range seeds {
		if i > 0 {
			addrs += ","
		}
		addrs += strconv.Quote(s)
	}
	cfg.Seed.Sections["static"] = []byte(addrs + "]}")
	return cfg, nil
}

// localAdminSocket is the admin socket of a local node: in the temporary
// directory, named after the gossip address, which the node holds while it
// runs, so that every node on the host has its own.
func localAdminSocket(ip string, port int) string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("scrimp-%s-%d.sock", ip, port))
}

// StartLocal is Start for configurations made by LocalConfig: if another
// process took the gossip port between LocalConfig's probe and the bind,
// it tries again with a fresh port (updating cfg).
func StartLocal(cfg *config.Config, logger *slog.Logger) (*Node, error) {
	for attempt := 0; ; attempt++ {
		n, err := Start(cfg, logger)
		if err == nil || attempt == 4 || !strings.Contains(err.Error(), "address already in use") {
			return n, err
		}
		port, perr := loopback.FreePort(cfg.Cluster.BindAddr)
		if perr != nil {
			return nil, err
		}
		if cfg.AdminSocket == localAdminSocket(cfg.Cluster.BindAddr, cfg.Cluster.BindPort) {
			cfg.AdminSocket = localAdminSocket(cfg.Cluster.BindAddr, port)
		}
		cfg.Cluster.BindPort = port
	}
}
