// Package balance picks a backend of a set for each request.
//
// A Picker is made for one immutable list of weights and is safe for concurrent use. Pick skips the
// backends a request already tried, so that a retry goes to another backend, and returns -1 when
// every backend was tried. Done must be called once for each successful Pick, when the request ends.
//
// RoundRobin is nginx's smooth weighted round robin: over any window of sum(weights) picks each
// backend gets exactly its weight, spread out (5:1 gives AABAAA, never AAAAAB). Where nginx breaks a
// tie for the first candidate (and so gives AAABAA), xlb breaks it for the lighter backend.
//
// LeastRequest is the power of two choices: two candidates drawn in proportion to weight, and of
// those the one with fewer requests in flight per unit of weight.
package balance
