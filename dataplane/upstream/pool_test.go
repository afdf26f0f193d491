package upstream

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// backend is a TCP server on 127.0.0.1:0 that accepts connections and hands their server side to
// the test, which plays the backend by hand.
type backend struct {
	ln       net.Listener
	accepted chan net.Conn
	wg       sync.WaitGroup
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ln: ln, accepted: make(chan net.Conn, 64)}
	b.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted <- c
		}
	})
	t.Cleanup(func() {
		ln.Close()
		b.wg.Wait()
		close(b.accepted)
		for c := range b.accepted {
			c.Close()
		}
	})
	return b
}

// dial opens a pool connection and returns it with its server side.
func (b *backend) dial(t *testing.T, p *Pool) (*Conn, net.Conn) {
	t.Helper()
	c, err := p.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	select {
	case s := <-b.accepted:
		t.Cleanup(func() { s.Close() })
		if s.RemoteAddr().String() != c.LocalAddr().String() {
			t.Fatalf("accepted %v, dialled from %v", s.RemoteAddr(), c.LocalAddr())
		}
		return c, s
	case <-time.After(5 * time.Second):
		t.Fatal("the backend accepted nothing within 5s")
	}
	return nil, nil
}

// expectClosed waits (at most 5s) until the peer of server-side connection s closes it.
func expectClosed(t *testing.T, s net.Conn, what string) {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	n, err := s.Read(b[:])
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
	case err != nil:
		t.Fatalf("%s: want the pool to close the connection, read got %v", what, err)
	default:
		t.Fatalf("%s: want the pool to close the connection, read %d bytes", what, n)
	}
}

// waitReadable waits (at most 5s) until c has something to read, EOF or an error: what the
// backend did has reached this side's socket.
func waitReadable(t *testing.T, c net.Conn) {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err = unix.Poll(fds, 5000)
			if err != unix.EINTR {
				return
			}
		}
	})
	if err != nil || n != 1 {
		t.Fatalf("poll: n=%d err=%v: the backend's action did not reach the connection within 5s", n, err)
	}
}

// age makes every idle connection look idle since d ago.
func age(p *Pool, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.idle {
		c.idleSince = c.idleSince.Add(-d)
	}
}

// ageTop makes the most recently used idle connection look idle since d ago.
func ageTop(p *Pool, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.idle[len(p.idle)-1]
	c.idleSince = c.idleSince.Add(-d)
}

func newPool(b *backend, idleMax int, idleTimeout time.Duration) *Pool {
	return NewPool(Config{Address: b.ln.Addr().String(), IdleConnsMax: idleMax, IdleTimeout: idleTimeout})
}

func TestPoolLIFO(t *testing.T) {
	b := newBackend(t)
	p := newPool(b, 4, time.Minute)
	defer p.Close()
	var cs []*Conn
	for range 3 {
		c, _ := b.dial(t, p)
		if c.Reused {
			t.Fatal("a dialled connection says Reused")
		}
		cs = append(cs, c)
	}
	for _, c := range cs {
		p.Put(c)
	}
	if p.Idle() != 3 {
		t.Fatalf("Idle = %d after 3 Puts, want 3", p.Idle())
	}
	for i := 2; i >= 0; i-- {
		c, ok := p.Get(i%2 == 0) // with and without the check
		if !ok || c != cs[i] {
			t.Fatalf("Get: got %p ok=%v, want connection %d (%p): the most recently used first", c, ok, i, cs[i])
		}
		if !c.Reused {
			t.Fatal("a pooled connection does not say Reused")
		}
	}
	if c, ok := p.Get(true); ok || c != nil {
		t.Fatalf("Get on an empty pool: %p, %v", c, ok)
	}
}

func TestPoolIdleConnsMax(t *testing.T) {
	t.Run("bounded", func(t *testing.T) {
		b := newBackend(t)
		p := newPool(b, 2, time.Minute)
		defer p.Close()
		c1, _ := b.dial(t, p)
		c2, _ := b.dial(t, p)
		c3, s3 := b.dial(t, p)
		p.Put(c1)
		p.Put(c2)
		p.Put(c3)
		if p.Idle() != 2 {
			t.Fatalf("Idle = %d, want 2 (IdleConnsMax)", p.Idle())
		}
		expectClosed(t, s3, "Put past IdleConnsMax")
		if c, _ := p.Get(true); c != c2 {
			t.Fatalf("Get: want the second connection, still pooled")
		}
		if c, _ := p.Get(true); c != c1 {
			t.Fatalf("Get: want the first connection, still pooled")
		}
	})
	t.Run("zero keeps none", func(t *testing.T) {
		b := newBackend(t)
		p := newPool(b, 0, time.Minute)
		defer p.Close()
		c, s := b.dial(t, p)
		p.Put(c)
		if p.Idle() != 0 {
			t.Fatalf("Idle = %d, want 0", p.Idle())
		}
		expectClosed(t, s, "Put with IdleConnsMax 0")
	})
}

