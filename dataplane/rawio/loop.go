package rawio

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A Loop serves the connections of one listening socket from an edge-triggered epoll instance of
// its own, so that a connection waiting for its client holds no goroutine: an idle keep-alive
// connection costs its LoopConn and whatever state its Handler keeps, not a goroutine and its
// stack. The Handler runs each connection that has something to do on a goroutine of its choosing
// (a pool that keeps their grown stacks), and that goroutine reads and writes it through the
// LoopConn, waiting (when it must) for the loop's word that the socket is ready.
//
// # What a connection costs
//
// accept4 (up to acceptBatch per readiness of the listener, with SOCK_NONBLOCK|SOCK_CLOEXEC and
// nothing set after: TCP_NODELAY is inherited from the listening socket), one epoll_ctl ADD,
// edge-triggered, for the connection's whole life, and close: a descriptor that no other holds
// leaves the epoll set when it closes, so there is no EPOLL_CTL_DEL. Against a goroutine per
// connection of Go's net package or os.NewFile, that saves the fcntl of os.NewFile, the poller's
// epoll_ctl DEL, a finalizer, and a new goroutine whose stack grows again for every connection.
//
// # The loop is a goroutine
//
// The epoll descriptor is itself registered with Go's poller: the loop's goroutine waits for it to
// become readable, then takes its events with a raw epoll_pwait of timeout 0, never blocking in
// the kernel and never spinning (it waits on the poller whenever a take found nothing, or fewer
// events than it could hold). It is not locked to an OS thread, on purpose: a locked thread
// blocked in epoll_wait holds no P, and every connection it hands on would have to wake another
// thread to run; as a goroutine, the loop and the goroutines it readies share the runtime's
// threads, on the P that has work.
//
// # Timers
//
// Each LoopConn has a runtime timer for its read deadline (armed when it parks or a read waits,
// and not again while the deadline stays: upstream.Deadlines moves one only by more than an
// eighth of its timeout), and one for writes made at the first write that waits. Go's timers are
// per-P heaps that cost nothing while they do not fire; a wheel of the loop's own would need the
// loop to wake on every tick.
//
// # Ownership
//
// A LoopConn is either parked (the loop's: an event or its deadline hands it to Handler.Ready) or
// running (one goroutine's, which may let a second read while it writes, as a request body
// streams). Only the running goroutine calls ReadOrPark and Release. Read waits and write waits
// are told apart; an event the loop reports while the connection runs wakes the waiter, or is kept
// for the next wait (a spurious wake-up costs one more non-blocking call that finds nothing).
type Loop struct {
	epfd int
	ef   *os.File // epfd, for Go's poller
	erc  syscall.RawConn
	// lnfd is the loop's own descriptor of the listening socket; -1 once closed.
	lnfd int
	// evfd is an eventfd through which other goroutines wake the loop (Resume, CloseAccept,
	// the last Release); -1 once the loop ended. evMu guards its closing.
	evfd int
	evMu sync.Mutex
	addr net.Addr
	h    Handler

	// conns is every LoopConn by slot (its epoll data); a slot whose connection was released is
	// reused by a later accept. Only the loop's goroutine grows it, under mu; it reads it without.
	conns []*LoopConn

	mu   sync.Mutex
	free []uint32 // released slots

	// closing says CloseParked was called: no connection parks any more.
	closing atomic.Bool

	live         atomic.Int64 // connections accepted and not released
	wantResume   atomic.Bool  // the handler has slots again: listen again
	closeAccept  atomic.Bool  // stop accepting
	acceptClosed chan struct{}
	done         chan struct{} // closed when the loop's goroutine has ended
	err          error         // what ended accepting, when not CloseAccept; set before acceptClosed closes

	listening bool          // the listener is in the epoll set
	backoff   time.Duration // the pause after the last accept that failed for want of resources
	events    [loopEvents]unix.EpollEvent
	sa        unix.RawSockaddrAny // the peer of the last accept4
}

