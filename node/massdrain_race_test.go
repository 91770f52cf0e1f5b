//go:build race

package node

// massDrainStopped is how many backends TestMassDrainThroughNginx stops
// together: fewer under the race detector (each in-process node costs
// several times the CPU), still more than a beacon can acknowledge.
const massDrainStopped = 30
