package seed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

func init() { Register("dns", newDNS) }

// dnsOptions is the "seed.dns" section.
type dnsOptions struct {
	// Names are resolved on every Seeds call. Required.
	Names []dnsName `json:"names"`
	// Port is the gossip port joined on the addresses of A/AAAA names
	// (SRV records carry their own); 0 means the node's gossip port.
	Port int `json:"port"`
	// Server is the "host:port" of the DNS server to ask; empty means the
	// nameservers, search list and ndots of /etc/resolv.conf.
	Server string `json:"server"`
	// Timeout bounds each DNS exchange.
	Timeout string `json:"timeout"`
}

// Name types a dnsName may have.
const (
	dnsTypeA   = "a"   // A and AAAA records, joined with Port
	dnsTypeSRV = "srv" // SRV records: target and port
)

// dnsName is one entry of "names": either a string, an SRV name when it
// starts with an underscore (as SRV names do, "_service._proto.domain")
// and an A/AAAA name otherwise, or an object {"name": …, "type": "a"|"srv"}
// for names that break that rule.
type dnsName struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// UnmarshalJSON accepts the string and the object form.
func (n *dnsName) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &n.Name); err == nil {
		n.Type = ""
		return nil
	}
	type plain dnsName
	return DecodeStrict(b, (*plain)(n))
}

// kind returns the record type to ask for: the explicit type, else SRV for
// names starting with an underscore.
func (n dnsName) kind() string {
	if n.Type != "" {
		return n.Type
	}
	if strings.HasPrefix(n.Name, "_") {
		return dnsTypeSRV
	}
	return dnsTypeA
}

// resolvConf is where the system's resolver configuration is read from
// when no server is configured. Tests point it elsewhere.
var resolvConf = "/etc/resolv.conf"

// dnsSeeds resolves names with its own DNS client rather than the system
// resolver, so that SRV records, a chosen server and a bounded timeout
// work the same with and without cgo, and nothing is cached between calls.
type dnsSeeds struct {
	names   []dnsName
	port    int
	server  string
	timeout time.Duration
	log     *slog.Logger
}

func newDNS(raw json.RawMessage, env Env) (Provider, error) {
	var o dnsOptions
	if err := DecodeStrict(raw, &o); err != nil {
		return nil, err
	}
	var errs []error
	if len(o.Names) == 0 {
		errs = append(errs, errors.New("names: required"))
	}
	needPort := false
	for i, n := range o.Names {
		if _, ok := dns.IsDomainName(n.Name); !ok || n.Name == "" {
			errs = append(errs, fmt.Errorf("names[%d]: %q is not a domain name", i, n.Name))
		}
		switch n.Type {
		case "", dnsTypeA, dnsTypeSRV:
		default:
			errs = append(errs, fmt.Errorf("names[%d].type: %q is not %q or %q", i, n.Type, dnsTypeA, dnsTypeSRV))
		}
		needPort = needPort || n.kind() == dnsTypeA
	}
	port := o.Port
	if port == 0 {
		port = env.DefaultPort
	}
	if o.Port < 0 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("port: %d is not in 1-65535", o.Port))
	} else if port == 0 && needPort {
		errs = append(errs, errors.New("port: required for A/AAAA names when there is no default gossip port"))
	}
	server := ""
	if o.Server != "" {
		s, err := CheckAddress(o.Server, 53)
		if err != nil {
			errs = append(errs, fmt.Errorf("server: %w", err))
		}
		server = s
	}
	timeout, err := durationOption("timeout", o.Timeout, 2*time.Second, time.Millisecond)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &dnsSeeds{names: o.Names, port: port, server: server, timeout: timeout, log: env.Logger}, nil
}

// Seeds resolves every name afresh and returns the addresses found,
// sorted and deduplicated. A name that fails is logged and skipped when
// another name resolved; Seeds fails only when every name failed. A name
// that exists without records yields nothing, not an error. Each DNS
// exchange is bounded by the timeout option, the whole call by ctx.
func (d *dnsSeeds) Seeds(ctx context.Context) ([]string, error) {
	q, err := d.query()
	if err != nil {
		return nil, err
	}
	var (
		addrs []string
		errs  []error
	)
	for _, n := range d.names {
		var found []string
		var err error
		if n.kind() == dnsTypeSRV {
			found, err = q.srv(ctx, n.Name)
		} else {
			found, err = q.hosts(ctx, n.Name, d.port)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		addrs = append(addrs, found...)
	}
	if len(errs) > 0 {
		if len(addrs) == 0 {
			return nil, fmt.Errorf("seed dns: %w", errors.Join(errs...))
		}
		d.log.Warn("seed dns: some names did not resolve", "err", errors.Join(errs...))
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), nil
}

// query prepares one Seeds call's resolver, rereading resolv.conf so that a
// changed nameserver is picked up like a changed record.
func (d *dnsSeeds) query() (*dnsQuery, error) {
	q := &dnsQuery{
		udp:     &dns.Client{Net: "udp", Timeout: d.timeout},
		tcp:     &dns.Client{Net: "tcp", Timeout: d.timeout},
		timeout: d.timeout,
		log:     d.log,
	}
	if d.server != "" {
		q.servers = []string{d.server}
		q.candidates = func(name string) []string { return []string{dns.Fqdn(name)} }
		return q, nil
	}
	conf, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return nil, fmt.Errorf("seed dns: no server configured and %w", err)
	}
	if len(conf.Servers) == 0 {
		return nil, fmt.Errorf("seed dns: no server configured and %s lists no nameserver", resolvConf)
	}
	for _, s := range conf.Servers {
		q.servers = append(q.servers, net.JoinHostPort(s, conf.Port))
	}
	q.candidates = conf.NameList // search list and ndots, like the system resolver
	return q, nil
}

