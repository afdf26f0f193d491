package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/xlbproxy/xlb/dataplane/rawio"
)

// TLS is what a pool's TLS to its backend is, in plain terms. Config turns it into the *tls.Config
// of a pool's Config; LoadTLS reads its RootCAs and Certificates from files. The zero value is TLS
// 1.2 and up, verified against the system roots for the host of the pool's address, with session
// resumption.
type TLS struct {
	// ServerName is sent in SNI and the backend's certificate must be valid for it. Empty means
	// the host of the pool's Address (NewPool fills it in); an IP address is verified against the
	// certificate's IP addresses and sends no SNI.
	ServerName string
	// RootCAs verify the backend's certificate. Nil means the system roots.
	RootCAs *x509.CertPool
	// Certificates are offered to a backend that asks for a client certificate (mTLS). Empty
	// means none.
	Certificates []tls.Certificate
	// MinVersion is tls.VersionTLS12 or tls.VersionTLS13, the lowest version offered. Zero means
	// tls.VersionTLS12. The highest is always 1.3.
	MinVersion uint16
	// InsecureSkipVerify accepts any certificate for any name: encrypted, not authenticated. This
	// package does not log it; the caller that applies it logs it at WARN.
	InsecureSkipVerify bool
	// NoResumption makes every connection a full handshake. False, the default, resumes: a new
	// connection presents the last session ticket that the backend sent on any of the pool's
	// connections.
	NoResumption bool
}

// ALPN is the one application protocol offered to backends.
const ALPN = "http/1.1"

// Config is the *tls.Config for t, for Config.TLS. One may serve many pools: NewPool copies it.
func (t TLS) Config() (*tls.Config, error) {
	switch t.MinVersion {
	case 0:
		t.MinVersion = tls.VersionTLS12
	case tls.VersionTLS12, tls.VersionTLS13:
	default:
		return nil, fmt.Errorf("upstream: TLS minimum version %#04x: want TLS 1.2 or 1.3", t.MinVersion)
	}
	return &tls.Config{
		ServerName:             t.ServerName,
		RootCAs:                t.RootCAs,
		Certificates:           t.Certificates,
		MinVersion:             t.MinVersion,
		InsecureSkipVerify:     t.InsecureSkipVerify,
		NextProtos:             []string{ALPN},
		SessionTicketsDisabled: t.NoResumption,
		Renegotiation:          tls.RenegotiateNever,
	}, nil
}

