package xds

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's test run if a goroutine is still running
// once its tests have ended: the server's, and the real gRPC clients' once
// their connections are closed. One is ignored: the certificate-file
// watcher gRPC starts for a client bootstrap with "tls" channel
// credentials (TestTLSClientCertificates), which the test-only resolver
// builder never stops; it is the client library's, not the server's.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("google.golang.org/grpc/credentials/tls/certprovider/pemfile.(*watcher).run"))
}
