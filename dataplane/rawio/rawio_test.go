package rawio

import (
	"bytes"
	"net"
	"syscall"
	"testing"
)

// socketPair returns the raw connections of both ends of a loopback TCP connection.
func socketPair(t *testing.T) (a, b syscall.RawConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c1, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c1.Close(); c2.Close() })
	a, _ = c1.(*net.TCPConn).SyscallConn()
	b, _ = c2.(*net.TCPConn).SyscallConn()
	return a, b
}

func TestReadWrite(t *testing.T) {
	a, b := socketPair(t)
	buf := make([]byte, 64)

	// Nothing sent yet: a non-blocking read says so instead of waiting.
	var n int
	var err error
	b.Control(func(fd uintptr) { n, err = Read(fd, buf) })
	if err != syscall.EAGAIN {
		t.Fatalf("read of an empty socket: n=%d err=%v, want EAGAIN", n, err)
	}

	a.Control(func(fd uintptr) { n, err = Write(fd, []byte("hello")) })
	if err != nil || n != 5 {
		t.Fatalf("write: n=%d err=%v", n, err)
	}
	// Wait for readability through the poller, then read raw.
	var got []byte
	if rerr := b.Read(func(fd uintptr) bool {
		n, err = Read(fd, buf)
		if err == syscall.EAGAIN {
			return false
		}
		got = buf[:n]
		return true
	}); rerr != nil || err != nil {
		t.Fatalf("read: %v %v", rerr, err)
	}
	if !bytes.Equal(got, []byte("hello")) {
		t.Fatalf("read %q, want hello", got)
	}
}

func TestZeroLength(t *testing.T) {
	a, _ := socketPair(t)
	var n int
	var err error
	a.Control(func(fd uintptr) { n, err = Write(fd, nil) })
	if err != nil || n != 0 {
		t.Fatalf("empty write: n=%d err=%v", n, err)
	}
}
