package rpc

import "testing"

// TestIsLocal: which addresses count as loopback, where plaintext is allowed.
func TestIsLocal(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7070": true, "[::1]:7070": true, "localhost:1": true, "unix:///run/x.sock": true,
		"0.0.0.0:7070": false, ":7070": false, "10.1.2.3:7070": false, "cp.example:7070": false, "[::]:1": false,
	} {
		if got := IsLocal(addr); got != want {
			t.Errorf("IsLocal(%q) = %v, want %v", addr, got, want)
		}
	}
}
