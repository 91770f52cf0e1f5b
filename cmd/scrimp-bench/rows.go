package main

import (
	"context"
	"slices"
	"strings"
)

// rowProvider is a group of rows that a file of this package adds to the
// bench without touching runBench: the file registers it from init,
//
//	func init() {
//		providers = append(providers, rowProvider{
//			group: "idle",
//			names: []string{rowIdleCost},
//			run:   func(ctx context.Context, b *bencher) { b.idleCostRows(ctx) },
//		})
//	}
//
// and run adds its rows with b.add(name, setup, measured, target), one
// row per setup, a failure as b.add(name, setup, failed(err), target).
// run must return when ctx ends and clean up what it started; it runs
// after the built-in groups, providers in registration order (file
// name order, as Go runs init functions). `--rows group` runs one group.
type rowProvider struct {
	// group is the name --rows selects the rows by.
	group string
	// names are the row names, in the order the table shows them (after
	// the built-in rows).
	names []string
	// run measures and adds the rows. b.o.quick asks for a short run.
	run func(ctx context.Context, b *bencher)
}

// providers are the registered row groups; only init functions append.
var providers []rowProvider

// builtinGroups are the groups of rows runBench runs itself.
var builtinGroups = []string{"gossip", "load", "routing", "render", "idle"}

// allRowNames is every row name in table order: the built-in rows, then
// each provider's.
func allRowNames() []string {
	names := slices.Clone(benchRowNames)
	for _, p := range providers {
		for _, n := range p.names {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	return names
}

// allGroups is every group --rows accepts.
func allGroups() []string {
	g := slices.Clone(builtinGroups)
	for _, p := range providers {
		if !slices.Contains(g, p.group) {
			g = append(g, p.group)
		}
	}
	return g
}

// rowOrder is a row name's place in the table; names nobody declared go
// last.
func rowOrder(names []string, name string) int {
	if i := slices.Index(names, name); i >= 0 {
		return i
	}
	return len(names)
}

// parseGroups reads --rows (and the older --only): a comma-separated list
// of groups; empty selects every group.
func parseGroups(lists ...string) (map[string]bool, error) {
	set := map[string]bool{}
	known := allGroups()
	for _, l := range lists {
		for g := range strings.SplitSeq(l, ",") {
			g = strings.TrimSpace(g)
			if g == "" {
				continue
			}
			if !slices.Contains(known, g) {
				return nil, &unknownGroupError{group: g, known: known}
			}
			set[g] = true
		}
	}
	return set, nil
}

type unknownGroupError struct {
	group string
	known []string
}

func (e *unknownGroupError) Error() string {
	return "--rows: unknown group " + strings.TrimSpace(e.group) + " (groups: " + strings.Join(e.known, ", ") + ")"
}
