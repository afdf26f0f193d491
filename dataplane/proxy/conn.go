package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/balance/sticky"
	"github.com/xlbproxy/xlb/dataplane/http1"
	"github.com/xlbproxy/xlb/dataplane/rawio"
	"github.com/xlbproxy/xlb/dataplane/upstream"
)

const (
	// clientBufferBytes is the read buffer of a client connection while a request is read. It holds a
	// whole request head, so HeaderBytesMax is at most clientBufferBytesMax.
	clientBufferBytes    = 64 << 10
	clientBufferBytesMax = clientBufferBytes - 1024
	// outBufferBytes is the initial output buffer; it grows to hold a replayable request.
	outBufferBytes = 8 << 10
	// outBufferKeepMax is the largest output buffer put back into the pool.
	outBufferKeepMax = 256 << 10
)

var (
	inPool  = sync.Pool{New: func() any { b := make([]byte, clientBufferBytes); return &b }}
	outPool = sync.Pool{New: func() any { b := make([]byte, 0, outBufferBytes); return &b }}
)

// Connection states, for Shutdown: an idle connection waits for the first byte of a request.
const (
	stateActive int32 = iota
	stateIdle
)

// conn is one client connection and the state of the request on it. One goroutine owns it, except
// that while a request body streams, the pump goroutine owns in and reads from nc.
type conn struct {
	p   *Proxy
	nc  net.Conn
	dl  upstream.Deadlines // the read side belongs to the pump while it runs
	raw syscall.RawConn
	// lc is nc when an event loop serves it (loop.go), nil otherwise. parked says the connection
	// is back from a park on its loop, in the middle of its wait for a request; parkedDraining
	// that the wait began as the proxy drained.
	lc             *rawio.LoopConn
	parked         bool
	parkedDraining bool
	// tls is nc when its listener terminates TLS (a tls.NewListener's), nil for plain TCP: the
	// proxy reads and writes it through its own Read and Write (raw is nil), and its requests go
	// to the backend with X-Forwarded-Proto https.
	tls *tls.Conn
	// readFn and writeFn are c.rawRead and c.rawWrite, bound once: passing a method value allocates.
	readFn   func(fd uintptr) bool
	writeFn  func(fd uintptr) bool
	wbuf     []byte // what rawWrite has left to write
	wErr     error
	clientIP []byte
	// clientAddr[:clientAddrLen] is the client's IP address, 4 bytes or 16: what maglev hashes
	// on client_address.
	clientAddr    [16]byte
	clientAddrLen int
	// outFn is c.maglevOut, bound once.
	outFn func(i int) bool
	// trusted says the client is in Config.TrustedProxies.
	trusted bool
	setName string
	state   atomic.Int32

	// tbl and set cache the backend set of the table last seen.
	tbl *routing
	set *set

	// active is the backend connection of the exchange in flight, for Shutdown to cut at its deadline.
	active atomic.Pointer[upstream.Conn]

	in        http1.Buffer
	inPtr     *[]byte
	inRelease bool // rawRead may hand in's buffer back while it waits
	readN     int
	readErr   error

	outPtr *[]byte
	out    []byte
	hdrs   *headerArrays

	// inflight is the state of the request in progress, taken with the first bytes of a request
	// and given back to its pool when the connection goes idle (as the buffers are): an idle
	// connection keeps only what identifies it.
	*inflight

	// pumpStop tells the pump to stop reading the client.
	pumpStop atomic.Bool

	// Health (when the proxy follows a region). waitingSlot is the health slot + 1 of the backend
	// whose response head the attempt waits for, when it could be sent again (abandonable); another
	// goroutine that sees that backend go out sets abandoned and pokes the wait.
	waitingSlot atomic.Uint32
	abandoned   atomic.Bool
}

