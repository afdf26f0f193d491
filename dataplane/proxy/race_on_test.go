//go:build race

package proxy

// raceEnabled: under the race detector sync.Pool drops items at random, so allocation counts are
// not the program's. The Makefile runs the allocation tests once more without -race.
const raceEnabled = true
