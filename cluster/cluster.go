// Package cluster is scrimp's gossip membership, and the only package that
// imports memberlist. It advertises the local node's role and applications
// in memberlist node metadata, decodes and validates what peers advertise,
// and exposes an immutable snapshot of the live membership plus a change
// notification.
package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/scrimplb/scrimp/catalog"
)

// MetaMaxSize is the most bytes of node metadata memberlist carries; it
// panics on more, so Cluster checks before handing metadata over.
const MetaMaxSize = memberlist.MetaMaxSize

// Config configures one cluster member.
type Config struct {
	// NodeName must be unique in the cluster.
	NodeName string
	// BindAddr and BindPort are where gossip listens (TCP and UDP).
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are where peers reach this node;
	// empty/zero lets memberlist choose (BindAddr, or a private address).
	AdvertiseAddr string
	AdvertisePort int
	// Profile is "local", "lan" or "wan".
	Profile string
	// Role is what this node advertises itself as.
	Role catalog.Role
	// Applications are advertised by a backend.
	Applications []catalog.Application
	// Logger receives membership changes and memberlist's own log lines.
	Logger *slog.Logger
}

// Cluster is one running member. Its methods are safe for concurrent use.
type Cluster struct {
	ml   *memberlist.Memberlist
	log  *slog.Logger
	self string

	meta atomic.Pointer[[]byte] // local metadata, as NodeMeta returns it

	mu    sync.Mutex
	nodes map[string]catalog.Node // valid live members by name
	snap  atomic.Pointer[catalog.Snapshot]

	changes chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// New starts a member: it binds the gossip port and is alone in a
// cluster of its own until Join. It fails before touching the network if
// the advertisement does not fit in memberlist metadata.
func New(cfg Config) (*Cluster, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	meta, err := encodeMeta(cfg.Role, cfg.Applications)
	if err != nil {
		return nil, err
	}
	mc, err := profile(cfg.Profile)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		log:     cfg.Logger,
		self:    cfg.NodeName,
		nodes:   map[string]catalog.Node{},
		changes: make(chan struct{}, 1),
	}
	c.meta.Store(&meta)
	c.snap.Store(&catalog.Snapshot{})

	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = cfg.BindPort
	}
	mc.Delegate = delegate{c}
	mc.Events = events{c}
	mc.Logger = newStdLogger(cfg.Logger)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: start gossip on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	c.ml = ml
	return c, nil
}

func profile(name string) (*memberlist.Config, error) {
	switch name {
	case "local":
		return memberlist.DefaultLocalConfig(), nil
	case "lan", "":
		return memberlist.DefaultLANConfig(), nil
	case "wan":
		return memberlist.DefaultWANConfig(), nil
	}
	return nil, fmt.Errorf("cluster: unknown profile %q", name)
}

// encodeMeta validates and encodes the advertisement, and refuses one that
// memberlist would panic on, saying which applications take the room.
func encodeMeta(role catalog.Role, apps []catalog.Application) ([]byte, error) {
	for _, a := range apps {
		if errs := a.Validate(); len(errs) > 0 {
			return nil, fmt.Errorf("cluster: application %q: %w", a.Name, errors.Join(errs...))
		}
	}
	meta := catalog.EncodeMeta(catalog.Meta{Role: role, Applications: apps})
	if len(meta) <= MetaMaxSize {
		return meta, nil
	}
	sizes := make([]string, len(apps))
	for i, a := range apps {
		sizes[i] = fmt.Sprintf("%s (%d bytes)", a.Name, catalog.EncodedSize(a))
	}
	return nil, fmt.Errorf("cluster: the advertisement is %d bytes, over memberlist's %d-byte metadata limit; applications: %s",
		len(meta), MetaMaxSize, strings.Join(sizes, ", "))
}

// Snapshot returns the current live membership: every member whose
// metadata decoded and validated, sorted by name, this node included. It
// never blocks on the network; the result is shared and must not be
// modified.
func (c *Cluster) Snapshot() catalog.Snapshot { return *c.snap.Load() }

// Changes returns a channel that receives a value after the membership or
// a member's metadata changes. Changes coalesce: one receive may stand for
// many events, so a consumer reads Snapshot after each receive. It is meant
// for one consumer.
func (c *Cluster) Changes() <-chan struct{} { return c.changes }

// LocalName returns this node's name.
func (c *Cluster) LocalName() string { return c.self }

// LocalAddr returns the host:port peers reach this node's gossip at.
func (c *Cluster) LocalAddr() string {
	n := c.ml.LocalNode()
	return n.Address()
}

