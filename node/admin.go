package node

import (
	"context"
	"fmt"

	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/keyring"
)

// startAdmin creates the admin socket (admin-socket) when one is set; it
// serves once Run runs. Keys go to the cluster, which changes every live
// member's keyring.
func (n *Node) startAdmin() error {
	if n.cfg.AdminSocket == "" {
		return nil
	}
	s, err := admin.New(admin.Config{
		Socket: n.cfg.AdminSocket,
		Keys:   n.cluster,
		Logger: n.log.With("component", "admin"),
	})
	if err != nil {
		return fmt.Errorf("%s: admin-socket: %w", n.cfg.File, err)
	}
	n.admin = s
	return nil
}

// serveAdmin serves the admin socket until ctx ends.
func (n *Node) serveAdmin(ctx context.Context) {
	if err := n.admin.Run(ctx); err != nil {
		n.log.Error("admin interface stopped", "err", err)
	}
}

// AdminSocket is the path of the node's admin socket; "" when it serves
// none.
func (n *Node) AdminSocket() string {
	if n.admin == nil {
		return ""
	}
	return n.admin.Socket()
}

// saveKeys returns the cluster's hook that writes a changed keyring to
// cluster.keyring-file (primary first, atomically, mode 0600), so that a
// restart keeps a rotation; nil when there is no key file.
func saveKeys(path string) func([][]byte) error {
	if path == "" {
		return nil
	}
	return func(keys [][]byte) error { return keyring.Save(path, keys) }
}
