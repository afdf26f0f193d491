package balance

// Policy names a picking algorithm.
type Policy uint8

const (
	// RoundRobin is smooth weighted round robin, as nginx does it: weights 5:1 give AABAAA.
	RoundRobin Policy = iota
	// LeastRequest is the power of two choices: of two backends drawn at random, the one with fewer
	// requests in flight per unit of weight.
	LeastRequest
)

func (p Policy) String() string {
	if p == LeastRequest {
		return "least_request"
	}
	return "round_robin"
}
