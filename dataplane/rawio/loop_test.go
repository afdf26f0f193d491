package rawio

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// echo is a Handler that answers each line a client sends with the same line, running each
// connection that has something to do on a goroutine of its own that parks it when it has read
// everything, as the proxy does.
type echo struct {
	slots    chan struct{} // a token per connection held
	refused  atomic.Int64  // TakeSlot calls that said no
	readies  atomic.Int64
	running  atomic.Int64 // goroutines serving a connection now
	timeouts chan *LoopConn
	idle     time.Duration // read deadline of a parked connection; 0 for none
	wg       sync.WaitGroup
}

func newEcho(slots int) *echo {
	return &echo{slots: make(chan struct{}, slots), timeouts: make(chan *LoopConn, 16)}
}

func (e *echo) TakeSlot() bool {
	select {
	case e.slots <- struct{}{}:
		return true
	default:
		e.refused.Add(1)
		return false
	}
}

func (e *echo) ReturnSlot()                       { <-e.slots }
func (e *echo) AcceptFailed(error, time.Duration) {}

func (e *echo) Ready(c *LoopConn) {
	e.readies.Add(1)
	e.wg.Add(1)
	e.running.Add(1)
	go func() {
		defer e.wg.Done()
		defer e.running.Add(-1)
		e.serve(c)
	}()
}

// serve echoes what there is, byte for byte, then parks; a deadline that passed or the client's
// end closes the connection.
func (e *echo) serve(c *LoopConn) {
	buf := make([]byte, 512)
	// The deadline counts from the connection's start and from each answer, not from a hand-on.
	if c.Mark == 0 && e.idle > 0 {
		c.Mark = 1
		c.SetReadDeadline(time.Now().Add(e.idle))
	}
	for {
		var n int
		var rerr error
		parked, err := c.ReadOrPark(func(fd uintptr) bool {
			n, rerr = Read(fd, buf)
			return rerr != syscall.EAGAIN
		})
		if parked {
			return
		}
		if err == nil && rerr == nil && n > 0 {
			if _, err := c.Write(buf[:n]); err == nil {
				c.Mark = uint32(buf[0]) // what ExpireParked's tests pick by
				if e.idle > 0 {
					c.SetReadDeadline(time.Now().Add(e.idle))
				}
				continue
			}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			e.timeouts <- c
		}
		c.Release()
		<-e.slots
		return
	}
}

// startLoop runs a Loop with h over a new loopback listener, and ends it in Cleanup.
func startLoop(t *testing.T, h Handler) (*Loop, string) {
	t.Helper()
	ln := listener(t)
	l, err := NewLoop(ln, ln.Addr(), h)
	if err != nil {
		t.Fatal(err)
	}
	go l.Run()
	t.Cleanup(func() {
		l.CloseAccept()
		testutil.Receive(t, l.AcceptClosed(), wait, "the loop to stop accepting")
	})
	return l, ln.Addr().String()
}

func dialEcho(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(wait))
	return c, bufio.NewReader(c)
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, line string) {
	t.Helper()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatal(err)
	}
	got, err := r.ReadString('\n')
	if err != nil || got != line+"\n" {
		t.Fatalf("echo of %q: %q, %v", line, got, err)
	}
}

// TestLoopParkedConnectionsHoldNoGoroutine: connections that have been served and wait for more
// hold no goroutine, and each is served again when its client sends.
func TestLoopParkedConnectionsHoldNoGoroutine(t *testing.T) {
	h := newEcho(1000)
	_, addr := startLoop(t, h)
	const n = 200
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	for i := range n {
		conns[i], readers[i] = dialEcho(t, addr)
		roundTrip(t, conns[i], readers[i], "hello")
	}
	testutil.WaitFor(t, wait, "every connection to park", func() bool { return h.running.Load() == 0 })
	if got := len(h.slots); got != n {
		t.Fatalf("%d connections held, want %d", got, n)
	}
	for i := range n {
		roundTrip(t, conns[i], readers[i], strings.Repeat("x", i+1))
	}
	testutil.WaitFor(t, wait, "every connection to park again", func() bool { return h.running.Load() == 0 })
	for _, c := range conns {
		c.Close()
	}
	testutil.WaitFor(t, wait, "every connection to be released", func() bool { return len(h.slots) == 0 })
	h.wg.Wait()
}

// TestLoopDeadlineOfParkedConnection: a parked connection whose read deadline passes is handed
// on, and its read reports the deadline; the client sees the close.
func TestLoopDeadlineOfParkedConnection(t *testing.T) {
	h := newEcho(10)
	h.idle = 50 * time.Millisecond
	_, addr := startLoop(t, h)
	c, r := dialEcho(t, addr)
	roundTrip(t, c, r, "once")
	testutil.Receive(t, h.timeouts, wait, "the parked connection's deadline")
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("client read after the deadline: %v, want EOF", err)
	}
	h.wg.Wait()
}

