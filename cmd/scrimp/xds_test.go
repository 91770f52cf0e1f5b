package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestXDSBootstrapCommand(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    string // server_uri, or a part of the error
		wantErr bool
	}{
		{name: "server and node id", args: []string{"--server", "127.0.0.1:18000", "--node-id", "n1"}, want: "127.0.0.1:18000"},
		{name: "tls", args: []string{"--server", "lb:18000", "--ca-file", "/ca.pem"}, want: "lb:18000"},
		{name: "no server", args: []string{}, want: `"server" not set`, wantErr: true},
		{name: "bad server", args: []string{"--server", "lb"}, want: "host:port", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			cmd := newRootCmd()
			cmd.SetArgs(append([]string{"xds-bootstrap"}, tt.args...))
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			err := cmd.Execute()
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err %v, want %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Servers []struct {
					URI string `json:"server_uri"`
				} `json:"xds_servers"`
			}
			if err := json.Unmarshal(out.Bytes(), &doc); err != nil || len(doc.Servers) != 1 || doc.Servers[0].URI != tt.want {
				t.Errorf("output %s (%v)", out.String(), err)
			}
		})
	}
}
