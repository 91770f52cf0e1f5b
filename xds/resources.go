package xds

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/scrimplb/scrimp/catalog"
)

// Ring sizes of RING_HASH clusters. gRPC gives each endpoint
// ring-size × its share of the weight entries, so a fixed ring size would
// take entries from every backend when one joins, and keys would move
// between old backends. A ring of pointsPerWeight × the total weight keeps
// each backend's entries (those of a weight-w backend are the same w ×
// pointsPerWeight whoever else is there): a new backend only takes keys,
// from the others, until the total weight passes maxRing/pointsPerWeight
// (gRPC caps rings at maxRing entries unless told otherwise).
const (
	pointsPerWeight = 100
	maxRing         = 4096
)

// Resources is what one snapshot of the cluster looks like over xDS: the
// four resource kinds a proxyless gRPC client follows, per application.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
}

// RouteName and ClusterName name an application's RouteConfiguration and
// Cluster (its ClusterLoadAssignment has the cluster's name); the Listener
// is named after the application itself, which is what `xds:///APP` asks.
func RouteName(app string) string   { return "scrimp/route/" + app }
func ClusterName(app string) string { return "scrimp/cluster/" + app }

// endpoint is one instance of an application as xDS announces it.
type endpoint struct {
	node     string
	server   catalog.Server
	draining bool
}

// app is one grpc application with its instances.
type app struct {
	def       catalog.Application
	endpoints []endpoint
}

// grpcApps groups the snapshot's grpc instances by application name,
// sorted: serving ones and draining ones (announced as DRAINING, so that
// clients finish with them and pick no new calls); down ones are left
// out. The definition is the first serving instance's by node name, or the
// first draining one's when none serves; snap has been through admission,
// which leaves one definition per name.
func grpcApps(snap catalog.Snapshot) []app {
	byName := map[string]*app{}
	for _, n := range snap.Nodes {
		if n.Role != catalog.RoleBackend {
			continue
		}
		for _, a := range n.Applications {
			if a.Protocol != catalog.ProtocolGRPC || !(a.State.Serving() || a.State == catalog.StateDraining) {
				continue
			}
			g := byName[a.Name]
			if g == nil {
				g = &app{def: a}
				byName[a.Name] = g
			} else if !g.def.State.Serving() && a.State.Serving() {
				g.def = a
			}
			g.endpoints = append(g.endpoints, endpoint{
				node:     n.Name,
				server:   catalog.Server{Node: n.Name, Addr: n.Addr, Port: a.ApplicationPort, Weight: max(a.Weight, 1)},
				draining: a.State == catalog.StateDraining,
			})
		}
	}
	out := make([]app, 0, len(byName))
	for _, g := range byName {
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b app) int { return cmp.Compare(a.def.Name, b.def.Name) })
	return out
}

// Build renders snap's grpc applications as xDS resources. retries, when
// above zero, adds a retry policy to every route: calls that fail with
// UNAVAILABLE are tried again that many times (for idempotent services
// only: the first attempt may have run). Build is pure and deterministic.
func Build(snap catalog.Snapshot, retries int) (Resources, error) {
	var r Resources
	for _, a := range grpcApps(snap) {
		l, err := listener(a.def.Name)
		if err != nil {
			return Resources{}, err
		}
		r.Listeners = append(r.Listeners, l)
		r.Routes = append(r.Routes, route(a.def, retries))
		r.Clusters = append(r.Clusters, cluster(a))
		r.Endpoints = append(r.Endpoints, assignment(a))
	}
	return r, nil
}

// ads is the config source of every resource a listener or cluster
// refers to: the same ADS stream.
func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

// listener is the api_listener gRPC's xds resolver asks for: an HTTP
// connection manager that takes its routes from RDS, with the router as
// its only (terminal) filter.
func listener(name string) (*listenerv3.Listener, error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: ads(), RouteConfigName: RouteName(name),
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
		}},
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: hcm}}, nil
}

