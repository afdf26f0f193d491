package balance

// Policy names a picking algorithm.
type Policy uint8

const (
	// RoundRobin is smooth weighted round robin, as nginx does it: weights 5:1 give AABAAA.
	RoundRobin Policy = iota
	// LeastRequest is the power of two choices: of two backends drawn at random, the one with fewer
	// requests in flight per unit of weight.
	LeastRequest
	// MaglevHash is consistent hashing of a key of the request (the proxy hashes it and looks it up in
	// a Maglev table). New gives a Maglev set the round robin picker, which the proxy uses for a
	// request that lacks the key.
	MaglevHash
)

func (p Policy) String() string {
	switch p {
	case LeastRequest:
		return "least_request"
	case MaglevHash:
		return "maglev"
	}
	return "round_robin"
}
