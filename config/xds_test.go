package config_test

import (
	"testing"

	"github.com/scrimplb/scrimp/config"
)

func TestConfigXDS(t *testing.T) {
	lb := `{` + lbHead + `, "lb": {}, "xds": `
	tests := []struct {
		name    string
		section string
		want    []want
	}{
		{name: "loopback plaintext", section: `{"listen-addr": "127.0.0.1:18000"}`},
		{name: "empty section serves nothing", section: `{}`},
		{name: "public plaintext refused", section: `{"listen-addr": "10.0.0.1:18000"}`,
			want: []want{{"xds.listen-addr", "not loopback"}}},
		{name: "public plaintext allowed explicitly", section: `{"listen-addr": "10.0.0.1:18000", "allow-plaintext": true}`},
		{name: "public with TLS", section: `{"listen-addr": "0.0.0.0:18000", "certificate": "/c.pem", "key": "/k.pem", "client-ca": "/ca.pem"}`},
		{name: "bad address", section: `{"listen-addr": "localhost"}`, want: []want{{"xds.listen-addr", "not an IP:port"}}},
		{name: "port 0", section: `{"listen-addr": "127.0.0.1:0"}`, want: []want{{"xds.listen-addr", "port 0"}}},
		{name: "certificate without key", section: `{"certificate": "/c.pem"}`, want: []want{{"xds.certificate", "go together"}}},
		{name: "client-ca without TLS", section: `{"client-ca": "/ca.pem"}`, want: []want{{"xds.client-ca", "need TLS"}}},
		{name: "bounds", section: `{"max-connections": 0, "retries": 6}`,
			want: []want{{"xds.max-connections", "not in 1-100000"}, {"xds.retries", "not in 0-5"}}},
		{name: "unknown field", section: `{"listen": "127.0.0.1:18000"}`, want: []want{{"xds.listen", "unknown field"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, problems := config.Parse(testFile, []byte(lb+tt.section+`}`))
			checkProblems(t, problems, tt.want)
			if len(tt.want) == 0 && (cfg.XDS == nil || cfg.XDS.MaxConnections == 0) {
				t.Errorf("defaults not applied: %+v", cfg.XDS)
			}
		})
	}
}