// Handler is what a Loop calls. Its methods run on the loop's goroutine and must not block.
type Handler interface {
	// TakeSlot is called before each accept: false says no connection may be taken now, and the
	// loop stops accepting (leaving connections in the listen backlog, for other processes
	// sharing the socket) until Resume.
	TakeSlot() bool
	// ReturnSlot gives back a slot that TakeSlot gave and no connection took.
	ReturnSlot()
	// Ready hands on a connection that has something to do: a new one (nothing read yet), or a
	// parked one that has bytes, a closed peer, a passed deadline or a poke. From then on the
	// connection is running, and belongs to whatever goroutine Ready gives it to.
	Ready(c *LoopConn)
	// AcceptFailed is told of an accept that failed for want of resources (EMFILE, ENFILE,
	// ENOBUFS, ENOMEM), after which the loop stops accepting for wait: 5ms, doubled by each
	// such failure in a row up to 1s.
	AcceptFailed(err error, wait time.Duration)
}

const (
	// loopEvents is how many events one epoll_wait takes.
	loopEvents = 256
	// acceptBatch is how many connections one readiness of the listener accepts before the loop
	// serves the events of the others; the listener is level-triggered, so the rest stay
	// reported.
	acceptBatch = 64
	// acceptRetryMin and acceptRetryMax bound the pause after an accept that failed for want
	// of resources.
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
	// tagListener and tagEvent mark the listener's and the eventfd's epoll events; connections
	// carry their slot, below both.
	tagListener = ^uint32(0)
	tagEvent    = ^uint32(0) - 1
)

// NewLoop returns a loop that will accept from the listening socket of ln (a *Listener or a
// *net.TCPListener), whose address is addr, on a descriptor of its own: closing ln does not stop
// it; CloseAccept does. It sets TCP_NODELAY on the socket, for the connections to inherit. Run
// runs it.
func NewLoop(ln syscall.Conn, addr net.Addr, h Handler) (*Loop, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, err
	}
	var lnfd int
	if cerr := rc.Control(func(fd uintptr) {
		if lnfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); err == nil {
			err = unix.SetsockoptInt(lnfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
			if err != nil {
				unix.Close(lnfd)
			}
		}
	}); cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, os.NewSyscallError("listener", err)
	}
	l := &Loop{lnfd: lnfd, evfd: -1, addr: addr, h: h, acceptClosed: make(chan struct{}), done: make(chan struct{})}
	fail := func(op string, err error) (*Loop, error) {
		unix.Close(lnfd)
		if l.evfd >= 0 {
			unix.Close(l.evfd)
		}
		if l.ef != nil {
			l.ef.Close()
		}
		return nil, os.NewSyscallError(op, err)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fail("epoll_create1", err)
	}
	// Non-blocking, so that os.NewFile registers it with the poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return fail("epoll", err)
	}
	l.epfd = epfd
	l.ef = os.NewFile(uintptr(epfd), "epoll")
	if l.erc, err = l.ef.SyscallConn(); err != nil {
		return fail("epoll", err)
	}
	if l.evfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		l.evfd = -1
		return fail("eventfd", err)
	}
	if err := l.ctl(unix.EPOLL_CTL_ADD, l.evfd, unix.EPOLLIN|unix.EPOLLET, tagEvent); err != nil {
		return fail("epoll_ctl", err)
	}
	if err := l.listen(); err != nil {
		return fail("epoll_ctl", err)
	}
	return l, nil
}

// Addr is the listening socket's address.
func (l *Loop) Addr() net.Addr { return l.addr }

func (l *Loop) ctl(op, fd int, events uint32, tag uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(tag)}
	return unix.EpollCtl(l.epfd, op, fd, &ev)
}

// listen puts the listener in the epoll set: level-triggered, and exclusive, so that of the
// processes whose loops share the socket only one is woken per connection.
func (l *Loop) listen() error {
	if err := l.ctl(unix.EPOLL_CTL_ADD, l.lnfd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE, tagListener); err != nil {
		return err
	}
	l.listening = true
	return nil
}

// unlisten takes the listener out (an exclusive entry cannot be modified, only removed).
func (l *Loop) unlisten() {
	if l.listening {
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, l.lnfd, nil)
		l.listening = false
	}
}

// wake makes the loop's goroutine look at its flags. After the loop ended it does nothing (the
// eventfd is closed, and its number may be another descriptor's).
func (l *Loop) wake() {
	var one = [8]byte{1}
	l.evMu.Lock()
	if l.evfd >= 0 {
		unix.Write(l.evfd, one[:])
	}
	l.evMu.Unlock()
}

func (l *Loop) closeEventfd() {
	l.evMu.Lock()
	unix.Close(l.evfd)
	l.evfd = -1
	l.evMu.Unlock()
}