// TestLoopCloseWakesParked: Close from another goroutine hands a parked connection on, whose
// owner then sees the end and releases it.
func TestLoopCloseWakesParked(t *testing.T) {
	h := newEcho(10)
	var got atomic.Pointer[LoopConn]
	ready := make(chan struct{}, 1)
	wrap := &readyHook{echo: h, hook: func(c *LoopConn) {
		if got.CompareAndSwap(nil, c) {
			ready <- struct{}{}
		}
	}}
	_, addr := startLoop(t, wrap)
	c, r := dialEcho(t, addr)
	roundTrip(t, c, r, "x")
	testutil.Receive(t, ready, wait, "the connection")
	testutil.WaitFor(t, wait, "the connection to park", func() bool { return h.running.Load() == 0 })
	got.Load().Close()
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("client read after Close: %v, want EOF", err)
	}
	testutil.WaitFor(t, wait, "the connection to be released", func() bool { return len(h.slots) == 0 })
	h.wg.Wait()
}

// TestLoopExpireParked: ExpireParked hands the parked connections it picks by their mark on with
// their read deadline passed (they have none of their own here), and their owner closes them; the
// others stay parked, and are served when their client sends.
func TestLoopExpireParked(t *testing.T) {
	h := newEcho(10)
	l, addr := startLoop(t, h)
	const n = 3
	var readers []*bufio.Reader
	for range n {
		c, r := dialEcho(t, addr)
		roundTrip(t, c, r, "x")
		readers = append(readers, r)
	}
	kept, kr := dialEcho(t, addr)
	roundTrip(t, kept, kr, "kept")
	testutil.WaitFor(t, wait, "the connections to park", func() bool { return h.running.Load() == 0 })
	l.ExpireParked(func(mark uint32) bool { return mark != 'k' }) // the echo marks a connection with the first byte it echoed
	for range n {
		testutil.Receive(t, h.timeouts, wait, "a parked connection's deadline")
	}
	for _, r := range readers {
		if _, err := r.ReadByte(); err != io.EOF {
			t.Fatalf("client read after ExpireParked: %v, want EOF", err)
		}
	}
	roundTrip(t, kept, kr, "kept, and served again")
	select {
	case <-h.timeouts:
		t.Fatal("ExpireParked expired a connection that it did not pick")
	default:
	}
	kept.Close()
	testutil.WaitFor(t, wait, "every connection to be released", func() bool { return len(h.slots) == 0 })
	h.wg.Wait()
}

// TestLoopCloseParked: CloseParked closes the parked connections, and a connection that would wait
// afterwards is refused its park: ReadOrPark says closed, and its owner releases it.
func TestLoopCloseParked(t *testing.T) {
	h := newEcho(10)
	l, addr := startLoop(t, h)
	c, r := dialEcho(t, addr)
	roundTrip(t, c, r, "parked")
	testutil.WaitFor(t, wait, "the connection to park", func() bool { return h.running.Load() == 0 })
	l.CloseParked()
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("client read after CloseParked: %v, want EOF", err)
	}
	_, lr := dialEcho(t, addr) // sends nothing: its first read finds nothing, and it would park
	if _, err := lr.ReadByte(); err != io.EOF {
		t.Fatalf("client read after its connection could not park: %v, want EOF", err)
	}
	testutil.WaitFor(t, wait, "both connections to be released", func() bool { return len(h.slots) == 0 })
	h.wg.Wait()
}

type readyHook struct {
	*echo
	hook func(*LoopConn)
}

func (r *readyHook) Ready(c *LoopConn) { r.hook(c); r.echo.Ready(c) }

// TestLoopStopsAcceptingWithoutSlots: with no slot the loop leaves connections in the backlog,
// and takes them once Resume says a slot is free.
func TestLoopStopsAcceptingWithoutSlots(t *testing.T) {
	h := newEcho(1)
	l, addr := startLoop(t, h)
	c1, r1 := dialEcho(t, addr)
	roundTrip(t, c1, r1, "first")
	c2, r2 := dialEcho(t, addr) // the kernel completes the handshake; the loop does not accept it
	if _, err := io.WriteString(c2, "second\n"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, wait, "the loop to refuse a slot", func() bool { return h.refused.Load() > 0 })
	c2.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := r2.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a connection past the slots was answered: %v", err)
	}
	c1.Close()
	testutil.WaitFor(t, wait, "the first connection to be released", func() bool { return len(h.slots) == 0 })
	l.Resume()
	c2.SetReadDeadline(time.Now().Add(wait))
	got, err := r2.ReadString('\n')
	if err != nil || got != "second\n" {
		t.Fatalf("after Resume: %q, %v", got, err)
	}
	c2.Close()
	testutil.WaitFor(t, wait, "the second connection to be released", func() bool { return len(h.slots) == 0 })
	h.wg.Wait()
}

