package upgrade

import (
	"os/exec"
	"slices"
	"syscall"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		stat  string
		state byte
		pgrp  int
		ok    bool
	}{
		{"4242 (xlb) S 1 4242 4242 0 -1 4194560 ...", 'S', 4242, true},
		{"77 (sleep) Z 1 4242 4242 0", 'Z', 4242, true},
		{"78 (a b) (c)) R 77 4300 4242", 'R', 4300, true}, // a name with spaces and parentheses
		{"79 (x) S 1", 0, 0, false},                       // too short
		{"80 (x) SS 1 2", 0, 0, false},                    // not one state letter
		{"81 (x) S 1 y", 0, 0, false},                     // not a number
		{"82 x S 1 2", 0, 0, false},                       // no name in parentheses
		{"", 0, 0, false},
	}
	for _, tt := range tests {
		state, pgrp, ok := parseProcStat([]byte(tt.stat))
		if state != tt.state || pgrp != tt.pgrp || ok != tt.ok {
			t.Errorf("parseProcStat(%q) = %q, %d, %v; want %q, %d, %v", tt.stat, state, pgrp, ok, tt.state, tt.pgrp, tt.ok)
		}
	}
}

// TestGroupMembers: a process started in a group of its own is found in it, and once it has ended
// (and is reaped), nothing is.
func TestGroupMembers(t *testing.T) {
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	got, err := GroupMembers(pid)
	if err != nil || !slices.Equal(got, []int{pid}) {
		t.Errorf("GroupMembers(%d) = %v, %v; want [%d]", pid, got, err, pid)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if got, err := GroupMembers(pid); err != nil || len(got) != 0 {
		t.Errorf("GroupMembers(%d) after it ended = %v, %v; want none", pid, got, err)
	}
}