// ParseTLSVersion reads a minimum version as the discovery protocol spells it: "1.2", "1.3", or
// empty for 1.2.
func ParseTLSVersion(s string) (uint16, error) {
	switch s {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("upstream: TLS version %.16q: want \"1.2\" or \"1.3\"", s)
}

// TLSFiles names the PEM files of a TLS. Each is optional; CertFile and KeyFile go together.
type TLSFiles struct {
	// CAFile is a bundle of CA certificates, for RootCAs.
	CAFile string
	// CertFile is a client certificate, with the chain to present after it; KeyFile its
	// private key (PKCS #8, PKCS #1 or SEC 1).
	CertFile, KeyFile string
}

// LoadTLS reads the files of f into a TLS's RootCAs and Certificates; the caller sets the rest.
// Each error names the file it is about.
func LoadTLS(f TLSFiles) (TLS, error) {
	var t TLS
	if f.CAFile != "" {
		pool, err := loadCAs(f.CAFile)
		if err != nil {
			return TLS{}, err
		}
		t.RootCAs = pool
	}
	switch {
	case f.CertFile == "" && f.KeyFile == "":
	case f.CertFile == "" || f.KeyFile == "":
		return TLS{}, fmt.Errorf("upstream: a client certificate needs both its file and its key file, got certificate %q and key %q", f.CertFile, f.KeyFile)
	default:
		cert, err := loadPair(f.CertFile, f.KeyFile)
		if err != nil {
			return TLS{}, err
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// loadCAs reads a PEM bundle of certificates, every block of which must be a certificate.
func loadCAs(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("upstream: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("upstream: CA file %s: PEM block %d is a %q, want only CERTIFICATE blocks", path, n+1, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("upstream: CA file %s: certificate %d: %w", path, n+1, err)
		}
		pool.AddCert(cert)
	}
	if n == 0 {
		return nil, fmt.Errorf("upstream: CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// loadPair reads a client certificate and its key, each error naming the file at fault.
func loadPair(certPath, keyPath string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("upstream: client certificate file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("upstream: client key file: %w", err)
	}
	if !hasBlock(certPEM, func(typ string) bool { return typ == "CERTIFICATE" }) {
		return tls.Certificate{}, fmt.Errorf("upstream: client certificate file %s holds no PEM certificate", certPath)
	}
	if !hasBlock(keyPEM, func(typ string) bool { return strings.HasSuffix(typ, "PRIVATE KEY") }) {
		return tls.Certificate{}, fmt.Errorf("upstream: client key file %s holds no PEM private key", keyPath)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("upstream: client certificate %s with key %s: %w", certPath, keyPath, err)
	}
	return cert, nil
}

func hasBlock(b []byte, want func(typ string) bool) bool {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return false
		}
		if want(block.Type) {
			return true
		}
	}
}

// HandshakeBuckets are the upper bounds of the handshake latency histogram of Stats.
var HandshakeBuckets = [...]time.Duration{
	250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second,
}

// Stats are a pool's TLS handshake counters since NewPool. Each counter is read atomically, the
// set of them not at one instant: a handshake that ends during Stats may be in one and not yet in
// another.
type Stats struct {
	// FullHandshakes and ResumedHandshakes count the handshakes that succeeded, by kind.
	FullHandshakes, ResumedHandshakes uint64
	// HandshakeFailures counts handshakes that failed: refused certificates, alerts, timeouts,
	// connections lost. A failed TCP connect is not a handshake. With TLS 1.3 a backend refuses a
	// client certificate after the client's handshake is done: that shows as an error of the
	// first read, not here.
	HandshakeFailures uint64
	// HandshakeTime is the total time spent in the successful handshakes.
	HandshakeTime time.Duration
	// HandshakeLatency counts the successful handshakes by how long each took: [i] those longer
	// than HandshakeBuckets[i-1] and at most HandshakeBuckets[i]; the last, those longer than the
	// last bound.
	HandshakeLatency [len(HandshakeBuckets) + 1]uint64
}

// tlsStats are a pool's Stats as it counts them.
type tlsStats struct {
	full, resumed, failures, nanos atomic.Uint64
	latency                        [len(HandshakeBuckets) + 1]atomic.Uint64
}

func (s *tlsStats) handshake(d time.Duration, resumed bool) {
	if resumed {
		s.resumed.Add(1)
	} else {
		s.full.Add(1)
	}
	s.nanos.Add(uint64(d))
	i := 0
	for i < len(HandshakeBuckets) && d > HandshakeBuckets[i] {
		i++
	}
	s.latency[i].Add(1)
}

// Stats are the pool's TLS handshake counters; all zero for a pool without TLS. It takes no lock.
func (p *Pool) Stats() Stats {
	s := Stats{
		FullHandshakes:    p.stats.full.Load(),
		ResumedHandshakes: p.stats.resumed.Load(),
		HandshakeFailures: p.stats.failures.Load(),
		HandshakeTime:     time.Duration(p.stats.nanos.Load()),
	}
	for i := range s.HandshakeLatency {
		s.HandshakeLatency[i] = p.stats.latency[i].Load()
	}
	return s
}

// sessionCacheEntries is the size of a pool's session cache. crypto/tls keys it by server name,
// and a pool has one, so one entry holds the latest ticket; a second covers a caller that shares
// the config's cache with a pool of another name.
const sessionCacheEntries = 2

// tlsConfig is cfg.TLS as NewPool keeps it: a copy with the server name filled in and a session
// cache of the pool's own.
func tlsConfig(cfg *tls.Config, address string) *tls.Config {
	if cfg == nil {
		return nil
	}
	c := cfg.Clone()
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			host = address
		}
		c.ServerName = host
	}
	if !c.SessionTicketsDisabled && c.ClientSessionCache == nil {
		c.ClientSessionCache = tls.NewLRUClientSessionCache(sessionCacheEntries)
	}
	return c
}

// handshake makes nc, just connected at start, the TLS connection of c, within the connect
// timeout from start.
func (c *Conn) handshake(nc net.Conn, start time.Time) error {
	p := c.pool
	under := nc
	if tc, ok := nc.(*net.TCPConn); ok {
		pc := &probeConn{TCPConn: tc}
		if raw, err := tc.SyscallConn(); err == nil {
			pc.raw = raw
			pc.readFn = pc.readStep
			pc.waitFn = pc.waitStep
			c.probe = pc
			under = pc
		}
	}
	tc := tls.Client(under, p.tls)
	nc.SetDeadline(start.Add(p.cfg.ConnectTimeout))
	began := time.Now()
	if err := tc.Handshake(); err != nil {
		p.stats.failures.Add(1)
		nc.Close()
		return &HandshakeError{Address: p.cfg.Address, ServerName: p.tls.ServerName, Err: err}
	}
	took := time.Since(began)
	nc.SetDeadline(time.Time{})
	p.stats.handshake(took, tc.ConnectionState().DidResume)
	c.Conn, c.tls = tc, tc
	c.DL.Conn = tc
	return nil
}

// HandshakeError is Dial's error when the TCP connection was made and the TLS handshake failed:
// a certificate refused (Err wraps a *tls.CertificateVerificationError), an alert from the
// backend, a timeout.
type HandshakeError struct {
	Address, ServerName string
	Err                 error
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("upstream: TLS handshake with %s (server name %q): %v", e.Address, e.ServerName, e.Err)
}

func (e *HandshakeError) Unwrap() error { return e.Err }

// errWouldBlock is what a probeConn's read returns, while probing, when nothing is there to read.
// It is a temporary net.Error, which a tls.Conn passes on without breaking the connection.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "upstream: nothing to read yet" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// probeConn is the TCP connection under a tls.Conn. Its reads are the TCPConn's, except while
// probing: then a read takes what the socket holds without waiting (and without regard for
// deadlines), and returns errWouldBlock when it holds nothing.
type probeConn struct {
	*net.TCPConn
	raw     syscall.RawConn
	probing bool

	// The state of a probing read, kept here so that its callback is bound once.
	readFn func(fd uintptr)
	rBuf   []byte
	rN     int
	rErr   error

	// The state of writeThenAwait, kept here so that its callback is bound once.
	waitFn func(fd uintptr) bool
	waited bool
	wW     io.Writer
	wB     []byte
	wN     int
	wErr   error
}

// writeThenAwait writes b through w (the tls.Conn over this connection), then returns once the
// socket has something to read (or its read deadline passed, or it was closed: the read that
// follows says which), without reading. A read right after the write would find nothing yet: one
// system call that says EAGAIN before the goroutine parks, on every exchange; the plain path skips
// it the same way (Conn.exchangeStep). The write is made inside the poller's read callback, after
// the poller was told to watch for readability: an answer that comes between the write and the
// wait is not missed.
func (pc *probeConn) writeThenAwait(w io.Writer, b []byte) (int, error) {
	pc.wW, pc.wB, pc.wN, pc.wErr, pc.waited = w, b, 0, nil, false
	err := pc.raw.Read(pc.waitFn)
	n, werr := pc.wN, pc.wErr
	pc.wW, pc.wB = nil, nil
	if werr == nil && n < len(b) {
		werr = err
	}
	return n, werr
}

// waitStep is writeThenAwait's callback: the first time it writes and returns false, so that the
// poller waits for the socket to be readable; then true.
func (pc *probeConn) waitStep(uintptr) bool {
	if pc.waited {
		return true
	}
	pc.waited = true
	pc.wN, pc.wErr = pc.wW.Write(pc.wB)
	return pc.wErr != nil
}

func (pc *probeConn) Read(b []byte) (int, error) {
	if !pc.probing {
		return pc.TCPConn.Read(b)
	}
	pc.rBuf, pc.rN, pc.rErr = b, 0, nil
	err := pc.raw.Control(pc.readFn)
	pc.rBuf = nil
	switch {
	case err != nil:
		return 0, err
	case pc.rErr != nil:
		return 0, pc.rErr
	case pc.rN == 0 && len(b) > 0:
		return 0, io.EOF
	}
	return pc.rN, nil
}

func (pc *probeConn) readStep(fd uintptr) {
	n, err := rawio.Read(fd, pc.rBuf)
	switch err {
	case nil:
		pc.rN = n
	case syscall.EAGAIN:
		pc.rErr = errWouldBlock
	default:
		pc.rErr = err
	}
}

// aliveTLS is alive for a TLS connection. Bytes waiting on an idle TLS connection are not all
// the backend's: TLS 1.3 sends session tickets (and may send key updates) after the handshake, at
// any time, in records that look like application data until decrypted. So it reads through the
// tls.Conn, which handles those records itself (a ticket goes into the session cache) and returns
// only what matters: application data (unsolicited bytes: unusable), a close_notify (io.EOF) or
// another error (unusable), or, once the socket holds nothing more, errWouldBlock: alive.
func (c *Conn) aliveTLS() bool {
	pc := c.probe
	if pc == nil {
		return true // not over TCP: nothing to probe without blocking
	}
	pc.probing = true
	n, err := c.tls.Read(c.peekByte[:])
	pc.probing = false
	return n == 0 && err == errWouldBlock
}