// inflight is the state of one request and its response on a connection (conn embeds it).
type inflight struct {
	// req's slices point into in and are valid only until the body is read; method (and, with an
	// access log, target and host) are copies that last the whole exchange.
	req        http1.Request
	method     []byte
	target     []byte
	host       []byte
	idempotent bool
	// upgrade is the request's Upgrade offer cut to the protocols Config.UpgradeProtocols allows:
	// empty when the request is not one to tunnel.
	upgrade []byte
	resp    http1.Response
	dec     http1.ChunkedDecoder // the request body's, owned by the pump while it runs
	rdec    http1.ChunkedDecoder // the response body's

	// The request body that streams on after the first attempt was sent.
	bodyLeft int64      // Content-Length bytes not yet read from the client
	pumpBuf  []byte     // re-encoding buffer of a streamed chunked body
	pumpDone chan error // the pump's result
	pumpErr  error
	// pumpFromClient says the pump's error, if any, came from the client side.
	pumpFromClient bool

	tried balance.Tried // the backends the current request tried; here, not on the stack, since Pick takes it

	// Affinity of the current request (affinity.go). stickyOn is its set's cookie, nil without
	// one; pinned the backend its valid cookie names, when that may take it, and pinFresh that the
	// cookie need not be set again; hashed says the request has its maglev set's key, hashKey its
	// hash. cookieID is Decode's buffer.
	stickyOn *stickySet
	pinned   *backend
	pinFresh bool
	hashed   bool
	hashKey  uint64
	cookieID []byte

	// abandonable says the wait for the response head may be cut (waitingSlot). healthDone says
	// the attempt's outcome was counted; trialOn that the attempt is the trial of offer trialSeq.
	abandonable bool
	healthDone  bool
	// tlsFailed says the last attempt was not sent because its TLS handshake failed: answered
	// 502 (the backend is there, and refused or was refused), not 503.
	tlsFailed bool
	trialOn   bool
	trialSeq  uint32

	// What the access log and the retry rules need to know about the current request.
	started      time.Time
	attempts     int
	backend      *backend
	bytesOut     int64
	headerAt     time.Time // when the response head of the attempt in progress arrived
	status       int
	forceStop    bool // close the client connection after this request
	keepUpstream bool // the backend connection can serve another request
}

// newConn returns the state of a new client connection, reusing that of a closed one when it can:
// a connection per request must cost little more than the accept. The proxy counts it from then
// until it closes.
func (p *Proxy) newConn(nc net.Conn, setName string) *conn {
	c := p.takeConn(nc, setName)
	// A connection accepted as the drain began is served like an idle one: its first request,
	// if it comes within drainIdleGrace, is answered with Connection: close. Shutdown waits for
	// every Serve loop to end before it waits for the connections, so this Add never races its Wait.
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.connsWG.Add(1)
	p.mu.Unlock()
	return c
}

// takeConn returns the state of a connection of nc, from the pool when it can.
func (p *Proxy) takeConn(nc net.Conn, setName string) *conn {
	c, _ := p.connPool.Get().(*conn)
	if c == nil {
		c = &conn{p: p}
		c.readFn = c.rawRead
		c.writeFn = c.rawWrite
		c.outFn = c.maglevOut
	}
	c.nc, c.setName = nc, setName
	c.dl = upstream.Deadlines{Conn: nc}
	c.clientIP = c.clientIP[:0]
	c.tls, _ = nc.(*tls.Conn)
	// A *net.TCPConn, or a *rawio.Conn of a worker's listener.
	if sc, ok := nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	c.trusted, c.clientAddrLen = false, 0
	var ap netip.AddrPort
	if lc, ok := nc.(*rawio.LoopConn); ok {
		ap = lc.AddrPort()
	} else if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	}
	if ap.IsValid() {
		ip := ap.Addr().Unmap()
		c.clientIP = ip.AppendTo(c.clientIP)
		if ip.Is4() {
			a := ip.As4()
			c.clientAddrLen = copy(c.clientAddr[:], a[:])
		} else {
			c.clientAddr, c.clientAddrLen = ip.As16(), 16
		}
		for _, pr := range p.cfg.TrustedProxies {
			if pr.Contains(ip) {
				c.trusted = true
				break
			}
		}
	}
	return c
}

