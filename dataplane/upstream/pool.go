package upstream

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/xlbproxy/xlb/dataplane/http1"
	"github.com/xlbproxy/xlb/dataplane/rawio"
)

// ReadBufferBytes is the size of each connection's read buffer.
const ReadBufferBytes = 32 << 10

// DialFunc opens a connection.
type DialFunc func(network, address string, timeout time.Duration) (net.Conn, error)

// Config is a pool's behaviour. The zero value of a field means its documented default.
type Config struct {
	// Address is the backend's host:port.
	Address string
	// IdleConnsMax bounds the idle connections kept. Zero keeps none.
	IdleConnsMax int
	// IdleTimeout closes a connection idle for longer. Zero means 60s.
	IdleTimeout time.Duration
	// ConnectTimeout bounds a connect: with TLS, the TCP connect and the handshake together. Zero
	// means 5s.
	ConnectTimeout time.Duration
	// Dial opens connections. Nil means net.DialTimeout.
	Dial DialFunc
	// TLS, when set, makes every connection TLS with this configuration (TLS.Config makes one).
	// NewPool uses a copy: with ServerName, when empty, set to the host of Address, and, unless
	// SessionTicketsDisabled, a ClientSessionCache of the pool's own when it has none. Nil means
	// plain TCP.
	TLS *tls.Config
}

// Pool is the idle connections to one backend.
type Pool struct {
	cfg   Config
	tls   *tls.Config // cfg.TLS as the pool uses it; nil for plain TCP
	stats tlsStats

	mu     sync.Mutex
	idle   []*Conn // a stack: the most recently used on top
	closed bool
}

// NewPool returns an empty pool.
func NewPool(cfg Config) *Pool {
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.Dial == nil {
		cfg.Dial = net.DialTimeout
	}
	return &Pool{cfg: cfg, tls: tlsConfig(cfg.TLS, cfg.Address), idle: make([]*Conn, 0, max(cfg.IdleConnsMax, 0))}
}

// Address is the backend's host:port.
func (p *Pool) Address() string { return p.cfg.Address }

// Get returns an idle connection, or, when there is none, ok == false and the caller dials with Dial.
// With check set, an idle connection whose backend has closed it or sent unasked bytes is closed and
// the next one tried.
func (p *Pool) Get(check bool) (c *Conn, ok bool) {
	now := time.Now()
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return nil, false
		}
		c = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if now.Sub(c.idleSince) > p.cfg.IdleTimeout || (check && !c.alive()) {
			c.Close()
			continue
		}
		c.Reused = true
		return c, true
	}
}