// Resume says the handler has slots again, after a TakeSlot that said no.
func (l *Loop) Resume() {
	if l.wantResume.CompareAndSwap(false, true) {
		l.wake()
	}
}

// CloseAccept stops accepting and closes the loop's descriptor of the listening socket; the
// connections accepted go on, and the loop ends after the last is released. It returns at once;
// AcceptClosed is closed when the loop has stopped accepting.
func (l *Loop) CloseAccept() {
	if l.closeAccept.CompareAndSwap(false, true) {
		l.wake()
	}
}

// AcceptClosed is closed once the loop accepts no more, after CloseAccept or an accept error
// (Err).
func (l *Loop) AcceptClosed() <-chan struct{} { return l.acceptClosed }

// Err is the error that stopped accepting, nil after CloseAccept. Read it after AcceptClosed.
func (l *Loop) Err() error { return l.err }

// Done is closed when the loop has ended: accepting closed and every connection released.
func (l *Loop) Done() <-chan struct{} { return l.done }

// Run runs the loop until it is done (accepting closed, every connection released).
func (l *Loop) Run() {
	defer close(l.done)
	defer l.ef.Close()
	defer l.closeEventfd()
	var werr error
	// serve takes and serves events until it must wait (false) or the loop ends (true). It runs
	// inside one RawConn.Read, so that the poller's word that the epoll descriptor became readable
	// again while events were served is kept for the next wait (a new Read would reset it): when
	// an epoll_wait took fewer events than it could, and none of the level-triggered listener,
	// whose events stay ready without a new word, the wait can begin without an epoll_wait that
	// would find nothing.
	serve := func(fd uintptr) bool {
		for {
			n, err := epollWait(int(fd), l.events[:])
			if err != nil {
				werr = err
				return true
			}
			if n == 0 {
				return false
			}
			again := n == len(l.events)
			for i := range n {
				ev := &l.events[i]
				switch tag := uint32(ev.Fd); tag {
				case tagListener:
					again = true
					l.accept()
				case tagEvent:
					var b [8]byte
					unix.Read(l.evfd, b[:])
				default:
					l.conns[tag].event(ev.Events)
				}
			}
			if l.closeAccept.Load() && l.lnfd >= 0 {
				l.stopAccepting(nil)
			}
			if l.wantResume.Swap(false) && !l.listening && l.lnfd >= 0 {
				if err := l.listen(); err != nil {
					l.stopAccepting(os.NewSyscallError("epoll_ctl", err))
				}
			}
			if l.lnfd < 0 && l.live.Load() == 0 {
				return true
			}
			if !again {
				return false
			}
		}
	}
	if err := l.erc.Read(serve); err != nil {
		l.stopAccepting(err)
		return
	}
	if werr != nil {
		l.stopAccepting(os.NewSyscallError("epoll_wait", werr))
	}
}

// epollWait takes the events ready on epfd without waiting: a raw system call, as Read and Write
// are (rawio.go), since it never sleeps in the kernel.
func epollWait(epfd int, events []unix.EpollEvent) (int, error) {
	for {
		r, _, errno := syscall.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
		switch errno {
		case 0:
			return int(r), nil
		case syscall.EINTR:
			continue
		}
		return 0, errno
	}
}

// stopAccepting closes the listener's descriptor (once) and reports err.
func (l *Loop) stopAccepting(err error) {
	if l.lnfd < 0 {
		return
	}
	unix.Close(l.lnfd) // leaves the epoll set with it
	l.lnfd, l.listening = -1, false
	l.err = err
	close(l.acceptClosed)
}

