//go:build race

package cluster

// raceEnabled reports that the race detector is on: tests with many
// members take fewer, as each costs several times the CPU.
const raceEnabled = true
