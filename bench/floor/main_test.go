package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFloor: the floor answers keep-alive requests, pipelined ones in order, and closes after a
// request that asks it to.
func TestFloor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	lfd, err := listen(ap)
	if err != nil {
		t.Fatal(err)
	}
	go loop(lfd, response(100)) // runs until the test binary exits

	c, err := net.Dial("tcp", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	read := func(what string) *http.Response {
		t.Helper()
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || len(body) != 100 {
			t.Fatalf("%s: status %d, %d bytes, %v; want 200 and 100 bytes", what, resp.StatusCode, len(body), err)
		}
		return resp
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	read("a keep-alive request")
	io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	read("the first pipelined request")
	read("the second pipelined request")
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	read("a request asking to close")
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after Connection: close: read %d bytes, %v; want EOF", n, err)
	}
}

// TestFloorCutHead: a head that comes in two reads is answered once its end has come.
func TestFloorCutHead(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	c, buf, resp := &conn{fd: fds[0]}, make([]byte, readBuf), response(100)
	answer := func() string {
		b := make([]byte, 4096)
		n, err := unix.Read(fds[1], b)
		if err == unix.EAGAIN {
			return ""
		}
		return string(b[:max(n, 0)])
	}
	unix.Write(fds[1], []byte("GET / HTTP/1.1\r\nHo"))
	if !c.readable(buf, resp) || answer() != "" {
		t.Fatal("an answer, or a close, before the head's end")
	}
	unix.Write(fds[1], []byte("st: x\r\n\r\n"))
	if !c.readable(buf, resp) {
		t.Fatal("closed at the head's end")
	}
	if got := answer(); got != string(resp) {
		t.Fatalf("answer %q, want the response", got)
	}
}