// wakeIfIdle makes an idle connection's read return, so that it sees the proxy draining. p.mu held.
func (c *conn) wakeIfIdle() {
	if c.state.Load() == stateIdle {
		c.dl.PokeRead()
	}
}

func (c *conn) close() {
	if c.lc != nil {
		c.lc.Release()
	} else {
		c.nc.Close()
	}
	p := c.p
	c.drop()
	<-p.connSlots
	p.resumeLoops()
	p.connsWG.Done()
}

// drop gives back the connection's state, which the proxy no longer finds: as it closes, or as it
// parks on its loop (which has it attached again when its client sends). It does not touch c.lc.
func (c *conn) drop() {
	c.releaseIn()
	c.releaseOut()
	p := c.p
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.nc, c.raw, c.lc, c.tls, c.dl, c.tbl, c.set = nil, nil, nil, nil, upstream.Deadlines{}, nil, nil
	c.parked, c.parkedDraining = false, false
	c.releaseHeaders()
	c.releaseInflight()
	c.state.Store(stateActive)
	p.connPool.Put(c)
}

func (c *conn) releaseIn() {
	if c.inPtr != nil {
		inPool.Put(c.inPtr)
		c.inPtr, c.in = nil, http1.Buffer{}
	}
}

// headerArrays are the parsed-field arrays of one exchange; like the buffers, an idle connection
// holds none.
type headerArrays struct{ req, resp []http1.Header }

func (c *conn) takeHeaders() {
	c.takeInflight()
	if c.hdrs == nil {
		c.hdrs, _ = c.p.headerPool.Get().(*headerArrays)
		if c.hdrs == nil {
			n := min(c.p.cfg.HeadersMax, 32)
			c.hdrs = &headerArrays{make([]http1.Header, 0, n), make([]http1.Header, 0, n)}
		}
		c.req.Headers, c.resp.Headers = c.hdrs.req[:0], c.hdrs.resp[:0]
	}
}

func (c *conn) releaseHeaders() {
	if c.hdrs != nil {
		// Keep what the arrays grew to; drop the field slices, which point into pooled buffers.
		c.hdrs.req, c.hdrs.resp = c.req.Headers[:0], c.resp.Headers[:0]
		c.p.headerPool.Put(c.hdrs)
		c.hdrs, c.req.Headers, c.resp.Headers = nil, nil, nil
	}
}

// takeInflight gives the connection the state of a request, from the pool.
func (c *conn) takeInflight() {
	if c.inflight == nil {
		c.inflight, _ = c.p.inflightPool.Get().(*inflight)
		if c.inflight == nil {
			x := &inflight{cookieID: make([]byte, 0, sticky.IDBytesMax), pumpDone: make(chan error, 1)}
			x.dec.TrailerBytesMax = c.p.cfg.HeaderBytesMax
			x.rdec.TrailerBytesMax = c.p.cfg.HeaderBytesMax
			c.inflight = x
		}
	}
}

// releaseInflight gives it back, keeping what its buffers grew to and nothing that
// points into the table or the connection's buffers. After releaseHeaders.
func (c *conn) releaseInflight() {
	if x := c.inflight; x != nil {
		x.stickyOn, x.pinned, x.backend = nil, nil, nil
		x.req, x.resp = http1.Request{}, http1.Response{}
		c.p.inflightPool.Put(x)
		c.inflight = nil
	}
}

func (c *conn) takeOut() {
	if c.outPtr == nil {
		c.outPtr = outPool.Get().(*[]byte)
		c.out = (*c.outPtr)[:0]
	}
}

func (c *conn) releaseOut() {
	if c.outPtr != nil {
		if cap(c.out) <= outBufferKeepMax {
			*c.outPtr = c.out[:0]
			outPool.Put(c.outPtr)
		}
		c.outPtr, c.out = nil, nil
	}
}

