// Package upgrade is the old supervisor's side of a binary upgrade as a core of its own: once the
// new binary is started, Await waits for its word on the readiness pipe ("ready VERSION" or
// "error: REASON"), its exit, or the upgrade timeout, whichever comes first, and when the upgrade
// failed ends the new binary and every process of its group. The operating system is behind Env, a
// struct of funcs (as cloudflare/tableflip's env.go), so that tests drive every outcome without a
// process; OS is the real one.
//
// The new binary is started as the leader of a process group of its own (Setpgid), so that the
// group holds whatever it started, its workers or a wrapper's children, however far down. A failed
// one gets SIGKILL and is waited for; the rest of its group gets SIGTERM, on which an xlb worker
// drains what it accepted, and whatever is still alive after a grace (the shutdown timeout and
// more) gets SIGKILL, logged at warn. Zombies are not alive: where PID 1 does not reap orphans,
// they stay.
package upgrade

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Kind is why an upgrade failed.
type Kind uint8

const (
	// Internal: the supervisor could not prepare the upgrade (a pipe, a descriptor).
	Internal Kind = iota
	// Busy: another upgrade is in progress.
	Busy
	// Failed: the new binary could not start, exited, or said it could not go on.
	Failed
	// NotReady: the new binary was not ready within the upgrade timeout.
	NotReady
)

// Error is why an upgrade failed, in plain words.
type Error struct {
	Kind Kind
	Msg  string
}

// Errorf makes an *Error of kind.
func Errorf(kind Kind, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string { return e.Msg }

// Env is the operating system as an upgrade uses it.
type Env struct {
	// Kill sends sig to pid, or to the process group -pid.
	Kill func(pid int, sig syscall.Signal) error
	// Members returns the live processes of the process group pgid.
	Members func(pgid int) ([]int, error)
	// After is time.After; Sleep is time.Sleep.
	After func(time.Duration) <-chan time.Time
	Sleep func(time.Duration)
	// Now is time.Now.
	Now func() time.Time
	// Go runs f on a goroutine of its own.
	Go func(f func())
}

// OS is the real operating system.
var OS = Env{Kill: syscall.Kill, Members: GroupMembers, After: time.After, Sleep: time.Sleep, Now: time.Now,
	Go: func(f func()) { go f() }}

// Child is a started new binary, as Await watches it.
type Child struct {
	// Pid is its process id, and the id of its process group.
	Pid int
	// Line receives the first line it writes on the readiness pipe, trimmed, or "" when the pipe
	// closed without one.
	Line <-chan string
	// Exited receives the result of waiting for it.
	Exited <-chan error
}

// Outcome is how an upgrade ended: the new binary's pid and version when it is ready, else Err.
type Outcome struct {
	Pid     int
	Version string
	Err     error // an *Error
}

// GroupPoll is how often Await looks for the processes left of a failed upgrade.
const GroupPoll = 20 * time.Millisecond

// Await waits for c to be ready within timeout. When it is not, it ends c (SIGKILL, then waits
// for it) and sends SIGTERM to the rest of its group, and returns; the group's last members get
// SIGKILL after grace, from a goroutine of its own that logs on log.
func (e Env) Await(c Child, timeout, grace time.Duration, log hclog.Logger) Outcome {
	var out Outcome
	deadline := e.After(timeout)
	reaped := false // Exited has given its result
	select {
	case line := <-c.Line:
		switch {
		case strings.HasPrefix(line, "ready "):
			return Outcome{Pid: c.Pid, Version: strings.TrimPrefix(line, "ready ")}
		case strings.HasPrefix(line, "error: "):
			out.Err = Errorf(Failed, "the new binary failed: %s", strings.TrimPrefix(line, "error: "))
		default:
			// The pipe closed without a word: the process ended, or closed it and runs on.
			select {
			case err := <-c.Exited:
				reaped = true
				out.Err = Errorf(Failed, "the new binary exited before it was ready: %v", err)
			case <-deadline:
				out.Err = Errorf(NotReady, "the new binary closed its readiness pipe and was not ready within %v", timeout)
			}
		}
	case err := <-c.Exited:
		reaped = true
		out.Err = Errorf(Failed, "the new binary exited before it was ready: %v", err)
	case <-deadline:
		out.Err = Errorf(NotReady, "the new binary was not ready within %v", timeout)
	}
	_ = e.Kill(c.Pid, syscall.SIGKILL)
	_ = e.Kill(-c.Pid, syscall.SIGTERM) // ESRCH: it was alone and is gone
	if !reaped {
		<-c.Exited // SIGKILL ends it; Wait returns once it is reaped
	}
	e.Go(func() { e.ReapGroup(c.Pid, grace, log) })
	return out
}

// ReapGroup waits up to bound for process group pgid to have no live process, then kills what is
// left with SIGKILL and logs it.
func (e Env) ReapGroup(pgid int, bound time.Duration, log hclog.Logger) {
	deadline := e.Now().Add(bound)
	for {
		left, err := e.Members(pgid)
		if err != nil {
			log.Warn("cannot look for the processes of the failed upgrade; killing its process group", "pgid", pgid, "error", err)
			_ = e.Kill(-pgid, syscall.SIGKILL)
			return
		}
		if len(left) == 0 {
			log.Debug("every process of the failed upgrade has ended", "pgid", pgid)
			return
		}
		if e.Now().After(deadline) {
			_ = e.Kill(-pgid, syscall.SIGKILL)
			log.Warn("processes of the failed upgrade were still running; killed them", "pgid", pgid, "pids", fmt.Sprint(left), "waited", bound.String())
			return
		}
		e.Sleep(GroupPoll)
	}
}

// GroupMembers are the live processes of process group pgid, from /proc.
func GroupMembers(pgid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue // not a process
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // it ended meanwhile
		}
		if state, group, ok := parseProcStat(b); ok && group == pgid && state != 'Z' && state != 'X' {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// parseProcStat reads the state and the process group of /proc/PID/stat: "PID (COMM) STATE PPID
// PGRP ...", where COMM may hold spaces and parentheses, so the fields are counted from its last
// ')'. ok is false for anything else.
func parseProcStat(b []byte) (state byte, pgrp int, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 || len(f[0]) != 1 {
		return 0, 0, false
	}
	pgrp, err := strconv.Atoi(f[2])
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], pgrp, true
}