func TestPoolReap(t *testing.T) {
	b := newBackend(t)
	p := newPool(b, 4, time.Minute)
	defer p.Close()
	old, sOld := b.dial(t, p)
	young, _ := b.dial(t, p)
	p.Put(old)
	age(p, 2*time.Minute) // only old so far
	p.Put(young)

	p.Reap(time.Now())
	if p.Idle() != 1 {
		t.Fatalf("Idle = %d after Reap now, want 1 (the young connection)", p.Idle())
	}
	expectClosed(t, sOld, "Reap of a connection idle past IdleTimeout")

	p.Reap(time.Now().Add(30 * time.Second)) // young is idle 30s of its minute
	if p.Idle() != 1 {
		t.Fatalf("Idle = %d after Reap within the timeout, want 1", p.Idle())
	}
	p.Reap(time.Now().Add(2 * time.Minute))
	if p.Idle() != 0 {
		t.Fatalf("Idle = %d after Reap in the future, want 0", p.Idle())
	}
}

func TestPoolReapClosesAll(t *testing.T) {
	b := newBackend(t)
	p := newPool(b, 4, 10*time.Millisecond)
	defer p.Close()
	var servers []net.Conn
	for range 3 {
		c, s := b.dial(t, p)
		p.Put(c)
		servers = append(servers, s)
	}
	p.Reap(time.Now().Add(time.Second))
	if p.Idle() != 0 {
		t.Fatalf("Idle = %d, want 0", p.Idle())
	}
	for _, s := range servers {
		expectClosed(t, s, "Reap")
	}
}

func TestPoolGetSkipsExpired(t *testing.T) {
	for _, check := range []bool{false, true} {
		b := newBackend(t)
		p := newPool(b, 4, time.Minute)
		defer p.Close()
		fresh, _ := b.dial(t, p)
		stale, sStale := b.dial(t, p)
		p.Put(fresh)
		p.Put(stale)
		ageTop(p, 2*time.Minute) // stale, on top, is idle past the minute
		c, ok := p.Get(check)
		if !ok || c != fresh {
			t.Fatalf("Get(%v): got %p ok=%v, want the fresh connection %p under the expired one", check, c, ok, fresh)
		}
		expectClosed(t, sStale, "Get finding an expired connection")
		if p.Idle() != 0 {
			t.Fatalf("Idle = %d, want 0", p.Idle())
		}
	}
}

// TestPoolGetCheck has the backend spoil the connection on top of the pool; Get(true) must skip
// it, close it, and hand out the one below.
func TestPoolGetCheck(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, s net.Conn)
	}{
		{"backend closed (FIN)", func(t *testing.T, s net.Conn) { s.Close() }},
		{"backend reset (RST)", func(t *testing.T, s net.Conn) {
			s.(*net.TCPConn).SetLinger(0)
			s.Close()
		}},
		{"backend sent unsolicited bytes", func(t *testing.T, s net.Conn) {
			if _, err := s.Write([]byte("HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			p := newPool(b, 4, time.Minute)
			defer p.Close()
			good, _ := b.dial(t, p)
			bad, sBad := b.dial(t, p)
			p.Put(good)
			p.Put(bad)
			tc.spoil(t, sBad)
			waitReadable(t, bad.Conn)
			c, ok := p.Get(true)
			if !ok || c != good {
				t.Fatalf("Get(true): got %p ok=%v, want the live connection %p, not the spoiled %p", c, ok, good, bad)
			}
			if p.Idle() != 0 {
				t.Fatalf("Idle = %d, want 0", p.Idle())
			}
			if tc.name == "backend sent unsolicited bytes" {
				expectClosed(t, sBad, "Get(true) finding unsolicited bytes")
			}
			// The live connection still works both ways.
			p.Put(c)
			c, ok = p.Get(true)
			if !ok || c != good {
				t.Fatalf("Get(true) of the live connection again: got %p ok=%v", c, ok)
			}
		})
	}
}

func TestPoolClose(t *testing.T) {
	b := newBackend(t)
	p := newPool(b, 4, time.Minute)
	c1, s1 := b.dial(t, p)
	c2, s2 := b.dial(t, p)
	out, sOut := b.dial(t, p) // handed out while the pool closes
	p.Put(c1)
	p.Put(c2)
	p.Close()
	if p.Idle() != 0 {
		t.Fatalf("Idle = %d after Close, want 0", p.Idle())
	}
	expectClosed(t, s1, "Close")
	expectClosed(t, s2, "Close")
	if c, ok := p.Get(false); ok || c != nil {
		t.Fatalf("Get after Close: %p, %v", c, ok)
	}
	p.Put(out)
	if p.Idle() != 0 {
		t.Fatalf("Idle = %d after a Put on a closed pool, want 0", p.Idle())
	}
	expectClosed(t, sOut, "Put after Close")
}

func TestPoolPutWithUnreadInputPanics(t *testing.T) {
	b := newBackend(t)
	p := newPool(b, 4, time.Minute)
	defer p.Close()
	c, _ := b.dial(t, p)
	c.In.W = 1
	defer func() {
		if recover() == nil {
			t.Fatal("Put of a connection with unread input did not panic")
		}
	}()
	p.Put(c)
}

// TestPoolGetPutAllocs holds Get(true) and Put of a live pooled connection at zero allocations.
func TestPoolGetPutAllocs(t *testing.T) {
	b := newBackend(t)
	p := newPool(b, 4, time.Minute)
	defer p.Close()
	c, _ := b.dial(t, p)
	p.Put(c)
	allocs := testing.AllocsPerRun(1000, func() {
		c, ok := p.Get(true)
		if !ok {
			t.Fatal("Get(true) lost the live connection")
		}
		p.Put(c)
	})
	if allocs != 0 {
		t.Fatalf("%.2f allocations per Get(true)+Put, want 0", allocs)
	}
}
