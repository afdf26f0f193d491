package proxy

import (
	"net"
	"syscall"
	"time"

	"github.com/xlbproxy/xlb/dataplane/rawio"
)

// idleWorkersMax bounds the goroutines of the pool that runs loop connections that wait for one:
// a goroutine that would be one more ends (and its stack goes). Waiting needs no timer, which
// each connection served would have to move.
const idleWorkersMax = 64

// loopHandler is the rawio.Handler of one listener's loop.
type loopHandler struct {
	p   *Proxy
	set string
	ln  net.Listener
	l   *rawio.Loop
}

// loopListener is what Shutdown closes of a listener served by a loop: the listener and the
// loop's accepting.
type loopListener struct {
	net.Listener
	l *rawio.Loop
}

func (ll *loopListener) Close() error {
	ll.l.CloseAccept()
	return ll.Listener.Close()
}

// loopable returns the socket of ln when the proxy serves it from an event loop: with
// Config.EventLoop, a plain TCP listener (a TLS one keeps a goroutine per connection, crypto/tls's
// net.Conn).
func (p *Proxy) loopable(ln net.Listener) (syscall.Conn, bool) {
	if !p.cfg.EventLoop {
		return nil, false
	}
	switch l := ln.(type) {
	case *net.TCPListener:
		return l, true
	case *rawio.Listener:
		return l, true
	}
	return nil, false
}

// serveLoop is Serve for a listener that a loop serves: it returns once the loop accepts no more,
// while the loop goes on until its last connection closes.
func (p *Proxy) serveLoop(ln net.Listener, sc syscall.Conn, set string) error {
	h := &loopHandler{p: p, set: set, ln: ln}
	p.mu.Lock()
	if p.draining.Load() {
		p.mu.Unlock()
		ln.Close()
		return nil
	}
	l, err := rawio.NewLoop(sc, ln.Addr(), h)
	if err != nil {
		p.mu.Unlock()
		ln.Close()
		return err
	}
	h.l = l
	ll := &loopListener{Listener: ln, l: l}
	p.listeners[ll] = struct{}{}
	p.loops[h] = struct{}{}
	p.serveWG.Add(1)
	p.mu.Unlock()
	go func() {
		l.Run()
		p.mu.Lock()
		delete(p.loops, h) // its connections are gone: Shutdown has none to reach through it
		p.mu.Unlock()
	}()
	<-l.AcceptClosed()
	p.mu.Lock()
	delete(p.listeners, ll)
	p.mu.Unlock()
	p.serveWG.Done()
	return l.Err()
}

func (h *loopHandler) TakeSlot() bool {
	select {
	case h.p.connSlots <- struct{}{}:
		return true
	default:
	}
	h.p.paused.Store(true)
	h.p.acceptPaused(h.ln)
	// A connection that closed since the send above may have missed the flag: look again.
	select {
	case h.p.connSlots <- struct{}{}:
		return true
	default:
	}
	return false
}

func (h *loopHandler) ReturnSlot() { <-h.p.connSlots }

func (h *loopHandler) AcceptFailed(err error, wait time.Duration) {
	h.p.log.Warn("accept failed; backing off", "listener", h.ln.Addr().String(), "error", err, "backoff", wait)
}

// What a parked loop connection keeps of the proxy's state (rawio.LoopConn.Mark): none at all for
// a new one.
const (
	markParked   uint32 = 1 << iota // back from a park: its request wait goes on
	markDraining                    // the wait began as the proxy drained
)

// parkedBeforeDrain says a parked connection's wait began before the proxy drained.
func parkedBeforeDrain(mark uint32) bool { return mark&markDraining == 0 }

// Ready runs lc on a goroutine of the pool, which gives it the state of a connection (conn, by
// attach) that it holds only while it runs: a connection that parks gives its state back, so that
// one waiting for its client costs its LoopConn alone.
func (h *loopHandler) Ready(lc *rawio.LoopConn) {
	h.p.run(loopJob{lc, h.set})
}

// loopJob is a loop's connection to run, and the name of its listener's backend set.
type loopJob struct {
	lc  *rawio.LoopConn
	set string
}

// attach gives lc the state of a connection: a new one's (counted as one from then until it
// closes), or that of one back from a park, which resumes its wait for a request.
func (p *Proxy) attach(lc *rawio.LoopConn, set string) *conn {
	if lc.Mark&markParked == 0 {
		c := p.newConn(lc, set)
		c.lc = lc
		return c
	}
	c := p.takeConn(lc, set)
	c.lc = lc
	c.parked, c.parkedDraining = true, lc.Mark&markDraining != 0
	// Idle before it is found, so that a Shutdown that finds it wakes it.
	c.state.Store(stateIdle)
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	return c
}

// run hands j to a goroutine of the pool that waits for one, or to a new one.
func (p *Proxy) run(j loopJob) {
	select {
	case p.work <- j:
	default:
		go p.worker(j)
	}
}

// worker serves connections, one until it parks or closes, then the next it is given, until the
// proxy shuts down or idleWorkersMax others wait already. Its stack stays grown from one to the
// next.
func (p *Proxy) worker(j loopJob) {
	for {
		p.attach(j.lc, j.set).serve()
		if p.idleWorkers.Add(1) > idleWorkersMax {
			p.idleWorkers.Add(-1)
			return
		}
		select {
		case j = <-p.work:
			p.idleWorkers.Add(-1)
		case <-p.stop:
			p.idleWorkers.Add(-1)
			return
		}
	}
}

// resumeLoops lets the loops that stopped at ConnectionsMax accept again, after a connection closed.
func (p *Proxy) resumeLoops() {
	if !p.paused.Swap(false) {
		return
	}
	p.mu.Lock()
	for h := range p.loops {
		h.l.Resume()
	}
	p.mu.Unlock()
}
