package xds

import (
	"encoding/json"
	"errors"
	"net"
)

// ClientTLS is what a client needs to reach a TLS xDS server: the CA
// that signed the server's certificate and, when the server requires
// client certificates, the client's own. Paths as the client sees them.
type ClientTLS struct {
	CAFile   string
	CertFile string
	KeyFile  string
}

// Bootstrap returns the gRPC xDS bootstrap JSON (for GRPC_XDS_BOOTSTRAP
// or GRPC_XDS_BOOTSTRAP_CONFIG) of a client whose control plane is the
// scrimp xDS server at server (host:port), identifying itself as nodeID.
// tls nil means a plaintext connection.
func Bootstrap(server, nodeID string, tls *ClientTLS) ([]byte, error) {
	if _, _, err := net.SplitHostPort(server); err != nil {
		return nil, errors.New("xds: server must be host:port: " + err.Error())
	}
	if nodeID == "" {
		return nil, errors.New("xds: empty node id")
	}
	type creds struct {
		Type   string            `json:"type"`
		Config map[string]string `json:"config,omitempty"`
	}
	c := creds{Type: "insecure"}
	if tls != nil {
		if tls.CAFile == "" {
			return nil, errors.New("xds: TLS needs the CA file that signed the server's certificate")
		}
		if (tls.CertFile == "") != (tls.KeyFile == "") {
			return nil, errors.New("xds: a client certificate needs both its certificate and its key file")
		}
		c = creds{Type: "tls", Config: map[string]string{"ca_certificate_file": tls.CAFile}}
		if tls.CertFile != "" {
			c.Config["certificate_file"], c.Config["private_key_file"] = tls.CertFile, tls.KeyFile
		}
	}
	doc := map[string]any{
		"xds_servers": []map[string]any{{
			"server_uri":      server,
			"channel_creds":   []creds{c},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": nodeID},
	}
	return json.MarshalIndent(doc, "", "  ")
}
