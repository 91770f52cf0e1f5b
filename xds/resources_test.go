package xds

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/scrimplb/scrimp/catalog"
)

func TestBuild(t *testing.T) {
	node := func(name, addr string, apps ...catalog.Application) catalog.Node {
		return catalog.Node{Name: name, Addr: netip.MustParseAddr(addr), Role: catalog.RoleBackend, Applications: apps}
	}
	app := func(name string, port int, edit func(*catalog.Application)) catalog.Application {
		a := catalog.Application{Name: name, ListenPort: 9000, ApplicationPort: port, Protocol: catalog.ProtocolGRPC}
		if edit != nil {
			edit(&a)
		}
		return a
	}
	hash := func(a *catalog.Application) { a.Balance, a.HashKey = catalog.BalanceHash, "header:X-Account-Id" }
	tests := []struct {
		name     string
		nodes    []catalog.Node
		policy   clusterv3.Cluster_LbPolicy
		hashOn   string
		statuses []corev3.HealthStatus
		weights  []uint32
		domains  []string
		retries  int
	}{
		{name: "round robin", nodes: []catalog.Node{node("b1", "10.0.0.1", app("svc", 1, nil)), node("b2", "10.0.0.2", app("svc", 2, nil))},
			policy: clusterv3.Cluster_ROUND_ROBIN, statuses: []corev3.HealthStatus{corev3.HealthStatus_HEALTHY, corev3.HealthStatus_HEALTHY},
			weights: []uint32{1, 1}, domains: []string{"svc"}},
		{name: "least-conn, weights and domains", nodes: []catalog.Node{
			node("b1", "10.0.0.1", app("svc", 1, func(a *catalog.Application) {
				a.Balance, a.Weight, a.Domains = catalog.BalanceLeastConn, 5, []string{"svc.example.com"}
			}))},
			policy: clusterv3.Cluster_LEAST_REQUEST, statuses: []corev3.HealthStatus{corev3.HealthStatus_HEALTHY},
			weights: []uint32{5}, domains: []string{"svc", "svc.example.com"}},
		{name: "hash on a header, draining marked, down left out", nodes: []catalog.Node{
			node("b1", "10.0.0.1", app("svc", 1, hash)),
			node("b2", "10.0.0.2", app("svc", 2, func(a *catalog.Application) { hash(a); a.State = catalog.StateDraining })),
			node("b3", "10.0.0.3", app("svc", 3, func(a *catalog.Application) { hash(a); a.State = catalog.StateDown })),
		},
			policy: clusterv3.Cluster_RING_HASH, hashOn: "x-account-id", retries: 2,
			statuses: []corev3.HealthStatus{corev3.HealthStatus_HEALTHY, corev3.HealthStatus_DRAINING},
			weights:  []uint32{1, 1}, domains: []string{"svc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Another protocol's application is never served.
			nodes := append(tt.nodes, node("web", "10.0.0.9", catalog.Application{Name: "web", ListenPort: 80, ApplicationPort: 80, Protocol: catalog.ProtocolHTTP}))
			r, err := Build(catalog.NewSnapshot(nodes), tt.retries)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Listeners) != 1 || len(r.Routes) != 1 || len(r.Clusters) != 1 || len(r.Endpoints) != 1 {
				t.Fatalf("want one of each resource, got %d/%d/%d/%d", len(r.Listeners), len(r.Routes), len(r.Clusters), len(r.Endpoints))
			}
			if r.Listeners[0].GetName() != "svc" || r.Routes[0].GetName() != RouteName("svc") || r.Clusters[0].GetName() != ClusterName("svc") {
				t.Errorf("names: %s %s %s", r.Listeners[0].GetName(), r.Routes[0].GetName(), r.Clusters[0].GetName())
			}
			if got := r.Clusters[0].GetLbPolicy(); got != tt.policy {
				t.Errorf("policy %v, want %v", got, tt.policy)
			}
			vh := r.Routes[0].GetVirtualHosts()[0]
			if strings.Join(vh.GetDomains(), ",") != strings.Join(tt.domains, ",") {
				t.Errorf("domains %v, want %v", vh.GetDomains(), tt.domains)
			}
			action := vh.GetRoutes()[0].GetRoute()
			if got := action.GetHashPolicy(); tt.hashOn != "" && (len(got) != 1 || got[0].GetHeader().GetHeaderName() != tt.hashOn) {
				t.Errorf("hash policy %v, want header %s", got, tt.hashOn)
			} else if tt.hashOn == "" && len(got) != 0 {
				t.Errorf("unexpected hash policy %v", got)
			}
			if got := action.GetRetryPolicy().GetNumRetries().GetValue(); int(got) != tt.retries {
				t.Errorf("retries %d, want %d", got, tt.retries)
			}
			eps := r.Endpoints[0].GetEndpoints()[0].GetLbEndpoints()
			if len(eps) != len(tt.statuses) {
				t.Fatalf("%d endpoints, want %d", len(eps), len(tt.statuses))
			}
			for i, e := range eps {
				if e.GetHealthStatus() != tt.statuses[i] || e.GetLoadBalancingWeight().GetValue() != tt.weights[i] {
					t.Errorf("endpoint %d: %v weight %d, want %v weight %d", i, e.GetHealthStatus(), e.GetLoadBalancingWeight().GetValue(), tt.statuses[i], tt.weights[i])
				}
			}
		})
	}
}

func TestBootstrap(t *testing.T) {
	tests := []struct {
		name    string
		server  string
		tls     *ClientTLS
		creds   string
		wantErr string
	}{
		{name: "plaintext", server: "127.0.0.1:18000", creds: "insecure"},
		{name: "tls", server: "lb.example.com:18000", tls: &ClientTLS{CAFile: "/ca.pem"}, creds: "tls"},
		{name: "tls with client certificate", server: "lb:1", tls: &ClientTLS{CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem"}, creds: "tls"},
		{name: "no port", server: "lb", wantErr: "host:port"},
		{name: "no CA", server: "lb:1", tls: &ClientTLS{}, wantErr: "CA file"},
		{name: "certificate without key", server: "lb:1", tls: &ClientTLS{CAFile: "/ca.pem", CertFile: "/c.pem"}, wantErr: "both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Bootstrap(tt.server, "n1", tt.tls)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Servers []struct {
					URI   string `json:"server_uri"`
					Creds []struct {
						Type string `json:"type"`
					} `json:"channel_creds"`
				} `json:"xds_servers"`
				Node struct{ ID string } `json:"node"`
			}
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatal(err)
			}
			if len(doc.Servers) != 1 || doc.Servers[0].URI != tt.server || doc.Servers[0].Creds[0].Type != tt.creds || doc.Node.ID != "n1" {
				t.Errorf("bootstrap %s", b)
			}
		})
	}
}