// Members returns how many members memberlist considers alive, this node
// included, whatever their metadata.
func (c *Cluster) Members() int { return c.ml.NumMembers() }

// Join contacts the given gossip addresses (host:port) and merges their
// state. It returns how many were reached; it blocks for up to the
// profile's TCP timeout per unreachable address.
func (c *Cluster) Join(addrs []string) (int, error) {
	self := c.LocalAddr()
	others := slices.DeleteFunc(slices.Clone(addrs), func(a string) bool { return a == self })
	if len(others) == 0 {
		return 0, errors.New("no seed other than this node")
	}
	n, err := c.ml.Join(others)
	if n > 0 {
		return n, nil
	}
	return 0, err
}

// UpdateApplications changes what this node advertises and re-broadcasts
// it. The new set is validated and size-checked first; on error the old
// advertisement stays.
func (c *Cluster) UpdateApplications(role catalog.Role, apps []catalog.Application, timeout time.Duration) error {
	meta, err := encodeMeta(role, apps)
	if err != nil {
		return err
	}
	c.meta.Store(&meta)
	if err := c.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("cluster: broadcast metadata: %w", err)
	}
	return nil
}

// Close tells the cluster this node is leaving, waiting up to timeout for
// the news to spread, then stops gossip. Close is safe to call more than once
// and from several goroutines; later calls return the first result.
func (c *Cluster) Close(timeout time.Duration) error {
	c.closeOnce.Do(func() {
		if err := c.ml.Leave(timeout); err != nil {
			// Not fatal: peers that missed the news find out through
			// failure detection instead.
			c.log.Warn("leave was not confirmed in time", "err", err, "timeout", timeout)
		}
		if err := c.ml.Shutdown(); err != nil {
			c.closeErr = fmt.Errorf("cluster: shutdown: %w", err)
		}
	})
	return c.closeErr
}

// Kill stops gossip without leaving, as a crash would: peers notice only
// through failure detection. Tests use it to simulate a dead node.
func (c *Cluster) Kill() error {
	c.closeOnce.Do(func() { c.closeErr = c.ml.Shutdown() })
	return c.closeErr
}

// upsert records a member's decoded metadata, or forgets the member when it
// does not decode. Called from memberlist's event callbacks: it must not
// block.
func (c *Cluster) upsert(n *memberlist.Node, joined bool) {
	addr, ok := netip.AddrFromSlice(n.Addr)
	meta, err := catalog.DecodeMeta(n.Meta)
	if err == nil && !ok {
		err = fmt.Errorf("address %v is not an IP address", n.Addr)
	}
	if err == nil {
		err = catalog.CheckNodeName(n.Name)
	}
	c.mu.Lock()
	_, known := c.nodes[n.Name]
	if err != nil {
		delete(c.nodes, n.Name)
	} else {
		c.nodes[n.Name] = catalog.Node{Name: n.Name, Addr: addr.Unmap(), Role: meta.Role, Applications: meta.Applications}
	}
	c.publishLocked()
	c.mu.Unlock()

	if err != nil {
		c.log.Warn("dropping member with invalid metadata", "member", sanitize(n.Name), "addr", n.Address(), "err", err)
		return
	}
	switch {
	case joined || !known:
		c.log.Info("member joined", "member", n.Name, "addr", addr.Unmap().String(), "role", meta.Role.String(), "apps", len(meta.Applications))
	default:
		c.log.Info("member updated", "member", n.Name, "role", meta.Role.String(), "apps", len(meta.Applications))
	}
}

// remove forgets a member that left or died. Must not block.
func (c *Cluster) remove(n *memberlist.Node) {
	c.mu.Lock()
	_, known := c.nodes[n.Name]
	delete(c.nodes, n.Name)
	c.publishLocked()
	c.mu.Unlock()
	if known {
		c.log.Info("member left", "member", n.Name, "addr", n.Address())
	}
}

// publishLocked rebuilds the snapshot and signals consumers without
// blocking. c.mu must be held.
func (c *Cluster) publishLocked() {
	nodes := make([]catalog.Node, 0, len(c.nodes))
	for _, n := range c.nodes {
		nodes = append(nodes, n)
	}
	snap := catalog.NewSnapshot(nodes)
	c.snap.Store(&snap)
	select {
	case c.changes <- struct{}{}:
	default:
	}
}

// sanitize makes an untrusted node name safe to log.
func sanitize(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return fmt.Sprintf("%q", s)
}
