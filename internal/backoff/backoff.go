package backoff

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Jitter says how a wait is drawn under its bound.
type Jitter int

const (
	// None: the wait is the bound.
	None Jitter = iota
	// Full: the wait is random in [0, bound).
	Full
	// Equal: the wait is random in [bound/2, bound].
	Equal
)

// Backoff yields the waits of a retry loop: Next before each retry, Reset once an attempt
// succeeded. Its zero value is not usable: Base and Max must be set.
type Backoff struct {
	// Base bounds the first wait, and the first after a Reset. It must be positive.
	Base time.Duration
	// Max bounds every wait: the bound doubles from Base up to Max. It must not be below Base.
	Max time.Duration
	// Jitter is how each wait is drawn under its bound; the zero value is None.
	Jitter Jitter
	// Rand returns a random number in [0, n), for n > 0; nil means math/rand/v2's Int64N. Tests
	// set it to make the waits known.
	Rand func(n int64) int64

	bound time.Duration // of the next wait; 0 means Base
}

// Next returns the next wait and doubles the bound of the one after, up to Max.
func (b *Backoff) Next() time.Duration {
	if b.Base <= 0 || b.Max < b.Base {
		panic(fmt.Sprintf("backoff: Base %v must be positive and Max %v not below it", b.Base, b.Max))
	}
	if b.bound == 0 {
		b.bound = b.Base
	}
	bound := b.bound
	if b.bound > b.Max/2 {
		b.bound = b.Max
	} else {
		b.bound *= 2
	}
	rnd := b.Rand
	if rnd == nil {
		rnd = rand.Int64N
	}
	switch b.Jitter {
	case None:
		return bound
	case Full:
		return time.Duration(rnd(int64(bound)))
	case Equal:
		half := bound / 2
		return half + time.Duration(rnd(int64(bound-half)+1))
	default:
		panic(fmt.Sprintf("backoff: unknown Jitter %d", b.Jitter))
	}
}

// Reset makes the next wait bounded by Base again.
func (b *Backoff) Reset() { b.bound = 0 }
