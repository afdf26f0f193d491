package upgrade

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// world is an Env with no process and no clock: kills are recorded (SIGKILL of the child ends it),
// the group's members are scripted, time moves only by Sleep, the deadline fires when the test
// says, and the reaper runs at once.
type world struct {
	t        *testing.T
	now      time.Time
	deadline chan time.Time
	kills    []string
	members  [][]int // the answers of Members, one per call; the last one repeats
	membErr  error
	exited   chan error
	child    int
}

func newWorld(t *testing.T) *world {
	return &world{t: t, now: time.Unix(1000, 0), deadline: make(chan time.Time, 1), exited: make(chan error, 1), child: 4242}
}

func (w *world) env() Env {
	return Env{
		Kill: func(pid int, sig syscall.Signal) error {
			w.kills = append(w.kills, fmt.Sprintf("%d %v", pid, sig))
			if pid == w.child && sig == syscall.SIGKILL {
				select {
				case w.exited <- errors.New("signal: killed"):
				default: // it had exited already
				}
			}
			return nil
		},
		Members: func(int) ([]int, error) {
			if w.membErr != nil {
				return nil, w.membErr
			}
			m := w.members[0]
			if len(w.members) > 1 {
				w.members = w.members[1:]
			}
			return m, nil
		},
		After: func(time.Duration) <-chan time.Time { return w.deadline },
		Sleep: func(d time.Duration) { w.now = w.now.Add(d) },
		Now:   func() time.Time { return w.now },
		Go:    func(f func()) { f() },
	}
}

// TestAwait: every way a new binary can answer, or not, and what is done to it and its group.
func TestAwait(t *testing.T) {
	for _, tc := range []struct {
		name    string
		act     func(w *world, line chan<- string) // what the new binary does
		kind    Kind                               // of the error; unused when ready
		msg     string                             // in the error; "" when ready
		version string
	}{
		{"ready", func(w *world, line chan<- string) { line <- "ready v2.1" }, 0, "", "v2.1"},
		{"says it cannot go on", func(w *world, line chan<- string) { line <- "error: cannot bind 127.0.0.1:80" }, Failed,
			"the new binary failed: cannot bind 127.0.0.1:80", ""},
		{"exits before a word", func(w *world, line chan<- string) { w.exited <- errors.New("exit status 1") }, Failed,
			"the new binary exited before it was ready: exit status 1", ""},
		{"closes the pipe, then exits", func(w *world, line chan<- string) {
			line <- ""
			w.exited <- errors.New("exit status 2")
		}, Failed, "the new binary exited before it was ready: exit status 2", ""},
		{"closes the pipe and runs on", func(w *world, line chan<- string) {
			line <- ""
			go func() {
				// The deadline passes once the closed pipe was seen.
				for len(line) > 0 {
					runtime.Gosched()
				}
				w.deadline <- time.Time{}
			}()
		}, NotReady, "the new binary closed its readiness pipe and was not ready within 30s", ""},
		{"says nothing in time", func(w *world, line chan<- string) { w.deadline <- w.now }, NotReady,
			"the new binary was not ready within 30s", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.members = [][]int{{4243, 4244}, {4244}, nil}
			line := make(chan string, 1)
			tc.act(w, line)
			logs := &testutil.SyncBuffer{}
			out := w.env().Await(Child{Pid: w.child, Line: line, Exited: w.exited}, 30*time.Second, 35*time.Second,
				hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}))
			if tc.msg == "" {
				if out.Err != nil || out.Pid != w.child || out.Version != tc.version || len(w.kills) != 0 {
					t.Fatalf("outcome %+v, kills %v; want pid %d, version %s and no kill", out, w.kills, w.child, tc.version)
				}
				return
			}
			var e *Error
			if !errors.As(out.Err, &e) || e.Kind != tc.kind || e.Msg != tc.msg {
				t.Fatalf("outcome %+v; want an error of kind %d: %q", out, tc.kind, tc.msg)
			}
			// The new binary is killed, its group told to stop; the group is watched until it is empty.
			if want := []string{"4242 killed", "-4242 terminated"}; !slices.Equal(w.kills, want) {
				t.Errorf("kills %v, want %v", w.kills, want)
			}
			if !strings.Contains(logs.String(), "every process of the failed upgrade has ended") {
				t.Errorf("the group's end is not logged:\n%s", logs)
			}
			if got := w.now.Sub(time.Unix(1000, 0)); got != 2*GroupPoll {
				t.Errorf("the reaper waited %v, want two polls", got)
			}
		})
	}
}

// TestReapGroup: a group that does not end within the bound is killed, and one whose members
// cannot be read is killed at once; both are logged.
func TestReapGroup(t *testing.T) {
	t.Run("stuck", func(t *testing.T) {
		w := newWorld(t)
		w.members = [][]int{{4243}}
		logs := &testutil.SyncBuffer{}
		w.env().ReapGroup(4242, time.Second, hclog.New(&hclog.LoggerOptions{Output: logs}))
		if want := []string{"-4242 killed"}; !slices.Equal(w.kills, want) {
			t.Errorf("kills %v, want %v", w.kills, want)
		}
		if waited := w.now.Sub(time.Unix(1000, 0)); waited < time.Second || waited > time.Second+GroupPoll {
			t.Errorf("killed after %v, want the bound of 1s", waited)
		}
		if !strings.Contains(logs.String(), "still running; killed them") || !strings.Contains(logs.String(), "pids=[4243]") {
			t.Errorf("the kill is not logged with the pids:\n%s", logs)
		}
	})
	t.Run("unreadable", func(t *testing.T) {
		w := newWorld(t)
		w.membErr = errors.New("/proc: permission denied")
		logs := &testutil.SyncBuffer{}
		w.env().ReapGroup(4242, time.Second, hclog.New(&hclog.LoggerOptions{Output: logs}))
		if want := []string{"-4242 killed"}; !slices.Equal(w.kills, want) || w.now != time.Unix(1000, 0) {
			t.Errorf("kills %v after %v; want %v at once", w.kills, w.now.Sub(time.Unix(1000, 0)), want)
		}
		if !strings.Contains(logs.String(), "permission denied") {
			t.Errorf("the error is not logged:\n%s", logs)
		}
	})
}
