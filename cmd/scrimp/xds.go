package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/scrimplb/scrimp/xds"
)

// newXDSBootstrapCmd prints the gRPC xDS bootstrap a proxyless client
// needs to use a scrimp node's xDS server (xds.listen-addr) as its
// control plane.
func newXDSBootstrapCmd() *cobra.Command {
	var server, nodeID, caFile, certFile, keyFile string
	cmd := &cobra.Command{
		Use:   "xds-bootstrap --server ADDR [--node-id ID]",
		Short: "Print the gRPC xDS bootstrap JSON for clients of a scrimp xDS server",
		Long: `Print the bootstrap JSON that gRPC's xds resolver reads (save it to a file
named by GRPC_XDS_BOOTSTRAP, or put it in GRPC_XDS_BOOTSTRAP_CONFIG), so that
a client dialling xds:///APP gets APP's live backends from the scrimp node at
--server (its xds.listen-addr). With --ca-file the client speaks TLS to it;
--cert-file and --key-file add a client certificate (xds.client-ca).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nodeID == "" {
				host, _ := os.Hostname()
				nodeID = "grpc-client-" + host
			}
			var tls *xds.ClientTLS
			if caFile != "" || certFile != "" || keyFile != "" {
				tls = &xds.ClientTLS{CAFile: caFile, CertFile: certFile, KeyFile: keyFile}
			}
			b, err := xds.Bootstrap(server, nodeID, tls)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), string(b))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "", "the xDS server, host:port (required)")
	f.StringVar(&nodeID, "node-id", "", "the client's node id (default grpc-client-HOSTNAME)")
	f.StringVar(&caFile, "ca-file", "", "CA certificate that signed the server's certificate (TLS)")
	f.StringVar(&certFile, "cert-file", "", "client certificate (with --key-file)")
	f.StringVar(&keyFile, "key-file", "", "client key (with --cert-file)")
	cmd.MarkFlagRequired("server")
	return cmd
}
