package node

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scrimplb/scrimp/acme"
	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/seed"
)

// acmeDefaultStateDir holds the ACME files of a load balancer in external
// mode without lb.state-dir.
const acmeDefaultStateDir = "/var/lib/scrimp"

// buildACME builds the certificate manager of lb.acme; nil without it.
// keySuffix names the key file next to NAME.crt the proxy reads (see
// acme.Options.KeySuffix).
func (n *Node) buildACME(keySuffix string) (*acme.Manager, error) {
	a := n.cfg.LB.ACME
	if a == nil {
		return nil, nil
	}
	state := n.cfg.LB.StateDir
	if state == "" {
		state = acmeDefaultStateDir
	}
	log := n.log.With("component", "acme")
	var storage certmagic.Storage
	switch a.StorageKind(n.cfg.Seed.Provider) {
	case "s3":
		objs, err := seed.NewObjects(acmeObjectsOptions(a.Storage, n.cfg.Seed))
		if err != nil {
			return nil, fmt.Errorf("lb.acme.storage: %w", err)
		}
		storage = acme.NewS3Storage(objs, a.Storage.LockTTL.Duration, log)
	default:
		dir := a.Storage.Dir
		if dir == "" {
			dir = filepath.Join(state, "acme", "storage")
		}
		storage = &certmagic.FileStorage{Path: dir}
	}
	var roots *x509.CertPool
	if a.CARoot != "" {
		data, err := os.ReadFile(a.CARoot)
		if err != nil {
			return nil, fmt.Errorf("lb.acme.ca-root: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("lb.acme.ca-root: %s: no PEM certificate", a.CARoot)
		}
	}
	// The challenge route is checked through the proxy's plain-HTTP
	// listener before ordering: on its address, or loopback when it
	// listens on every address.
	probe := "127.0.0.1"
	if ip, err := netip.ParseAddr(n.cfg.LB.ListenAddr); err == nil && !ip.IsUnspecified() {
		probe = ip.String()
	}
	return acme.New(acme.Options{
		Email:              a.Email,
		Directory:          a.DirectoryURL(),
		CARoots:            roots,
		AllowList:          a.Domains,
		HTTPPort:           uint16(a.HTTPPort),
		ProbeAddr:          probe,
		ChallengeAddr:      a.ChallengeAddr,
		Dir:                filepath.Join(state, "acme", "certs"),
		KeySuffix:          keySuffix,
		Storage:            storage,
		RenewCheckInterval: a.RenewCheckInterval.Duration,
		RenewalWindowRatio: a.RenewRatio,
		Logger:             log,
	})
}

// acmeObjectsOptions fills lb.acme.storage's empty S3 settings from the
// seed.s3 section (when the seed provider is s3, which validation checked
// or the bucket is set).
func acmeObjectsOptions(s config.ACMEStorage, sd config.Seed) seed.ObjectsOptions {
	var seedS3 struct {
		Bucket               string `json:"bucket"`
		Region               string `json:"region"`
		Endpoint             string `json:"endpoint"`
		PathStyle            bool   `json:"path-style"`
		ChecksumWhenRequired bool   `json:"checksum-when-required"`
	}
	if sd.Provider == "s3" {
		json.Unmarshal(sd.Section(), &seedS3) // checked by the seed provider
	}
	o := seed.ObjectsOptions{
		Bucket: s.Bucket, Prefix: s.Prefix, Region: s.Region, Endpoint: s.Endpoint,
		PathStyle: seedS3.PathStyle, ChecksumWhenRequired: seedS3.ChecksumWhenRequired,
	}
	if o.Bucket == "" {
		o.Bucket = seedS3.Bucket
	}
	if o.Region == "" {
		o.Region = seedS3.Region
	}
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if o.Endpoint == "" {
		o.Endpoint = seedS3.Endpoint
	}
	if s.PathStyle != nil {
		o.PathStyle = *s.PathStyle
	}
	if s.ChecksumWhenRequired != nil {
		o.ChecksumWhenRequired = *s.ChecksumWhenRequired
	}
	return o
}

// acmeDomains gives the certificate manager the domains of the https and
// grpc applications of snap; the manager keeps the allowed ones.
func (n *Node) acmeDomains(snap catalog.Snapshot) {
	if n.acme == nil {
		return
	}
	var names []string
	for _, node := range snap.Nodes {
		for _, app := range node.Applications {
			if app.Protocol == catalog.ProtocolHTTPS || app.Protocol == catalog.ProtocolGRPC {
				names = append(names, app.Domains...)
			}
		}
	}
	n.acme.SetDomains(names)
}

// runACME runs the certificate manager until ctx ends.
func (n *Node) runACME(ctx context.Context) {
	if err := n.acme.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		n.log.Error("acme: stopped", "err", err)
	}
}

// ACMEStatus is the state of the managed certificates; nil without
// lb.acme.
func (n *Node) ACMEStatus() []acme.DomainStatus {
	if n.acme == nil {
		return nil
	}
	return n.acme.Status()
}

// acmeCollector exports the certificate manager's state at scrape time.
type acmeCollector struct {
	n                *Node
	expiry, failures *prometheus.Desc
	state            *prometheus.Desc
}

func newACMECollector(n *Node) *acmeCollector {
	return &acmeCollector{n: n,
		expiry: prometheus.NewDesc("scrimp_acme_certificate_expiry_timestamp_seconds",
			"When the certificate served for a managed domain expires (Unix time).", []string{"domain"}, nil),
		failures: prometheus.NewDesc("scrimp_acme_failures_total",
			"Certificate orders and renewals that failed; the current certificate was kept.", nil, nil),
		state: prometheus.NewDesc("scrimp_acme_certificate_state",
			"1 for the state of each managed domain: placeholder, valid, renewing or failed.", []string{"domain", "state"}, nil),
	}
}

// Describe sends the descriptors.
func (c *acmeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.expiry
	ch <- c.failures
	ch <- c.state
}

// Collect reads the manager's status; nothing without lb.acme.
func (c *acmeCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.n.acme
	if m == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(m.Failures()))
	for _, s := range m.Status() {
		ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, float64(s.NotAfter.Unix()), s.Domain)
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, 1, s.Domain, string(s.State))
	}
}
