package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/keyring"
	"github.com/scrimplb/scrimp/seed"
)

// startAdmin creates the admin socket (admin-socket) and the TCP listener
// (admin-addr) when they are set; they serve once Run runs. Keys go to the
// cluster, which changes every live member's keyring; the other endpoints
// read the node (status.go).
func (n *Node) startAdmin() error {
	if n.cfg.AdminSocket == "" && n.cfg.AdminAddr == "" {
		return nil
	}
	token, err := loadAdminToken(n.cfg)
	if err != nil {
		return err
	}
	defer clear(token)
	s, err := admin.New(admin.Config{
		Socket: n.cfg.AdminSocket,
		Addr:   n.cfg.AdminAddr,
		Token:  token,
		Keys:   n.cluster,
		Views:  views{n},
		Logger: n.log.With("component", "admin"),
	})
	if err != nil {
		return fmt.Errorf("%s: admin-socket/admin-addr: %w", n.cfg.File, err)
	}
	n.admin = s
	return nil
}

// loadAdminToken reads admin-token-file when admin-addr is set; nil
// otherwise.
func loadAdminToken(cfg *config.Config) ([]byte, error) {
	if cfg.AdminAddr == "" {
		return nil, nil
	}
	if cfg.AdminTokenFile == "" {
		return nil, fmt.Errorf("%s: admin-token-file: required with admin-addr", cfg.File)
	}
	token, err := admin.LoadToken(cfg.AdminTokenFile)
	if err != nil {
		return nil, fmt.Errorf("%s: admin-token-file: %w", cfg.File, err)
	}
	return token, nil
}

// CheckAdmin reports a problem with admin-token-file (unreadable, open to
// others, too short) when admin-addr is set, as startup would.
func CheckAdmin(cfg *config.Config) error {
	token, err := loadAdminToken(cfg)
	clear(token)
	return err
}

// AdminAddr is the TCP address the admin interface serves on, its port
// chosen; "" when it serves none there.
func (n *Node) AdminAddr() string {
	if n.admin == nil {
		return ""
	}
	return n.admin.Addr()
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