// dnsQuery asks a list of servers, trying the next on network errors.
type dnsQuery struct {
	servers    []string
	candidates func(name string) []string
	udp, tcp   *dns.Client
	timeout    time.Duration
	log        *slog.Logger
}

// errNXDOMAIN marks a name that does not exist.
var errNXDOMAIN = errors.New("no such name (NXDOMAIN)")

// lookup asks for name's records of type qtype, trying name's search-list
// candidates in order until one exists. It returns the answer of the name
// that exists and that name, or an error wrapping errNXDOMAIN if none does.
func (q *dnsQuery) lookup(ctx context.Context, name string, qtype uint16) (*dns.Msg, string, error) {
	for _, fqdn := range q.candidates(name) {
		r, err := q.exchange(ctx, fqdn, qtype)
		if err != nil {
			return nil, "", fmt.Errorf("%s %s: %w", dns.TypeToString[qtype], name, err)
		}
		switch r.Rcode {
		case dns.RcodeSuccess:
			return r, fqdn, nil
		case dns.RcodeNameError:
			continue
		default:
			return nil, "", fmt.Errorf("%s %s: server answered %s", dns.TypeToString[qtype], fqdn, dns.RcodeToString[r.Rcode])
		}
	}
	return nil, "", fmt.Errorf("%s %s: %w", dns.TypeToString[qtype], name, errNXDOMAIN)
}

// exchange sends one question to the first server that answers, over UDP
// and again over TCP when the answer was truncated (a large headless
// service does not fit in a datagram).
func (q *dnsQuery) exchange(ctx context.Context, fqdn string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype)
	m.SetEdns0(4096, false)
	var errs []error
	for _, server := range q.servers {
		r, err := q.exchangeWith(ctx, q.udp, m, server)
		if err == nil && r.Truncated {
			r, err = q.exchangeWith(ctx, q.tcp, m, server)
		}
		if err == nil {
			return r, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, fmt.Errorf("server %s: %w", server, err))
	}
	return nil, errors.Join(errs...)
}

func (q *dnsQuery) exchangeWith(ctx context.Context, c *dns.Client, m *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, server)
	return r, err
}

// hosts resolves name's A and AAAA records and joins each address with
// port. A name with neither yields an empty list.
func (q *dnsQuery) hosts(ctx context.Context, name string, port int) ([]string, error) {
	ips, err := q.ips(ctx, name)
	if err != nil {
		return nil, err
	}
	addrs := make([]string, 0, len(ips))
	for _, ip := range ips {
		addrs = append(addrs, net.JoinHostPort(ip, strconv.Itoa(port)))
	}
	return addrs, nil
}

// ips returns the A and AAAA addresses of name (following CNAMEs, whose
// targets the server includes in the answer).
func (q *dnsQuery) ips(ctx context.Context, name string) ([]string, error) {
	var ips []string
	r, fqdn, err := q.lookup(ctx, name, dns.TypeA)
	if err != nil {
		return nil, err
	}
	ips = append(ips, addressRecords(r.Answer)...)
	// Ask for AAAA under the name that existed, not the search list again.
	r6, err := q.exchange(ctx, fqdn, dns.TypeAAAA)
	if err != nil {
		return nil, fmt.Errorf("AAAA %s: %w", fqdn, err)
	}
	if r6.Rcode == dns.RcodeSuccess {
		ips = append(ips, addressRecords(r6.Answer)...)
	}
	return ips, nil
}

// srv resolves an SRV name to target:port pairs, taking the targets'
// addresses from the additional section when the server sent them
// (Kubernetes does for headless services) and asking for them otherwise.
func (q *dnsQuery) srv(ctx context.Context, name string) ([]string, error) {
	r, _, err := q.lookup(ctx, name, dns.TypeSRV)
	if err != nil {
		return nil, err
	}
	extra := map[string][]string{}
	for _, rr := range r.Extra {
		if ip := addressRecords([]dns.RR{rr}); len(ip) > 0 {
			owner := strings.ToLower(rr.Header().Name)
			extra[owner] = append(extra[owner], ip...)
		}
	}
	var addrs []string
	for _, rr := range r.Answer {
		srv, ok := rr.(*dns.SRV)
		if !ok {
			continue
		}
		if srv.Target == "." || srv.Port == 0 {
			continue // "." means the service is decidedly not available there
		}
		ips := extra[strings.ToLower(srv.Target)]
		if len(ips) == 0 {
			ips, err = q.ips(ctx, srv.Target)
			if err != nil {
				q.log.Warn("seed dns: skipping SRV target", "name", name, "target", srv.Target, "err", err)
				continue
			}
		}
		for _, ip := range ips {
			addrs = append(addrs, net.JoinHostPort(ip, strconv.Itoa(int(srv.Port))))
		}
	}
	return addrs, nil
}

// addressRecords returns the addresses of the A and AAAA records in rrs.
func addressRecords(rrs []dns.RR) []string {
	var ips []string
	for _, rr := range rrs {
		switch rr := rr.(type) {
		case *dns.A:
			ips = append(ips, rr.A.String())
		case *dns.AAAA:
			ips = append(ips, rr.AAAA.String())
		}
	}
	return ips
}
