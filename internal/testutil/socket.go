package testutil

import (
	"net"
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
