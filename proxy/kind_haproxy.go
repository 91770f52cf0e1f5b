package proxy

import (
	"log/slog"
	"time"
)

// haproxy: managed mode runs ManagedHAProxy; external mode writes the file
// Debian's packaged haproxy.service loads (CONFIG=/etc/haproxy/haproxy.cfg),
// checks that file and reloads the service, whose ExecReload checks again
// and sends the master SIGUSR2.
func init() {
	RegisterKind(Kind{
		Name:      "haproxy",
		Generator: "haproxy",
		NewManaged: func(binary, stateDir string, timeout time.Duration, log *slog.Logger) (Managed, error) {
			m, err := NewManagedHAProxy(binary, stateDir, timeout, log)
			if err != nil {
				return nil, err // not a typed nil in the interface
			}
			return m, nil
		},
		Binary:     "haproxy",
		ConfigFile: "haproxy.cfg",
		PidFile:    "haproxy.pid",
		External: ExternalDefaults{
			Target: "/etc/haproxy/haproxy.cfg",
			Check:  func(target string) []string { return []string{"haproxy", "-c", "-f", target} },
			Reload: []string{"systemctl", "reload", "haproxy"},
		},
	})
}