// TestLoopEndsAfterLastConnection: CloseAccept stops accepting at once (new connections are
// refused) while a connection accepted goes on; the loop ends when it is released.
func TestLoopEndsAfterLastConnection(t *testing.T) {
	h := newEcho(10)
	ln := listener(t)
	l, err := NewLoop(ln, ln.Addr(), h)
	if err != nil {
		t.Fatal(err)
	}
	go l.Run()
	c, r := dialEcho(t, ln.Addr().String())
	roundTrip(t, c, r, "before")
	l.CloseAccept()
	testutil.Receive(t, l.AcceptClosed(), wait, "the loop to stop accepting")
	if l.Err() != nil {
		t.Fatalf("Err after CloseAccept: %v", l.Err())
	}
	ln.Close()
	if nc, err := net.DialTimeout("tcp", ln.Addr().String(), wait); err == nil {
		nc.Close()
		t.Fatal("a connection was accepted by the kernel after CloseAccept and the listener's Close")
	}
	roundTrip(t, c, r, "after")
	select {
	case <-l.Done():
		t.Fatal("the loop ended while a connection was open")
	default:
	}
	c.Close()
	testutil.Receive(t, l.Done(), wait, "the loop to end")
	h.wg.Wait()
}

// TestLoopConnNetConn: a LoopConn's Read and Write wait through the loop, a write larger than the
// socket's buffers completes as the peer reads, and a deadline in the past (a poke) ends a
// blocked read at once.
func TestLoopConnNetConn(t *testing.T) {
	conns := make(chan *LoopConn, 1)
	h := &funcHandler{ready: func(c *LoopConn) { conns <- c }}
	_, addr := startLoop(t, h)
	client, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c := testutil.Receive(t, conns, wait, "the connection")
	defer c.Release()
	if got, want := c.RemoteAddr().String(), client.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr %s, want %s", got, want)
	}
	var nodelay int
	c.raw.Control(func(fd uintptr) { nodelay, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY) })
	if nodelay == 0 {
		t.Error("an accepted connection lacks TCP_NODELAY")
	}

	big := make([]byte, 8<<20)
	for i := range big {
		big[i] = byte(i)
	}
	written := make(chan error, 1)
	go func() {
		c.SetWriteDeadline(time.Now().Add(wait))
		_, err := c.Write(big)
		written <- err
	}()
	got := make([]byte, len(big))
	client.SetDeadline(time.Now().Add(wait))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if err := testutil.Receive(t, written, wait, "the write"); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != big[i] {
			t.Fatalf("byte %d: %d, want %d", i, got[i], big[i])
		}
	}

	read := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := c.Read(b[:])
		read <- err
	}()
	// Blocked yet or not, the read must end: the deadline is set from another goroutine.
	c.SetReadDeadline(time.Unix(1, 0))
	if err := testutil.Receive(t, read, wait, "the poked read"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("poked read: %v, want a deadline error", err)
	}
}

type funcHandler struct{ ready func(*LoopConn) }

func (f *funcHandler) TakeSlot() bool                    { return true }
func (f *funcHandler) ReturnSlot()                       {}
func (f *funcHandler) AcceptFailed(error, time.Duration) {}
func (f *funcHandler) Ready(c *LoopConn)                 { f.ready(c) }

// backoffEcho is echo that reports each AcceptFailed.
type backoffEcho struct {
	*echo
	failed chan time.Duration
}

func (b *backoffEcho) AcceptFailed(_ error, wait time.Duration) {
	select {
	case b.failed <- wait:
	default:
	}
}

// TestLoopBacksOffOutOfDescriptors: an accept that fails with EMFILE pauses accepting (reported,
// with the pause), and the connection is served once descriptors are there again.
func TestLoopBacksOffOutOfDescriptors(t *testing.T) {
	h := &backoffEcho{echo: newEcho(10), failed: make(chan time.Duration, 16)}
	_, addr := startLoop(t, h)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	// Room for the client's socket (and the descriptor ReadDir held), none for the accept.
	low := lim
	low.Cur = uint64(len(fds))
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer restore()
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	wait1 := testutil.Receive(t, h.failed, wait, "an accept to fail for want of descriptors")
	restore()
	if wait1 != acceptRetryMin {
		t.Errorf("first pause %v, want %v", wait1, acceptRetryMin)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(wait))
	roundTrip(t, c, bufio.NewReader(c), "served")
	c.Close()
	testutil.WaitFor(t, wait, "the connection to be released", func() bool { return len(h.slots) == 0 })
	h.wg.Wait()
}

// TestLoopIPv6Peer: a connection from [::1] knows its peer's address and port (from the raw
// sockaddr accept4 fills), over a *net.TCPListener.
func TestLoopIPv6Peer(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan *LoopConn, 1)
	l, err := NewLoop(ln.(*net.TCPListener), ln.Addr(), &funcHandler{ready: func(c *LoopConn) { conns <- c }})
	if err != nil {
		t.Fatal(err)
	}
	go l.Run()
	defer func() {
		l.CloseAccept()
		testutil.Receive(t, l.Done(), wait, "the loop to end")
	}()
	client, err := net.DialTimeout("tcp", ln.Addr().String(), wait)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c := testutil.Receive(t, conns, wait, "the connection")
	defer c.Release()
	if got, want := c.RemoteAddr().String(), client.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr %s, want %s", got, want)
	}
}
