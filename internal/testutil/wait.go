package testutil

import (
	"testing"
	"time"
)

// WaitFor polls cond every millisecond until it holds, and fails tb if it does not within limit.
// what names what is waited for, in the failure: "waited 10s for " + what.
func WaitFor(tb testing.TB, limit time.Duration, what string, cond func() bool) {
	tb.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(limit)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			tb.Fatalf("waited %v for %s", limit, what)
			return
		}
	}
}

// Receive waits for one value of ch, and fails tb if none comes within limit. what names it, in the
// failure: "no " + what + " within 10s".
func Receive[T any](tb testing.TB, ch <-chan T, limit time.Duration, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(limit):
		tb.Fatalf("no %s within %v", what, limit)
		var zero T
		return zero
	}
}