// rawRead reads once from the client into in. When nothing is there yet and in holds no bytes, it
// hands in's buffer back to the pool before the goroutine parks, so that an idle keep-alive
// connection holds no buffer.
func (c *conn) rawRead(fd uintptr) bool {
	if c.inPtr == nil {
		c.inPtr = inPool.Get().(*[]byte)
		c.in = http1.Buffer{Buf: *c.inPtr}
	}
	n, err := rawio.Read(fd, c.in.Space())
	switch err {
	case syscall.EAGAIN:
		if c.inRelease && c.in.Len() == 0 {
			c.releaseIn()
		}
		return false
	case nil:
		c.in.W += n
		c.readN, c.readErr = n, nil
	default:
		c.readN, c.readErr = 0, err
	}
	return true
}

// rawWrite writes c.wbuf to the client, asking to be called again when the socket has room.
func (c *conn) rawWrite(fd uintptr) bool {
	for len(c.wbuf) > 0 {
		n, err := rawio.Write(fd, c.wbuf)
		switch err {
		case nil:
			c.wbuf = c.wbuf[n:]
		case syscall.EAGAIN:
			return false
		default:
			c.wErr = err
			return true
		}
	}
	return true
}

// write writes b to the client.
func (c *conn) write(b []byte) error {
	if c.raw == nil {
		_, err := c.nc.Write(b)
		return err
	}
	c.wbuf, c.wErr = b, nil
	err := c.raw.Write(c.writeFn)
	c.wbuf = nil
	if err != nil {
		return err
	}
	return c.wErr
}

// fill reads once from the client. io.EOF means the client closed its side.
func (c *conn) fill() error {
	if c.raw == nil {
		if c.inPtr == nil {
			c.inPtr = inPool.Get().(*[]byte)
			c.in = http1.Buffer{Buf: *c.inPtr}
		}
		_, err := c.in.ReadOnce(c.nc)
		return err
	}
	if err := c.raw.Read(c.readFn); err != nil {
		return err
	}
	return c.readResult()
}

