package balance

import "fmt"

// Policy names a picking algorithm.
type Policy uint8

const (
	// RoundRobin is smooth weighted round robin, as nginx does it: weights 5:1 give AABAAA.
	RoundRobin Policy = iota
	// LeastRequest is the power of two choices: of two backends drawn at random, the one with fewer
	// requests in flight per unit of weight.
	LeastRequest
)

// ParsePolicy turns "round_robin" or "least_request" into a Policy. The empty string is RoundRobin.
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "", "round_robin":
		return RoundRobin, nil
	case "least_request":
		return LeastRequest, nil
	}
	return 0, fmt.Errorf("balance: policy %q: want round_robin or least_request", s)
}

func (p Policy) String() string {
	if p == LeastRequest {
		return "least_request"
	}
	return "round_robin"
}