// accept takes up to acceptBatch connections.
func (l *Loop) accept() {
	for range acceptBatch {
		if l.closeAccept.Load() {
			return
		}
		if !l.h.TakeSlot() {
			l.unlisten()
			// A slot freed between TakeSlot and here has called Resume, which the loop sees
			// after this round of events.
			return
		}
		fd, err := l.accept4()
		switch err {
		case nil:
			l.backoff = 0
		case syscall.EAGAIN:
			l.h.ReturnSlot()
			l.backoff = 0
			return
		case syscall.EINTR, syscall.ECONNABORTED:
			l.h.ReturnSlot()
			continue
		default:
			l.h.ReturnSlot()
			err = os.NewSyscallError("accept4", err)
			if TransientAccept(err) {
				// Out of descriptors or memory: stop accepting for a while rather than spin.
				l.unlisten()
				l.backoff = min(max(2*l.backoff, acceptRetryMin), acceptRetryMax)
				l.h.AcceptFailed(err, l.backoff)
				time.AfterFunc(l.backoff, l.Resume)
				return
			}
			l.stopAccepting(&net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: err})
			return
		}
		c := l.take()
		c.fd = fd
		c.remote = l.peer()
		c.state.Store(connRunning)
		if err := l.ctl(unix.EPOLL_CTL_ADD, fd, unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLET, c.slot); err != nil {
			unix.Close(fd)
			c.fd = -1
			c.state.Store(connFree)
			l.put(c)
			l.h.ReturnSlot()
			continue
		}
		l.live.Add(1)
		l.h.Ready(c)
	}
}

// TransientAccept reports whether an accept error passes once resources free up (EMFILE, ENFILE,
// ENOBUFS, ENOMEM): the loop, and the proxy's goroutine-per-connection accept, back off on it.
func TransientAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// take returns a free LoopConn: a released one, or a new one in a new slot.
func (l *Loop) take() *LoopConn {
	l.mu.Lock()
	if n := len(l.free); n > 0 {
		slot := l.free[n-1]
		l.free = l.free[:n-1]
		l.mu.Unlock()
		return l.conns[slot]
	}
	c := &LoopConn{loop: l, slot: uint32(len(l.conns)), fd: -1}
	c.raw.c = c
	c.timer = time.AfterFunc(time.Hour, c.fire)
	c.timer.Stop()
	l.conns = append(l.conns, c)
	l.mu.Unlock()
	return c
}

func (l *Loop) put(c *LoopConn) {
	l.mu.Lock()
	l.free = append(l.free, c.slot)
	l.mu.Unlock()
}

// accept4 accepts a connection, non-blocking and close-on-exec, with its peer's address in
// l.sa: a raw system call (the listener is non-blocking) that allocates nothing, where
// syscall.Accept4 makes a Sockaddr of every address.
func (l *Loop) accept4() (int, error) {
	n := uint32(unix.SizeofSockaddrAny)
	for {
		fd, _, errno := syscall.RawSyscall6(unix.SYS_ACCEPT4, uintptr(l.lnfd), uintptr(unsafe.Pointer(&l.sa)), uintptr(unsafe.Pointer(&n)), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return -1, errno
		}
		return int(fd), nil
	}
}