// route is the application's RouteConfiguration: one virtual host for
// its name and domains, a route per path prefix (every path without any),
// a hash policy when it balances by a header (or per client channel for
// source-ip, the nearest a proxyless client has), and the retry policy.
func route(a catalog.Application, retries int) *routev3.RouteConfiguration {
	action := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: ClusterName(a.Name)}}
	if a.Balance == catalog.BalanceHash {
		switch kind, name := catalog.HashKeyParts(a.HashKey); kind {
		case "header":
			action.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
				Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: strings.ToLower(name)}}}}
		case "source-ip":
			action.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{
				FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: "io.grpc.channel_id"}}}}
		}
	}
	if retries > 0 {
		action.RetryPolicy = &routev3.RetryPolicy{RetryOn: "unavailable", NumRetries: wrapperspb.UInt32(uint32(retries))}
	}
	prefixes := a.Paths
	if len(prefixes) == 0 {
		prefixes = []string{"/"}
	}
	vh := &routev3.VirtualHost{Name: a.Name, Domains: append([]string{a.Name}, a.Domains...)}
	for _, p := range prefixes {
		vh.Routes = append(vh.Routes, &routev3.Route{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}},
			Action: &routev3.Route_Route{Route: action},
		})
	}
	return &routev3.RouteConfiguration{Name: RouteName(a.Name), VirtualHosts: []*routev3.VirtualHost{vh}}
}

// cluster is the application's EDS cluster with its balancing policy:
// least-conn is LEAST_REQUEST, hash RING_HASH, the rest (round-robin,
// random, which gRPC has not) ROUND_ROBIN.
func cluster(g app) *clusterv3.Cluster {
	a := g.def
	c := &clusterv3.Cluster{
		Name:                 ClusterName(a.Name),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
	switch a.Balance {
	case catalog.BalanceLeastConn:
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	case catalog.BalanceHash:
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		weight := 0
		for _, e := range g.endpoints {
			if !e.draining {
				weight += e.server.Weight
			}
		}
		per := max(1, min(pointsPerWeight, maxRing/max(weight, 1)))
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
			HashFunction:    clusterv3.Cluster_RingHashLbConfig_XX_HASH,
			MinimumRingSize: wrapperspb.UInt64(uint64(min(maxRing, per*max(weight, 1)))),
			MaximumRingSize: wrapperspb.UInt64(maxRing),
		}}
	}
	return c
}

// assignment lists the application's instances in one locality, with
// their weights; draining ones are marked DRAINING.
func assignment(a app) *endpointv3.ClusterLoadAssignment {
	loc := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{}, LoadBalancingWeight: wrapperspb.UInt32(1)}
	for _, e := range a.endpoints {
		status := corev3.HealthStatus_HEALTHY
		if e.draining {
			status = corev3.HealthStatus_DRAINING
		}
		loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address:       e.server.Addr.Unmap().String(),
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(e.server.Port)},
				}}},
				Hostname: e.node,
			}},
			HealthStatus:        status,
			LoadBalancingWeight: wrapperspb.UInt32(uint32(e.server.Weight)),
		})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: ClusterName(a.def.Name), Endpoints: []*endpointv3.LocalityLbEndpoints{loc}}
}

// byType returns the resources keyed as a go-control-plane snapshot takes
// them.
func (r Resources) byType() map[resource.Type][]types.Resource {
	m := map[resource.Type][]types.Resource{
		resource.ListenerType: nil, resource.RouteType: nil, resource.ClusterType: nil, resource.EndpointType: nil,
	}
	for _, x := range r.Listeners {
		m[resource.ListenerType] = append(m[resource.ListenerType], x)
	}
	for _, x := range r.Routes {
		m[resource.RouteType] = append(m[resource.RouteType], x)
	}
	for _, x := range r.Clusters {
		m[resource.ClusterType] = append(m[resource.ClusterType], x)
	}
	for _, x := range r.Endpoints {
		m[resource.EndpointType] = append(m[resource.EndpointType], x)
	}
	return m
}

// digest identifies the resources' content, so that a membership change
// that changes nothing a client sees pushes nothing.
func (r Resources) digest() ([32]byte, error) {
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	for _, list := range [][]proto.Message{msgs(r.Listeners), msgs(r.Routes), msgs(r.Clusters), msgs(r.Endpoints)} {
		for _, m := range list {
			b, err := opts.Marshal(m)
			if err != nil {
				return [32]byte{}, err
			}
			// Length-prefixed, so that no two lists digest alike.
			h.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(b))))
			h.Write(b)
		}
		h.Write([]byte{0xff, 0xff, 0xff, 0xff})
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

func msgs[M proto.Message](in []M) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}
