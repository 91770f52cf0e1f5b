package seed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

func init() { Register("static", newStatic) }

// staticOptions is the "seed.static" section.
type staticOptions struct {
	// Addresses are host:port gossip addresses of nodes to join.
	Addresses []string `json:"addresses"`
}

// static returns a fixed list of addresses.
type static struct{ addrs []string }

func newStatic(raw json.RawMessage, env Env) (Provider, error) {
	var o staticOptions
	if err := DecodeStrict(raw, &o); err != nil {
		return nil, err
	}
	var errs []error
	s := &static{}
	for i, a := range o.Addresses {
		addr, err := CheckAddress(a, env.DefaultPort)
		if err != nil {
			errs = append(errs, fmt.Errorf("addresses[%d]: %w", i, err))
			continue
		}
		s.addrs = append(s.addrs, addr)
	}
	return s, errors.Join(errs...)
}

// Seeds returns the configured list; it never blocks.
func (s *static) Seeds(context.Context) ([]string, error) {
	return append([]string(nil), s.addrs...), nil
}