// peer is the address accept4 left in l.sa.
func (l *Loop) peer() netip.AddrPort {
	switch l.sa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(&l.sa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(&l.sa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// States of a LoopConn. A running connection whose client sent something (or closed) since its
// owner last parked it is pending: Park then leaves it running, since its owner may not have read
// those bytes.
const (
	connFree    int32 = iota // not in use
	connRunning              // a goroutine's
	connPending              // a goroutine's, with a read event since
	connParked               // the loop's
)

// deadlinePoked is a deadline set in the past by another goroutine to wake a waiter.
const deadlinePoked = 1

// LoopConn is a connection of a Loop. It is a net.Conn whose Read and Write wait through the loop,
// and a syscall.Conn whose RawConn's Read and Write do (for the raw calls of this package).
type LoopConn struct {
	loop  *Loop
	slot  uint32
	fd    int
	state atomic.Int32
	// remote is the peer's address; a net.Addr of it is made only when asked for.
	remote netip.AddrPort
	// rwait and wwait are the goroutines waiting to read and to write, each by a waiter of its
	// own; wready says the socket reported room to write since the last write wait began (a
	// read event since the owner last read is the state connPending). A connection holds no
	// channel: a parked one has no waiter at all.
	rwait, wwait atomic.Pointer[waiter]
	wready       atomic.Bool
	// rdl and wdl are the read and write deadlines in Unix nanoseconds, 0 for none.
	rdl, wdl atomic.Int64
	// aborted says Close was called: waits fail, and the owner should release.
	aborted atomic.Bool
	// timer fires at the read deadline that a read wait or Park armed (rarmed, 0 for none);
	// wtimer, made at the first write that waits (and kept by the slot), at the write deadline
	// (warmed). A deadline that does not move (upstream.Deadlines moves one only by more than an
	// eighth) is not armed again. The read side's belong to whoever reads (the owner, or a pump
	// it started); the write side's to whoever writes.
	timer, wtimer  *time.Timer
	rarmed, warmed int64
	// Mark is the handler's, and all it keeps of a parked connection: a connection waiting for
	// its client holds no state of the handler's, whose Ready tells a new connection (Mark 0) from
	// one back from a park by it. Release sets it to 0.
	Mark uint32
	raw  loopRaw
}

// event is the loop's: ev happened on the socket.
func (c *LoopConn) event(ev uint32) {
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.wready.Store(true)
		c.wwait.Load().wake()
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) == 0 {
		return
	}
	for {
		switch s := c.state.Load(); s {
		case connParked:
			if c.state.CompareAndSwap(connParked, connRunning) {
				c.loop.h.Ready(c)
				return
			}
		case connRunning:
			if c.state.CompareAndSwap(connRunning, connPending) {
				c.rwait.Load().wake()
				return
			}
		case connPending:
			c.rwait.Load().wake()
			return
		default:
			return // released
		}
	}
}

// waiter is how a goroutine waits for a LoopConn: a channel of one, from a pool, published in
// rwait or wwait while it waits.
type waiter struct{ ch chan struct{} }

var waiters = sync.Pool{New: func() any { return &waiter{ch: make(chan struct{}, 1)} }}

// wake wakes w's goroutine, or its next wait (which then looks again for nothing: harmless).
// A nil w is no one.
func (w *waiter) wake() {
	if w == nil {
		return
	}
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// fire is the read timer's: the read deadline may have passed.
func (c *LoopConn) fire() {
	if c.state.Load() == connParked {
		if d := c.rdl.Load(); d != 0 && d <= time.Now().UnixNano() && c.state.CompareAndSwap(connParked, connRunning) {
			c.loop.h.Ready(c)
		}
		return
	}
	c.rwait.Load().wake()
}

// fireWrite is the write timer's.
func (c *LoopConn) fireWrite() { c.wwait.Load().wake() }

// poke wakes whoever waits, or hands a parked connection on. The caller has stored what the
// waiter is to see (a deadline passed, aborted) before.
func (c *LoopConn) poke() {
	if c.state.Load() == connParked && c.state.CompareAndSwap(connParked, connRunning) {
		c.loop.h.Ready(c)
		return
	}
	c.rwait.Load().wake()
	c.wwait.Load().wake()
}

// arm sets t to fire at d, unless it is set for d already.
func arm(t *time.Timer, armed *int64, d int64) {
	if *armed != d {
		*armed = d
		t.Reset(time.Duration(d - time.Now().UnixNano()))
	}
}

// ReadOrPark calls f, which reads (as for RawConn.Read), and when it finds nothing to read gives
// the connection back to the loop until its client sends something or closes, or its read
// deadline passes: then Handler.Ready hands it on again, and its new owner calls ReadOrPark again.
// parked says it did; the caller must not use the connection afterwards. Otherwise f returned
// true, or err is the read deadline passed (os.ErrDeadlineExceeded) or a Close (net.ErrClosed).
func (c *LoopConn) ReadOrPark(f func(fd uintptr) bool) (parked bool, err error) {
	for !f(uintptr(c.fd)) {
		if c.aborted.Load() || c.loop.closing.Load() {
			return false, net.ErrClosed
		}
		d := c.rdl.Load()
		if d != 0 && d <= time.Now().UnixNano() {
			return false, os.ErrDeadlineExceeded
		}
		if c.park(d) {
			return true, nil
		}
	}
	return false, nil
}

// park parks a connection whose read deadline is d (0 for none), unless the client sent something
// since its owner last read: then it stays the caller's, which should read again.
func (c *LoopConn) park(d int64) bool {
	if d != 0 {
		arm(c.timer, &c.rarmed, d)
	}
	if !c.state.CompareAndSwap(connRunning, connParked) {
		// Pending: an event came while the connection ran, and the loop, which saw it running,
		// will not hand it on.
		c.state.Store(connRunning)
		return false
	}
	// A timer that fired, or a deadline set in the past (by another goroutine, whose poke saw the
	// connection running), before the connection was parked woke no one: take it back if so, or
	// if it was closed meanwhile, to see that. The deadline is loaded again: poke stores it before
	// it looks at the state, which the swap above stored before this looks at the deadline.
	if d := c.rdl.Load(); (d != 0 && d <= time.Now().UnixNano() || c.aborted.Load() || c.loop.closing.Load()) && c.state.CompareAndSwap(connParked, connRunning) {
		return false
	}
	return true
}

// ExpireParked ends the wait of every parked connection whose Mark which accepts, as its read
// deadline passing would: it sets the deadline in the past and hands the connection on
// (Handler.Ready). Any goroutine may call it. A connection parked after it is not touched.
func (l *Loop) ExpireParked(which func(mark uint32) bool) {
	l.eachParked(which, func(c *LoopConn) { c.rdl.Store(deadlinePoked) })
}

// CloseParked closes every parked connection, as Close would, and refuses every park from then
// on: ReadOrPark returns net.ErrClosed instead. Any goroutine may call it; it is the last resort
// of a shutdown whose time ran out, and the loop ends once the owners have released them.
func (l *Loop) CloseParked() {
	l.closing.Store(true)
	l.eachParked(nil, func(c *LoopConn) {
		c.aborted.Store(true)
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
	})
}

// eachParked takes each parked connection whose Mark which accepts (all, for a nil which) from
// the loop, calls f on it, and hands it on. Taken, it is the caller's: its descriptor stays open,
// and its state is the caller's to change; its Mark, written by its last owner before it parked,
// is read once it is taken.
func (l *Loop) eachParked(which func(mark uint32) bool, f func(c *LoopConn)) {
	l.mu.Lock()
	conns := l.conns
	l.mu.Unlock()
	for _, c := range conns {
		if c.state.Load() != connParked || !c.state.CompareAndSwap(connParked, connRunning) {
			continue
		}
		if which != nil && !which(c.Mark) {
			// Not this one: give it back, unless it was sent something or closed meanwhile (the
			// loop, which saw it running, handed it on to no one).
			if !c.park(c.rdl.Load()) {
				l.h.Ready(c)
			}
			continue
		}
		f(c)
		l.h.Ready(c)
	}
}

// Release closes the connection (without EPOLL_CTL_DEL: the descriptor leaves the epoll set as it
// closes) and gives its slot back to the loop. Only the owner calls it, once; the LoopConn is not
// to be used afterwards.
func (c *LoopConn) Release() {
	c.timer.Stop()
	if c.wtimer != nil {
		c.wtimer.Stop()
	}
	c.Mark = 0
	c.state.Store(connFree)
	unix.Close(c.fd)
	c.fd = -1
	c.rdl.Store(0)
	c.wdl.Store(0)
	c.rarmed, c.warmed = 0, 0
	c.wready.Store(false)
	c.aborted.Store(false)
	l := c.loop
	l.put(c)
	if l.live.Add(-1) == 0 && l.closeAccept.Load() {
		l.wake() // the last one: the loop may end
	}
}

// wait waits to read (or, with write, to write): for a word from the loop (or one that came
// already: the pending state, wready), a poke, or the side's timer firing at its deadline; and
// reports a deadline that passed (os.ErrDeadlineExceeded) or a Close (net.ErrClosed). nil means
// look again. The waiter is published before the word, the deadline and aborted are looked at,
// as the loop, the timer and poke store those before they look for a waiter: no word is lost.
func (c *LoopConn) wait(write bool) error {
	slot, dl, t, armed := &c.rwait, &c.rdl, c.timer, &c.rarmed
	if write {
		if c.wtimer == nil { // a connection whose writes never wait has none
			c.wtimer = time.AfterFunc(time.Hour, c.fireWrite)
			c.wtimer.Stop()
		}
		slot, dl, t, armed = &c.wwait, &c.wdl, c.wtimer, &c.warmed
	}
	w := waiters.Get().(*waiter)
	slot.Store(w)
	err := c.block(w, write, dl, t, armed)
	slot.Store(nil)
	select { // a word that came as the wait ended would wake the waiter's next user for nothing
	case <-w.ch:
	default:
	}
	waiters.Put(w)
	return err
}

func (c *LoopConn) block(w *waiter, write bool, dl *atomic.Int64, t *time.Timer, armed *int64) error {
	if c.aborted.Load() {
		return net.ErrClosed
	}
	if write && c.wready.Swap(false) || !write && c.state.CompareAndSwap(connPending, connRunning) {
		return nil // the socket reported since the caller last tried
	}
	if d := dl.Load(); d != 0 {
		if d <= time.Now().UnixNano() {
			return os.ErrDeadlineExceeded
		}
		arm(t, armed, d)
	}
	<-w.ch
	if c.aborted.Load() {
		return net.ErrClosed
	}
	return nil
}

// RemoteAddr is the client's address, as accept4 gave it.
func (c *LoopConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.remote) }

// AddrPort is the client's address without an allocation.
func (c *LoopConn) AddrPort() netip.AddrPort { return c.remote }

// LocalAddr asks the kernel (getsockname).
func (c *LoopConn) LocalAddr() net.Addr {
	sa, err := unix.Getsockname(c.fd)
	if err != nil {
		return nil
	}
	a, _ := tcpAddr(sa)
	return a
}

// Read reads, waiting through the loop.
func (c *LoopConn) Read(p []byte) (int, error) {
	var n int
	var err error
	if werr := c.raw.Read(func(fd uintptr) bool {
		n, err = Read(fd, p)
		return err != syscall.EAGAIN
	}); werr != nil {
		return 0, werr
	}
	if err != nil {
		return 0, os.NewSyscallError("read", err)
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, waiting through the loop.
func (c *LoopConn) Write(p []byte) (int, error) {
	done := 0
	var err error
	if werr := c.raw.Write(func(fd uintptr) bool {
		for done < len(p) {
			var n int
			n, err = Write(fd, p[done:])
			if err == syscall.EAGAIN {
				err = nil
				return false
			}
			if err != nil {
				return true
			}
			done += n
		}
		return true
	}); werr != nil {
		return done, werr
	}
	if err != nil {
		return done, os.NewSyscallError("write", err)
	}
	return done, nil
}

// Close aborts the connection, from any goroutine: its waits fail, its socket is shut down both
// ways (so that its peer sees the end at once), and a parked connection is handed on to see it.
// The descriptor stays open until its owner calls Release, so that no other connection can take
// its number while the owner still uses it.
func (c *LoopConn) Close() error {
	if c.aborted.Swap(true) {
		return nil
	}
	unix.Shutdown(c.fd, unix.SHUT_RDWR)
	c.poke()
	return nil
}

// CloseWrite shuts the sending side down: the peer reads end of file, and can still send.
func (c *LoopConn) CloseWrite() error {
	return os.NewSyscallError("shutdown", unix.Shutdown(c.fd, unix.SHUT_WR))
}

func (c *LoopConn) SetDeadline(t time.Time) error {
	c.setDeadline(&c.rdl, t)
	c.setDeadline(&c.wdl, t)
	return nil
}

func (c *LoopConn) SetReadDeadline(t time.Time) error  { c.setDeadline(&c.rdl, t); return nil }
func (c *LoopConn) SetWriteDeadline(t time.Time) error { c.setDeadline(&c.wdl, t); return nil }

// setDeadline sets dl to t. A deadline already passed wakes a waiter at once (another goroutine's
// poke); a later one is looked at when the current wait's timer fires.
func (c *LoopConn) setDeadline(dl *atomic.Int64, t time.Time) {
	if t.IsZero() {
		dl.Store(0)
		return
	}
	d := t.UnixNano()
	if d <= deadlinePoked {
		d = deadlinePoked
	}
	dl.Store(d)
	if d <= time.Now().UnixNano() {
		c.poke()
	}
}

// SyscallConn gives the RawConn whose Read and Write wait through the loop.
func (c *LoopConn) SyscallConn() (syscall.RawConn, error) { return &c.raw, nil }

// loopRaw is a LoopConn's syscall.RawConn.
type loopRaw struct{ c *LoopConn }

func (r *loopRaw) Control(f func(fd uintptr)) error { f(uintptr(r.c.fd)); return nil }

// Read calls f until it returns true, waiting for the loop's word (or the read deadline) each
// time it returns false.
func (r *loopRaw) Read(f func(fd uintptr) bool) error {
	c := r.c
	for !f(uintptr(c.fd)) {
		if err := c.wait(false); err != nil {
			return err
		}
	}
	return nil
}

// Write is Read for writes.
func (r *loopRaw) Write(f func(fd uintptr) bool) error {
	c := r.c
	for !f(uintptr(c.fd)) {
		if err := c.wait(true); err != nil {
			return err
		}
	}
	return nil
}
