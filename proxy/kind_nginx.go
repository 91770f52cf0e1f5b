package proxy

import (
	"log/slog"
	"time"
)

// nginx: managed mode runs ManagedNginx; external mode writes an include
// for the http block of a system nginx (Debian's nginx.conf includes
// conf.d/*.conf), checks the whole configuration and reloads it.
func init() {
	RegisterKind(Kind{
		Name:      "nginx",
		Generator: "nginx",
		NewManaged: func(binary, stateDir string, timeout time.Duration, log *slog.Logger) (Managed, error) {
			m, err := NewManagedNginx(binary, stateDir, timeout, log)
			if err != nil {
				return nil, err // not a typed nil in the interface
			}
			return m, nil
		},
		Binary:     "nginx",
		ConfigFile: "nginx.conf",
		PidFile:    "nginx.pid",
		External: ExternalDefaults{
			Target: "/etc/nginx/conf.d/scrimp.conf",
			// nginx -t checks the configuration that includes target.
			Check:  func(string) []string { return []string{"nginx", "-t"} },
			Reload: []string{"nginx", "-s", "reload"},
		},
	})
}
