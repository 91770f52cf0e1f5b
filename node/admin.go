package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/keyring"
	"github.com/scrimplb/scrimp/seed"
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

// keysChanged is the cluster's hook after a key operation changed the
// keyring (primary first): it writes it to cluster.keyring-file
// (atomically, mode 0600) so that a restart keeps a rotation, and gives it
// to the seed provider, so that seed records are signed with the new
// primary and checked against the keys the cluster now holds.
func keysChanged(path string, seeds seed.Provider) func([][]byte) error {
	return func(keys [][]byte) error {
		var errs []error
		if path != "" {
			if err := keyring.Save(path, keys); err != nil {
				errs = append(errs, err)
			}
		}
		if r, ok := seeds.(seed.Rekeyer); ok {
			if err := r.Rekey(keys); err != nil {
				errs = append(errs, fmt.Errorf("seed records: %w", err))
			}
		}
		return errors.Join(errs...)
	}
}
