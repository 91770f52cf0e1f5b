// Package backend runs a backend node's side of the cluster: it keeps what
// the cluster believes about this node's applications true.
package backend

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/scrimplb/scrimp/catalog"
)

// Advertiser publishes this node's applications to the cluster.
type Advertiser interface {
	// UpdateApplications validates apps and re-broadcasts them; on error
	// the previous advertisement stays. It may block for up to timeout.
	UpdateApplications(role catalog.Role, apps []catalog.Application, timeout time.Duration) error
}

// Backend holds the applications a backend node advertises. Its methods
// are safe for concurrent use.
type Backend struct {
	adv     Advertiser
	timeout time.Duration

	mu   sync.Mutex
	apps []catalog.Application
}

// New returns a Backend that advertises through adv.
func New(adv Advertiser, timeout time.Duration) *Backend {
	return &Backend{adv: adv, timeout: timeout}
}

// Set replaces the advertised applications after validating them all; an
// invalid set changes nothing and the error lists every problem.
func (b *Backend) Set(apps []catalog.Application) error {
	var errs []error
	seen := map[string]bool{}
	for _, a := range apps {
		for _, err := range a.Validate() {
			errs = append(errs, fmt.Errorf("application %q: %w", a.Name, err))
		}
		if seen[a.Name] {
			errs = append(errs, fmt.Errorf("application %q: advertised twice", a.Name))
		}
		seen[a.Name] = true
	}
	if len(errs) > 0 {
		return fmt.Errorf("backend: %w", errors.Join(errs...))
	}
	sorted := slices.Clone(apps)
	slices.SortFunc(sorted, func(x, y catalog.Application) int { return strings.Compare(x.Name, y.Name) })
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.adv.UpdateApplications(catalog.RoleBackend, sorted, b.timeout); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	b.apps = sorted
	return nil
}

// Applications returns what is advertised now.
func (b *Backend) Applications() []catalog.Application {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.apps)
}
