package node

import (
	"fmt"

	"github.com/scrimplb/scrimp/config"
)

// CheckKeyring reads cluster.keyring-file as Start would: a missing file,
// one others may read, or a bad key is an error naming the file (never a
// key). Nil when no keyring is configured.
func CheckKeyring(cfg *config.Config) error {
	_, err := loadKeys(cfg)
	return err
}

// Warnings returns what cfg allows but should not be left so, one line
// each with its JSON path, for `scrimp validate`: gossip without a keyring
// (in strong words when it listens beyond loopback), the encryption
// transition settings left on, and metrics beyond loopback without a
// token. They do not stop a node from starting.
func Warnings(cfg *config.Config) []string {
	c := cfg.Cluster
	var w []string
	switch {
	case c.KeyringFile == "" && isLoopback(c.BindAddr):
		w = append(w, fmt.Sprintf("cluster.keyring-file: not set: gossip is neither encrypted nor authenticated, "+
			"which is safe only because it listens on loopback (%s)", c.BindAddr))
	case c.KeyringFile == "":
		w = append(w, fmt.Sprintf("cluster.keyring-file: NOT SET while gossip listens on %s port %d: ANYONE who can reach that port "+
			"can join this cluster, advertise applications and receive their traffic, or remove live backends. "+
			"Generate a key (scrimp keys generate), store it in a keyring file (mode 0600) and set cluster.keyring-file "+
			"and cluster.label; see docs/security.md", c.BindAddr, c.BindPort))
	default:
		if !c.GossipVerifyIncoming {
			w = append(w, "cluster.gossip-verify-incoming: false: plaintext gossip is still accepted; "+
				"set it back to true once every node sends encrypted gossip (docs/security.md)")
		}
		if !c.GossipVerifyOutgoing {
			w = append(w, "cluster.gossip-verify-outgoing: false: this node sends plaintext gossip; "+
				"set it back to true once every node holds the key (docs/security.md)")
		}
	}
	if metricsExposed(cfg) {
		w = append(w, fmt.Sprintf("metrics-token-file: not set while metrics-addr listens on %s: anyone who reaches it reads "+
			"this node's metrics; set metrics-token-file (a 0600 file holding a bearer token) or keep metrics-addr on loopback",
			cfg.MetricsAddr))
	}
	return w
}
