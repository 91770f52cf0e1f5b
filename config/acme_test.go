package config_test

import (
	"testing"
	"time"

	"github.com/scrimplb/scrimp/config"
)

func TestConfigACMEProblems(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []want
	}{
		{
			name: "allow-list required",
			doc:  `{` + lbHead + `, "lb": {"acme": {"email": "ops@example.com"}}}`,
			want: []want{{"lb.acme.domains", "required"}},
		},
		{
			name: "bad patterns, port, address, directory",
			doc: `{` + lbHead + `, "lb": {"acme": {"domains": ["ok.example", "*.*.example", "a b"], "http-port": 0,
				"challenge-addr": "10.0.0.1:80", "directory": "http://ca.example/dir", "staging": true}}}`,
			want: []want{
				{"lb.acme.challenge-addr", "loopback"},
				{"lb.acme.directory", "https://"},
				{"lb.acme.domains[1]", "not a domain name"},
				{"lb.acme.domains[2]", "not a domain name"},
				{"lb.acme.http-port", "0 is not a port"},
				{"lb.acme.staging", "only with the default directory"},
			},
		},
		{
			name: "unknown storage field and kind",
			doc:  `{` + lbHead + `, "lb": {"acme": {"domains": ["a.example"], "storage": {"kind": "redis", "colour": 1}}}}`,
			want: []want{
				{"lb.acme.storage.colour", "unknown field"},
				{"lb.acme.storage.kind", `"redis" is not one of file, s3`},
			},
		},
		{
			name: "s3 storage needs a bucket without the s3 seed",
			doc:  `{` + lbHead + `, "lb": {"acme": {"domains": ["a.example"], "storage": {"kind": "s3"}}}}`,
			want: []want{{"lb.acme.storage.bucket", "required when the seed provider is not s3"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, got := config.Parse(testFile, []byte(tt.doc))
			checkProblems(t, got, tt.want)
		})
	}
}

func TestConfigACMEDefaults(t *testing.T) {
	tests := []struct {
		name, doc, directory, kind string
	}{
		{"production and file storage", `{` + lbHead + `, "lb": {"acme": {"domains": ["*.apps.example"]}}}`,
			config.LetsEncryptDirectory, "file"},
		{"staging", `{` + lbHead + `, "lb": {"acme": {"domains": ["a.example"], "staging": true}}}`,
			config.LetsEncryptStagingDirectory, "file"},
		{"s3 seed gives s3 storage", `{"role": "lb", "node-name": "lb-1", "seed": {"provider": "s3", "s3": {"bucket": "b"}}, "lb": {"acme": {"domains": ["a.example"], "directory": "https://ca.example/dir"}}}`,
			"https://ca.example/dir", "s3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ps := config.Parse(testFile, []byte(tt.doc))
			if len(ps) > 0 {
				t.Fatal(ps)
			}
			a := c.LB.ACME
			if a.DirectoryURL() != tt.directory || a.StorageKind(c.Seed.Provider) != tt.kind {
				t.Errorf("directory %q, storage %q; want %q, %q", a.DirectoryURL(), a.StorageKind(c.Seed.Provider), tt.directory, tt.kind)
			}
			if a.HTTPPort != 80 || a.ChallengeAddr != "127.0.0.1:0" || a.Storage.Prefix != "scrimp/acme/" ||
				a.Storage.LockTTL.Duration != 30*time.Second || a.RenewCheckInterval.Duration != 10*time.Minute {
				t.Errorf("defaults not kept: %+v", a)
			}
		})
	}
}
