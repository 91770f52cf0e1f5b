package node

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
	"github.com/scrimplb/scrimp/plugin"
)

// The requests the managed proxy counts, for GET /v1/proxy: nginx's
// stub_status on the loopback server of the generator's status-port, or
// HAProxy's "show stat" on its stats socket in the state directory. Each
// read is one local request bounded by ctx and a size limit.

var _ admin.ProxyView = views{}

// maxProxyStats bounds what is read of a status answer: stub_status is a
// few lines, "show stat" about 1 KiB per server.
const (
	maxStubStatus = 4 << 10
	maxShowStat   = 16 << 20
)

func (v views) ProxyStats(ctx context.Context) (admin.ProxyStats, error) {
	n := v.n
	if n.lb == nil {
		return admin.ProxyStats{}, fmt.Errorf("%w: this node is a backend; ask a load balancer", admin.ErrWrongRole)
	}
	st := admin.ProxyStats{Proxy: n.cfg.LB.Generator, At: time.Now()}
	d, ok := n.proxy.(interface{ Dir() string })
	if n.cfg.LB.Mode != "managed" || !ok {
		return st, fmt.Errorf("%w: the proxy is not managed by scrimp (mode %s)", admin.ErrNoProxyStats, n.cfg.LB.Mode)
	}
	switch n.cfg.LB.Generator {
	case "nginx":
		o := generator.DefaultNginxOptions()
		if err := plugin.DecodeOptions(n.cfg.LB.GeneratorOptions, &o); err != nil {
			return st, fmt.Errorf("nginx options: %w", err)
		}
		if o.StatusPort == 0 {
			return st, fmt.Errorf(`%w: set "status-port" in lb.generator-options for nginx's request counters`, admin.ErrNoProxyStats)
		}
		url := "http://127.0.0.1:" + strconv.Itoa(o.StatusPort) + generator.NginxStatusPath
		ns, err := nginxStubStatus(ctx, url)
		if err != nil {
			return st, err
		}
		st.Available, st.Source, st.Nginx = true, url, &ns
	case "haproxy":
		sock := filepath.Join(d.Dir(), "admin.sock")
		servers, err := haproxyShowStat(ctx, sock)
		if err != nil {
			return st, err
		}
		nodes := v.nodesByAddr()
		for i := range servers {
			servers[i].Node = nodes[servers[i].Addr]
		}
		st.Available, st.Source, st.Servers = true, sock, servers
	default:
		return st, fmt.Errorf("%w: scrimp reads no counts from %s", admin.ErrNoProxyStats, n.cfg.LB.Generator)
	}
	return st, nil
}

// nodesByAddr maps each backend instance's address (host:port) to its
// node, to name HAProxy's runtime slots.
func (v views) nodesByAddr() map[string]string {
	out := map[string]string{}
	for _, node := range v.n.cluster.Snapshot().Nodes {
		if node.Role != catalog.RoleBackend {
			continue
		}
		for _, a := range node.Applications {
			out[netip.AddrPortFrom(node.Addr, uint16(a.ApplicationPort)).String()] = node.Name
		}
	}
	return out
}

var stubClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

// nginxStubStatus reads and parses nginx's stub_status page:
//
//	Active connections: 2
//	server accepts handled requests
//	 10 10 25
//	Reading: 0 Writing: 1 Waiting: 1
func nginxStubStatus(ctx context.Context, url string) (admin.NginxStats, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return admin.NginxStats{}, err
	}
	res, err := stubClient.Do(req)
	if err != nil {
		return admin.NginxStats{}, fmt.Errorf("nginx stub_status: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxStubStatus))
	if err != nil {
		return admin.NginxStats{}, fmt.Errorf("nginx stub_status %s: %w", url, err)
	}
	if res.StatusCode != http.StatusOK {
		return admin.NginxStats{}, fmt.Errorf("nginx stub_status %s: HTTP %d", url, res.StatusCode)
	}
	ns, err := parseStubStatus(string(body))
	if err != nil {
		return admin.NginxStats{}, fmt.Errorf("nginx stub_status %s: %w", url, err)
	}
	return ns, nil
}

func parseStubStatus(s string) (admin.NginxStats, error) {
	var ns admin.NginxStats
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) != 4 {
		return ns, fmt.Errorf("%d lines, want 4", len(lines))
	}
	if _, err := fmt.Sscanf(lines[0], "Active connections: %d", &ns.Active); err != nil {
		return ns, fmt.Errorf("line 1: %w", err)
	}
	if _, err := fmt.Sscanf(strings.TrimSpace(lines[2]), "%d %d %d", &ns.Accepts, &ns.Handled, &ns.Requests); err != nil {
		return ns, fmt.Errorf("line 3: %w", err)
	}
	if _, err := fmt.Sscanf(strings.TrimSpace(lines[3]), "Reading: %d Writing: %d Waiting: %d", &ns.Reading, &ns.Writing, &ns.Waiting); err != nil {
		return ns, fmt.Errorf("line 4: %w", err)
	}
	return ns, nil
}

// haproxyShowStat asks HAProxy's stats socket for "show stat" and returns
// the servers of scrimp's backends.
func haproxyShowStat(ctx context.Context, sock string) ([]admin.ServerStats, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, fmt.Errorf("haproxy stats socket: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := io.WriteString(conn, "show stat\n"); err != nil {
		return nil, fmt.Errorf("haproxy stats socket %s: %w", sock, err)
	}
	servers, err := parseShowStat(bufio.NewReader(io.LimitReader(conn, maxShowStat)))
	if err != nil {
		return nil, fmt.Errorf("haproxy stats socket %s: show stat: %w", sock, err)
	}
	return servers, nil
}

// parseShowStat reads "show stat" CSV (a "# pxname,svname,..." header,
// then one line per proxy and server) into the servers (type 2) of the
// backends scrimp names scrimp_APP.
func parseShowStat(r io.Reader) ([]admin.ServerStats, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if len(head) == 0 || !strings.HasPrefix(head[0], "# ") {
		return nil, errors.New("no '# pxname,...' header")
	}
	col := map[string]int{}
	for i, h := range head {
		col[strings.TrimPrefix(h, "# ")] = i
	}
	for _, c := range []string{"pxname", "svname", "scur", "stot", "bin", "bout", "status", "type"} {
		if _, ok := col[c]; !ok {
			return nil, fmt.Errorf("no %s column", c)
		}
	}
	field := func(rec []string, name string) string {
		if i, ok := col[name]; ok && i < len(rec) {
			return rec[i]
		}
		return ""
	}
	num := func(rec []string, name string) int64 {
		v, _ := strconv.ParseInt(field(rec, name), 10, 64)
		return v
	}
	out := []admin.ServerStats{}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(rec) == 1 && rec[0] == "" {
			continue
		}
		if field(rec, "type") != "2" || !strings.HasPrefix(field(rec, "pxname"), "scrimp_") {
			continue
		}
		out = append(out, admin.ServerStats{
			Backend: field(rec, "pxname"), Server: field(rec, "svname"), Addr: field(rec, "addr"),
			Status: field(rec, "status"), Current: num(rec, "scur"), Total: num(rec, "stot"),
			BytesIn: num(rec, "bin"), BytesOut: num(rec, "bout"),
		})
	}
}
