package testutil

import (
	"fmt"
	"maps"
	"testing"
	"time"
)

// fatalTB records Fatalf instead of ending the test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) { f.msg = fmt.Sprintf(format, args...) }

func TestWaitFor(t *testing.T) {
	calls := 0
	WaitFor(t, 10*time.Second, "the third call", func() bool { calls++; return calls == 3 })
	if calls != 3 {
		t.Fatalf("cond called %d times, want 3", calls)
	}

	f := &fatalTB{TB: t}
	WaitFor(f, 5*time.Millisecond, "nothing", func() bool { return false })
	if f.msg != "waited 5ms for nothing" {
		t.Fatalf("failure %q, want %q", f.msg, "waited 5ms for nothing")
	}
}

func TestReceive(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	if got := Receive(t, ch, 10*time.Second, "a value"); got != 7 {
		t.Fatalf("received %d, want 7", got)
	}
	f := &fatalTB{TB: t}
	if got := Receive(f, ch, 5*time.Millisecond, "a second value"); got != 0 || f.msg != "no a second value within 5ms" {
		t.Fatalf("received %d, failure %q; want 0 and %q", got, f.msg, "no a second value within 5ms")
	}
}

func TestMemSource(t *testing.T) {
	m := NewMemSource[string]()
	ch, cancel := m.Subscribe()
	before := m.Snapshot()
	m.Put("web", "w1")
	m.Put("api", "a1") // coalesces with the first change
	select {
	case <-ch:
	default:
		t.Fatal("no value on the subscription after a Put")
	}
	select {
	case <-ch:
		t.Fatal("two values on a subscription of buffer one")
	default:
	}
	if len(before) != 0 {
		t.Fatalf("a snapshot taken before the Puts changed: %v", before)
	}
	if got := m.Snapshot(); !maps.Equal(got, map[string]string{"web": "w1", "api": "a1"}) {
		t.Fatalf("snapshot %v", got)
	}
	m.Delete("web")
	<-ch
	if got := m.Snapshot(); !maps.Equal(got, map[string]string{"api": "a1"}) {
		t.Fatalf("snapshot after Delete %v", got)
	}
	if n := m.Snapshots(); n != 3 {
		t.Fatalf("Snapshots %d, want 3", n)
	}
	cancel()
	m.Put("web", "w2")
	select {
	case <-ch:
		t.Fatal("a value after the subscription was cancelled")
	default:
	}
}
