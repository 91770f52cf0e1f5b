package config

import (
	"encoding/json"
	"fmt"
	"net/netip"
)

// XDS configures the xDS control plane a node serves to proxyless gRPC
// clients: the grpc applications of the membership, as this
// node admits them, for gRPC's `xds:///APP` resolver. Optional on any
// node; absent or with an empty listen-addr, none is served. README.md,
// "Proxy path or xDS", tells when to use it.
type XDS struct {
	// ListenAddr is the IP:port the xDS server listens on; empty (the
	// default) serves none.
	ListenAddr string `json:"listen-addr"`
	// Certificate and Key are the server's TLS certificate and key (PEM
	// files); empty serves plaintext, which a listen-addr off loopback
	// refuses unless allow-plaintext is set.
	Certificate string `json:"certificate,omitempty"`
	Key         string `json:"key,omitempty"`
	// ClientCA, if set, is a PEM file of the CAs client certificates must
	// chain to: clients without one are refused. Needs certificate.
	ClientCA string `json:"client-ca,omitempty"`
	// AllowPlaintext lets a listen-addr that is not loopback serve without
	// TLS: anyone who reaches it learns every grpc backend's address.
	AllowPlaintext bool `json:"allow-plaintext"`
	// MaxConnections bounds concurrent client connections, 1-100000.
	MaxConnections int `json:"max-connections"`
	// Retries, 0-5, makes every route retry calls that fail with
	// UNAVAILABLE (a backend that crashed mid-call) that many times. Only
	// for idempotent services: the first attempt may have run. 0, the
	// default, retries nothing.
	Retries int `json:"retries"`
}

// DefaultXDS returns the xDS defaults, applied when an "xds" section is
// present.
func DefaultXDS() XDS {
	return XDS{
		ListenAddr:     "",
		AllowPlaintext: false,
		MaxConnections: 1024,
		Retries:        0,
	}
}

// UnmarshalJSON fills defaults before reading the section.
func (x *XDS) UnmarshalJSON(b []byte) error {
	*x = DefaultXDS()
	type plain XDS
	return json.Unmarshal(b, (*plain)(x))
}

func (x *XDS) validate(v *validator) {
	if x.ListenAddr != "" {
		ap, err := netip.ParseAddrPort(x.ListenAddr)
		switch {
		case err != nil:
			v.add("xds.listen-addr", fmt.Sprintf("%q is not an IP:port such as \"127.0.0.1:18000\"", x.ListenAddr))
		case ap.Port() == 0:
			v.add("xds.listen-addr", "port 0 is not a port")
		case x.Certificate == "" && !ap.Addr().IsLoopback() && !x.AllowPlaintext:
			v.add("xds.listen-addr", fmt.Sprintf("%s is not loopback: set certificate and key, or allow-plaintext to serve the backends' addresses to anyone who reaches it", ap.Addr()))
		}
	}
	if (x.Certificate == "") != (x.Key == "") {
		v.add("xds.certificate", "certificate and key go together")
	}
	if x.ClientCA != "" && x.Certificate == "" {
		v.add("xds.client-ca", "client certificates need TLS: set certificate and key")
	}
	if x.MaxConnections < 1 || x.MaxConnections > 100000 {
		v.add("xds.max-connections", fmt.Sprintf("%d is not in 1-100000", x.MaxConnections))
	}
	if x.Retries < 0 || x.Retries > 5 {
		v.add("xds.retries", fmt.Sprintf("%d is not in 0-5", x.Retries))
	}
}
