package backoff

import (
	"testing"
	"time"
)

const ms = time.Millisecond

// TestNext: the bound doubles from Base up to Max and starts over after a Reset; each jitter draws
// its wait under the bound as documented, here with a Rand that returns its highest and its
// lowest value.
func TestNext(t *testing.T) {
	bounds := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1000 * ms, 1000 * ms}
	tests := []struct {
		jitter Jitter
		high   bool // Rand returns n-1, else 0
		want   func(bound time.Duration) time.Duration
		// draw is the n Rand must be asked for, or 0 when it must not be called.
		draw func(bound time.Duration) int64
	}{
		{None, true, func(b time.Duration) time.Duration { return b }, func(time.Duration) int64 { return 0 }},
		{Full, true, func(b time.Duration) time.Duration { return b - 1 }, func(b time.Duration) int64 { return int64(b) }},
		{Full, false, func(time.Duration) time.Duration { return 0 }, func(b time.Duration) int64 { return int64(b) }},
		{Equal, true, func(b time.Duration) time.Duration { return b }, func(b time.Duration) int64 { return int64(b-b/2) + 1 }},
		{Equal, false, func(b time.Duration) time.Duration { return b / 2 }, func(b time.Duration) int64 { return int64(b-b/2) + 1 }},
	}
	for _, tt := range tests {
		var asked []int64
		b := Backoff{Base: 100 * ms, Max: time.Second, Jitter: tt.jitter, Rand: func(n int64) int64 {
			asked = append(asked, n)
			if tt.high {
				return n - 1
			}
			return 0
		}}
		check := func(i int, bound time.Duration) {
			t.Helper()
			asked = asked[:0]
			got := b.Next()
			if want := tt.want(bound); got != want {
				t.Errorf("jitter %d, high %v: wait %d = %v, want %v (bound %v)", tt.jitter, tt.high, i, got, want, bound)
			}
			if n := tt.draw(bound); n == 0 && len(asked) != 0 || n != 0 && (len(asked) != 1 || asked[0] != n) {
				t.Errorf("jitter %d: wait %d asked Rand for %v, want %d", tt.jitter, i, asked, n)
			}
		}
		for i, bound := range bounds {
			check(i, bound)
		}
		b.Reset()
		check(len(bounds), bounds[0])
	}
}

// TestBaseIsMax: with Base equal to Max every wait is Base; an odd bound draws within it.
func TestBaseIsMax(t *testing.T) {
	b := Backoff{Base: 7, Max: 7, Jitter: Equal, Rand: func(n int64) int64 { return n - 1 }}
	for i := range 3 {
		if got := b.Next(); got != 7 {
			t.Fatalf("wait %d = %v, want 7ns", i, got)
		}
	}
	b.Rand = func(int64) int64 { return 0 }
	if got := b.Next(); got != 3 {
		t.Fatalf("lowest equal-jitter wait of 7ns = %v, want 3ns", got)
	}
}

// TestDefaultRand: without Rand, waits are drawn from math/rand/v2, within their bounds.
func TestDefaultRand(t *testing.T) {
	full := Backoff{Base: ms, Max: 4 * ms, Jitter: Full}
	equal := Backoff{Base: ms, Max: 4 * ms, Jitter: Equal}
	for i, bound := range []time.Duration{ms, 2 * ms, 4 * ms, 4 * ms} {
		if w := full.Next(); w < 0 || w >= bound {
			t.Errorf("full wait %d = %v, want in [0, %v)", i, w, bound)
		}
		if w := equal.Next(); w < bound/2 || w > bound {
			t.Errorf("equal wait %d = %v, want in [%v, %v]", i, w, bound/2, bound)
		}
	}
}

// TestInvalid: a Backoff without a positive Base, or with Max below it, panics at Next.
func TestInvalid(t *testing.T) {
	for _, b := range []Backoff{{}, {Base: -1, Max: time.Second}, {Base: time.Second, Max: ms}, {Base: ms, Max: ms, Jitter: 9}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Next of %+v did not panic", b)
				}
			}()
			b.Next()
		}()
	}
}