// readResult is what the read that rawRead made says: nil, its error, or io.EOF.
func (c *conn) readResult() error {
	if c.readErr != nil {
		return c.readErr
	}
	if c.readN == 0 {
		return io.EOF
	}
	return nil
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// serve runs the connection: read a request head, forward the exchange, repeat while both sides
// keep the connection alive. A connection of an event loop returns to it (parked) when it waits
// for its next request, and is served again from there when that comes.
func (c *conn) serve() {
	if c.tls != nil && !c.handshake() {
		c.close()
		return
	}
	for {
		if ok, parked := c.readRequest(); parked {
			return // the connection is no longer this goroutine's
		} else if !ok {
			c.close()
			return
		}
		if !c.handle() {
			c.close()
			return
		}
		if c.in.Len() == 0 {
			c.releaseOut()
			c.releaseHeaders()
			c.releaseInflight()
		}
	}
}

// handshake completes the TLS handshake of a new connection, here in its own goroutine, within
// ClientTimeout: a client that connects and sends no ClientHello, or stalls in the middle, is
// closed then, as one that stalls in a request head is. The idle timeout counts from the end of
// the handshake. A failed handshake closes the connection; crypto/tls has sent its alert.
func (c *conn) handshake() bool {
	c.dl.Both(time.Now(), c.p.cfg.ClientTimeout)
	if err := c.tls.Handshake(); err != nil {
		c.p.stats.tlsHandshakeFailures.Add(1)
		c.p.log.Trace("TLS handshake failed", "client", c.nc.RemoteAddr().String(), "error", err)
		return false
	}
	return true
}

// drainIdleGrace is how long an idle keep-alive connection of a draining proxy waits for one more
// request before it is closed.
const drainIdleGrace = time.Second

// readRequest waits for a complete request head and parses it into c.req. It answers a malformed
// head and returns false when the connection must end. parked says the connection went back to its
// event loop to wait for the request: it is no longer the caller's.
func (c *conn) readRequest() (ok, parked bool) {
	p := c.p
	for c.in.Len() == 0 {
		// Shutdown sets draining, then wakes the idle connections. Checking draining after the
		// deadline is set means that either this sees it, or Shutdown's wake-up comes after (and
		// overrides) this deadline. A draining connection waits drainIdleGrace more for a request
		// that its client may have sent already, and answers it with Connection: close: closing
		// at once would reset a request on its way.
		var draining bool
		if c.parked && (c.parkedDraining || !p.draining.Load()) {
			// Back from the loop: the wait it parked in goes on, with its deadline (unless the
			// drain began since: the grace's wait replaces it).
			c.parked, draining = false, c.parkedDraining
		} else {
			c.parked = false
			c.state.Store(stateIdle)
			draining = p.draining.Load()
			wait := p.cfg.IdleTimeout
			if draining {
				wait = min(wait, drainIdleGrace)
			}
			c.dl.Read(time.Now(), wait)
			if !draining && p.draining.Load() {
				continue // the drain began meanwhile: wait the grace instead
			}
		}
		c.inRelease = true
		var err error
		if c.lc != nil {
			// Parked, the connection is the loop's until its client sends: no goroutine waits,
			// and no buffer or state of the proxy's is held. What its next owner needs is in
			// its mark: from the park on, this goroutine must not touch it.
			c.lc.Mark = markParked
			if draining {
				c.lc.Mark |= markDraining
			}
			var parked bool
			if parked, err = c.lc.ReadOrPark(c.readFn); parked {
				c.drop() // a parked connection holds no state of the proxy's, only its LoopConn
				return false, true
			}
			if err == nil {
				err = c.readResult()
			}
		} else {
			err = c.fill()
		}
		c.inRelease = false
		c.state.Store(stateActive)
		if err != nil {
			if !draining && p.draining.Load() && isTimeout(err) {
				continue // woken by Shutdown
			}
			return false, false // idle timeout, the drain's grace, or the client went away
		}
	}
	c.takeHeaders()
	for first := true; ; first = false {
		err := http1.ParseRequest(c.in.Buffered(), &p.limits, &c.req)
		if err == nil {
			return true, false
		}
		if err != http1.ErrIncomplete {
			c.reject(err)
			return false, false
		}
		if c.in.Full() {
			c.reject(&http1.Error{Status: 431, Reason: "request head too large"})
			return false, false
		}
		if first {
			c.dl.Read(time.Now(), p.cfg.ClientTimeout)
		}
		if err := c.fill(); err != nil {
			if isTimeout(err) && c.in.Len() > 0 {
				c.writeError(408, "timed out reading the request head", true)
			}
			return false, false
		}
	}
}

// reject answers a request that could not be parsed; the connection then closes.
func (c *conn) reject(err error) {
	c.p.stats.rejected.Add(1)
	var he *http1.Error
	if errors.As(err, &he) {
		c.p.log.Trace("request rejected", "client", c.nc.RemoteAddr().String(), "status", he.Status, "reason", he.Reason)
		c.writeError(he.Status, he.Reason, true)
		return
	}
	c.writeError(400, err.Error(), true)
}

// idempotent reports whether a request of this method may be sent twice (RFC 9110 §9.2.2).
func idempotent(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// currentSet returns the backend set of the newest table, or nil when it has none by that name.
func (c *conn) currentSet() *set {
	t := c.p.table.Load()
	if f := c.p.follow; f != nil {
		if g := f.Generation(); g != t.gen && g+1 != c.p.badGen.Load() || f.HealthEpoch() != t.health {
			t = c.p.tryRefresh()
		}
	}
	if t != c.tbl {
		c.tbl, c.set = t, t.sets[c.setName]
	}
	return c.set
}

// noBackendReason says why a request found no backend in s (nil when the set is not in the
// table): nothing to serve yet, a set the generation lacks, or no backend that could take it.
func (c *conn) noBackendReason(s *set) string {
	switch {
	case s != nil:
		return "no backend available"
	case c.tbl != nil && c.tbl.gen == 0 && c.p.follow != nil:
		return "no backend sets yet: this data plane has not received its first generation from its control plane"
	}
	return "no backend available: the backend set of this listener is not in the generation in force"
}

// Outcomes of one attempt at a backend.
type attemptResult uint8

const (
	attemptOK        attemptResult = iota // the exchange was forwarded (or the client went away)
	attemptNotSent                        // nothing reached the backend: another may be tried
	attemptNoAnswer                       // sent, and the backend closed or reset before answering
	attemptTimeout                        // no response head within the backend timeout
	attemptBad                            // the backend's response was malformed
	attemptFatal                          // a failure after the response started: close the client
	attemptAbandoned                      // the wait for the response head was cut: the backend went out
)

// handle forwards the request in c.req and its response. It returns whether the client connection
// stays open.
func (c *conn) handle() bool {
	p, r := c.p, &c.req
	p.stats.requests.Add(1)
	c.started, c.attempts, c.backend, c.bytesOut, c.status, c.forceStop = time.Now(), 0, nil, 0, 0, false
	if string(r.Method) == "CONNECT" {
		c.in.Consume(r.HeadLen)
		c.writeError(405, "CONNECT is not supported", true)
		return false
	}
	c.takeOut()
	// The set, and what its affinity makes of the request, while the head is still in c.in.
	s := c.currentSet()
	c.affinityOf(s)
	c.upgrade = c.upgradeOffer(c.upgrade[:0])
	c.out = c.appendRequestHead(c.out[:0])
	// The head's slices point into c.in, whose bytes the body will overwrite: keep copies of what is
	// needed later. idempotent is decided now, while r.Method is still valid.
	c.idempotent = idempotent(r.Method) && !c.upgrading()
	c.method = append(c.method[:0], r.Method...)
	if p.access != nil {
		c.target = append(c.target[:0], r.Target...)
		c.host = append(c.host[:0], r.Host...)
	}
	c.in.Consume(r.HeadLen)

	headLen := len(c.out)
	complete, err := c.bufferBody()
	if err != nil {
		c.bodyError(err)
		return false
	}
	replayable := complete && c.idempotent && len(c.out)-headLen <= p.cfg.ReplayBufferBytesMax

	tried := &c.tried
	*tried = balance.Tried{}
	last := attemptNotSent
	// A trial request offered for an ejected backend goes first: claiming it costs nothing when no
	// backend of the set is on trial, the usual case.
	// A client pinned by its cookie goes to its backend first, and takes no trial.
	var trial *backend
	if s != nil && len(s.trials) > 0 && c.pinned == nil {
		trial = c.claimTrial(s)
	}
	pinned := c.pinned
	for attempts := 0; s != nil && attempts <= p.cfg.Retries; {
		var b *backend
		i := -1          // the index of b in routed, for the picker's Done
		counted := false // the request counts in the region's in-flight counters
		switch {
		case trial != nil || pinned != nil:
			if trial != nil {
				b, trial = trial, nil
				c.trialOn = true
			} else {
				b, pinned = pinned, nil
			}
			if b.routedAt >= 0 {
				tried.Add(b.routedAt) // in panic it is routed too: a retry must not pick it again
			}
		case s.maglev != nil && c.hashed:
			j := s.maglev.Lookup(c.hashKey, c.outFn)
			if j < 0 {
				break
			}
			b = s.all[j]
			tried.Add(b.routedAt)
		case s.lr != nil:
			j := s.lr.Pick(s.load, tried)
			if j < 0 {
				break
			}
			tried.Add(j)
			b = s.routed[j]
		case s.picker != nil:
			if i = s.picker.Pick(tried); i < 0 {
				break
			}
			tried.Add(i)
			b = s.routed[i]
		}
		if b == nil {
			break
		}
		if s.lr != nil {
			// Every request of a least_request set counts, however it was picked (a trial, a pin).
			counted = p.follow.InFlightStart(b.slot)
		}
		attempts++
		if attempts > 1 {
			p.stats.retries.Add(1)
		}
		c.attempts = attempts
		c.backend = b
		var start time.Time
		bytesBefore := c.bytesOut
		if m := b.m; m != nil {
			m.requests.Add(1)
			if attempts > 1 {
				m.retries.Add(1)
			}
			m.inFlight.Add(1)
			start = time.Now()
			c.headerAt = time.Time{}
		}
		c.healthDone, c.tlsFailed = false, false
		c.abandoned.Store(false)
		c.abandonable = replayable && p.follow != nil
		last = c.attempt(b, complete, replayable)
		if last == attemptTimeout && c.abandoned.Load() {
			last = attemptAbandoned
		}
		wasTrial := c.trialOn
		c.attemptHealth(b, last)
		if m := b.m; m != nil {
			c.observeAttempt(m, last, start, c.bytesOut-bytesBefore)
		}
		if i >= 0 {
			s.picker.Done(i)
		}
		if counted {
			p.follow.InFlightEnd(b.slot, counted)
		}
		if last == attemptOK {
			break
		}
		// A request that may be sent again goes to another backend after a failed trial, or after a
		// wait cut short because its backend went out.
		if last == attemptNotSent || replayable && (last == attemptNoAnswer || last == attemptAbandoned || wasTrial && last != attemptFatal) {
			continue
		}
		break
	}
	switch last {
	case attemptOK:
	case attemptNotSent:
		if c.tlsFailed {
			p.stats.badGateway.Add(1)
			c.forceStop = c.forceStop || !complete
			c.writeError(502, "TLS handshake with the backend failed", c.forceStop)
			break
		}
		p.stats.noBackend.Add(1)
		c.forceStop = c.forceStop || !complete
		c.writeError(503, c.noBackendReason(s), c.forceStop)
	case attemptTimeout:
		p.stats.gatewayTimeout.Add(1)
		c.forceStop = true
		c.writeError(504, "backend timed out", true)
	case attemptNoAnswer, attemptBad:
		p.stats.badGateway.Add(1)
		c.forceStop = true
		c.writeError(502, "backend failed", true)
	case attemptAbandoned:
		p.stats.badGateway.Add(1)
		c.forceStop = true
		c.writeError(502, "backend ejected while the request waited for its response", true)
	case attemptFatal:
		c.forceStop = true
	}
	c.logAccess()
	return !c.forceStop && r.KeepAlive && !p.draining.Load()
}

// bufferBody moves the request body that is already read into c.out behind the head, and for a
// request that could be retried reads the rest as long as it fits the replay buffer. complete says
// the whole body is in c.out; if not, c.bodyLeft (or the chunked decoder) tells what streams on.
func (c *conn) bufferBody() (complete bool, err error) {
	r, p := &c.req, c.p
	mayWait := c.idempotent && !r.Expect100
	switch {
	case r.ContentLength > 0:
		c.bodyLeft = r.ContentLength
		for {
			n := min(int64(c.in.Len()), c.bodyLeft)
			c.out = append(c.out, c.in.Buffered()[:n]...)
			c.in.Consume(int(n))
			c.bodyLeft -= n
			if c.bodyLeft == 0 {
				return true, nil
			}
			if !mayWait || r.ContentLength > int64(p.cfg.ReplayBufferBytesMax) {
				return false, nil
			}
			if err := c.fill(); err != nil {
				return false, err
			}
		}
	case r.Chunked:
		c.dec.Reset()
		bodyStart := len(c.out)
		for {
			if c.out, _, err = c.dec.Reframe(c.out, &c.in, true); err != nil {
				return false, err
			}
			if c.dec.Done() {
				return true, nil
			}
			if !mayWait || len(c.out)-bodyStart > p.cfg.ReplayBufferBytesMax {
				return false, nil
			}
			if err := c.fill(); err != nil {
				return false, err
			}
		}
	}
	return true, nil
}

// bodyError answers a request whose body could not be read: a malformed chunked body is a 400, a
// client that went away or stalled gets nothing more.
func (c *conn) bodyError(err error) {
	var he *http1.Error
	if errors.As(err, &he) {
		c.p.stats.rejected.Add(1)
		c.writeError(he.Status, he.Reason, true)
		return
	}
	if isTimeout(err) {
		c.writeError(408, "timed out reading the request body", true)
	}
}