// Dial opens a new connection to the backend, and with TLS makes the handshake. A failed
// handshake's error names the address and the server name, and wraps crypto/tls's (a
// *tls.CertificateVerificationError when the backend's certificate was refused).
func (p *Pool) Dial() (*Conn, error) {
	start := time.Now()
	nc, err := p.cfg.Dial("tcp", p.cfg.Address, p.cfg.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	c := &Conn{Conn: nc, pool: p}
	c.DL.Conn = nc
	c.In.Buf = make([]byte, ReadBufferBytes)
	if p.tls != nil {
		if err := c.handshake(nc, start); err != nil {
			return nil, err
		}
		return c, nil
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		c.raw, _ = tc.SyscallConn()
		c.peekFn = c.peek
		c.exchangeFn = c.exchangeStep
		c.fillFn = c.fillStep
	}
	return c, nil
}

// Put returns c to the pool, or closes it when the pool is full or closed. c must have no unread
// input.
func (p *Pool) Put(c *Conn) {
	if c.In.Len() != 0 {
		panic("upstream: Put of a connection with unread input")
	}
	c.idleSince = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.cfg.IdleConnsMax {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// Reap closes the connections idle for longer than the idle timeout at now.
func (p *Pool) Reap(now time.Time) {
	var expired []*Conn
	p.mu.Lock()
	k := 0
	for _, c := range p.idle {
		if now.Sub(c.idleSince) > p.cfg.IdleTimeout {
			expired = append(expired, c)
			continue
		}
		p.idle[k] = c
		k++
	}
	clear(p.idle[k:])
	p.idle = p.idle[:k]
	p.mu.Unlock()
	for _, c := range expired {
		c.Close()
	}
}

// Idle is the number of idle connections held.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// Close closes the idle connections; connections handed out are closed when Put.
func (p *Pool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

// Conn is one connection to a backend with its read buffer.
type Conn struct {
	net.Conn
	// In holds bytes read from the backend and not yet used.
	In http1.Buffer
	// Reused says the connection came from the pool, so it served a request before.
	Reused bool
	// DL sets the connection's deadlines.
	DL Deadlines

	pool      *Pool
	idleSince time.Time
	tls       *tls.Conn       // the TLS connection, also in Conn; nil for plain TCP
	probe     *probeConn      // the TCP connection under tls, when it is one
	raw       syscall.RawConn // nil with TLS: reads and writes go through tls
	peekFn    func(fd uintptr)
	peekAlive bool
	peekByte  [1]byte

	// The state of WriteThenFill, kept here so that its callback is bound once.
	exchangeFn, fillFn  func(fd uintptr) bool
	xOut                []byte
	xWritten, xRead     int
	xWriteErr, xReadErr error
}

// WriteThenFill writes b and then waits for the backend's first answer bytes and reads them into In,
// in one pass through the runtime's poller: the read that would find nothing (the backend cannot
// have answered before the request went out) is skipped. The read deadline bounds the wait.
//
// written is how much of b went out. When the socket could not take all of b at once, it returns
// with written < len(b) and both errors nil: the caller writes the rest and reads as usual. A write
// error ends it with writeErr; a read error (io.EOF when the backend closed) with readErr.
func (c *Conn) WriteThenFill(b []byte) (written int, writeErr, readErr error) {
	if c.raw == nil {
		var n int
		var err error
		if c.probe != nil {
			// TLS over TCP: write, then wait until the answer can be read. Should the tls.Conn
			// hold bytes read before (unasked ones), they wait for the answer's arrival, as they
			// would have waited for the parse.
			n, err = c.probe.writeThenAwait(c.tls, b)
		} else {
			n, err = c.Conn.Write(b)
		}
		if err != nil {
			return n, err, nil
		}
		_, err = c.Fill()
		return n, nil, err
	}
	c.xOut, c.xWritten, c.xRead, c.xWriteErr, c.xReadErr = b, 0, -1, nil, nil
	err := c.raw.Read(c.exchangeFn)
	c.xOut = nil
	switch {
	case c.xWriteErr != nil:
		return c.xWritten, c.xWriteErr, nil
	case c.xWritten < len(b):
		return c.xWritten, nil, nil
	case err != nil:
		return c.xWritten, nil, err
	case c.xReadErr != nil:
		return c.xWritten, nil, c.xReadErr
	case c.xRead == 0:
		return c.xWritten, nil, io.EOF
	}
	return c.xWritten, nil, nil
}

// exchangeStep is WriteThenFill's callback: on its first call it writes, and asks to be called again
// when the socket is readable; then it reads.
func (c *Conn) exchangeStep(fd uintptr) bool {
	if c.xWritten < len(c.xOut) {
		for c.xWritten < len(c.xOut) {
			n, err := rawio.Write(fd, c.xOut[c.xWritten:])
			switch err {
			case nil:
				c.xWritten += n
				continue
			case syscall.EAGAIN:
				return true // the caller writes the rest the ordinary way
			}
			c.xWriteErr = err
			return true
		}
		return false // all written: wait until the answer can be read
	}
	return c.fillStep(fd)
}

// Fill reads once from the backend into In. Over TCP, with or without TLS, it returns bytes or
// an error, never both: with TLS, an error that comes with bytes (a close_notify right behind
// them) is the next Fill's.
func (c *Conn) Fill() (int, error) {
	if c.tls != nil {
		n, err := c.In.ReadOnce(c.tls)
		if n > 0 {
			return n, nil // a tls.Conn's read errors but timeouts are sticky: the next returns it again
		}
		return 0, err
	}
	if c.raw == nil {
		return c.In.ReadOnce(c.Conn)
	}
	c.xRead, c.xReadErr = -1, nil
	if err := c.raw.Read(c.fillFn); err != nil {
		return 0, err
	}
	switch {
	case c.xReadErr != nil:
		return 0, c.xReadErr
	case c.xRead == 0:
		return 0, io.EOF
	}
	return c.xRead, nil
}

// fillStep is Fill's callback.
func (c *Conn) fillStep(fd uintptr) bool {
	n, err := rawio.Read(fd, c.In.Space())
	switch err {
	case nil:
		c.In.W += n
		c.xRead = n
		return true
	case syscall.EAGAIN:
		return false
	}
	c.xReadErr = err
	return true
}

// alive peeks at the socket without blocking: a backend that closed the connection (EOF, reset) or
// sent bytes nobody asked for makes it unusable.
func (c *Conn) alive() bool {
	if c.tls != nil {
		return c.aliveTLS()
	}
	if c.raw == nil {
		return true
	}
	if err := c.raw.Control(c.peekFn); err != nil {
		return false
	}
	return c.peekAlive
}

func (c *Conn) peek(fd uintptr) {
	// syscall's Recvfrom, not unix's: the latter moves its address buffer to the heap.
	_, _, err := syscall.Recvfrom(int(fd), c.peekByte[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	c.peekAlive = err == syscall.EAGAIN
}

// Pool is the pool c belongs to.
func (c *Conn) Pool() *Pool { return c.pool }
