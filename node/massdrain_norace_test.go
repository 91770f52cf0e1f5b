//go:build !race

package node

// massDrainStopped: see massdrain_race_test.go.
const massDrainStopped = 60
