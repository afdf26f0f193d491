package testutil

import (
	"net"
	"os/exec"
	"testing"
)

// LeftSocket makes a unix socket file at path that no one listens on: bound, then closed without
// removing it, as a process killed by SIGKILL leaves its sockets.
func LeftSocket(tb testing.TB, path string) {
	tb.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		tb.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
}

// ServedSocket listens on a unix socket at path, accepting and closing every connection, until the
// test ends.
func ServedSocket(tb testing.TB, path string) {
	tb.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// DeadPID is the PID of a process that has ended and been reaped: no process has it, until the
// kernel gives it out again.
func DeadPID(tb testing.TB) int {
	tb.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		tb.Fatal(err)
	}
	return cmd.Process.Pid
}
