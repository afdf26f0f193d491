package proxy

import (
	"fmt"
	"github.com/xlbproxy/xlb/dataplane/balance/sticky"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Forwarded says what the proxy does with the X-Forwarded-For, -Proto and -Host request headers.
type Forwarded uint8

const (
	// ForwardedAppend trusts the X-Forwarded-* (and Forwarded) fields of a client in
	// Config.TrustedProxies: it appends the client's address to X-Forwarded-For and sets
	// X-Forwarded-Proto and X-Forwarded-Host only when the client did not send them. From any other
	// client it replaces them, as ForwardedReplace does.
	ForwardedAppend Forwarded = iota
	// ForwardedReplace drops whatever X-Forwarded-* (and Forwarded) fields the client sent and sets
	// its own, from what the proxy itself saw.
	ForwardedReplace
	// ForwardedOff passes the client's X-Forwarded-* and Forwarded fields through and adds none.
	ForwardedOff
)

// ParseForwarded turns "append", "replace" or "off" into a Forwarded mode.
func ParseForwarded(s string) (Forwarded, error) {
	switch s {
	case "append", "":
		return ForwardedAppend, nil
	case "replace":
		return ForwardedReplace, nil
	case "off":
		return ForwardedOff, nil
	}
	return 0, fmt.Errorf("proxy: forwarded mode %q: want append, replace or off", s)
}

func (f Forwarded) String() string {
	switch f {
	case ForwardedReplace:
		return "replace"
	case ForwardedOff:
		return "off"
	}
	return "append"
}

// The defaults of Config's zero values, exported so that help texts show what New applies.
const (
	DefaultConnectTimeout       = 5 * time.Second
	DefaultBackendTimeout       = 60 * time.Second
	DefaultClientTimeout        = 60 * time.Second
	DefaultIdleTimeout          = 60 * time.Second
	DefaultRequestLineBytesMax  = 8 << 10
	DefaultHeaderBytesMax       = 32 << 10
	DefaultHeadersMax           = 100
	DefaultRetries              = 2
	DefaultReplayBufferBytesMax = 64 << 10
	DefaultIdleConnsPerBackend  = 256
)

// Config is the behaviour of one proxy. The zero value of every field means the documented default;
// New validates the whole and the Config is never changed afterwards.
type Config struct {
	// ConnectTimeout bounds a TCP connect to a backend. Zero means 5s.
	ConnectTimeout time.Duration
	// BackendTimeout bounds the wait for a backend's response header, the longest silence while
	// reading a backend's body, and the longest stall while writing a request to it. Zero means 60s.
	BackendTimeout time.Duration
	// ClientTimeout bounds the wait for the rest of a client's request header once its first byte
	// arrived, the longest silence while reading a client's body, and the longest stall while writing
	// to a client. Zero means 60s.
	ClientTimeout time.Duration
	// IdleTimeout bounds how long a keep-alive connection waits for its next request (client side) or
	// its next use (backend side). Zero means 60s.
	IdleTimeout time.Duration

	// RequestLineBytesMax bounds the request line; a longer one is answered 414. Zero means 8 KiB.
	RequestLineBytesMax int
	// HeaderBytesMax bounds the request head (request line and header fields) and a backend's response
	// head; a longer request head is answered 431, a longer response head 502. Zero means 32 KiB.
	HeaderBytesMax int
	// HeadersMax bounds the number of header fields of a request (431 past it) and of a response
	// (502 past it). Zero means 100.
	HeadersMax int

	// Retries is how many more backends a request may try after its first attempt failed. Zero means
	// the default of 2; a negative value means no retry.
	Retries int
	// ReplayBufferBytesMax bounds the body that is held in memory so that an idempotent request can be
	// sent again after bytes of it reached a failing backend. Larger bodies are streamed and never
	// retried once sent. Zero means 64 KiB.
	ReplayBufferBytesMax int
	// ConnectionsMax bounds the client connections the proxy holds open at once, over all its
	// listeners. At the bound it stops accepting until one closes: new connections wait in the
	// kernel's listen backlog (a worker that shares the socket takes them), and each pause is
	// counted (Stats.AcceptPaused) and logged at most every 10s. Zero means half the process's
	// file-descriptor limit (RLIMIT_NOFILE) less 64, between 64 and 1<<20.
	ConnectionsMax int
	// IdleConnsPerBackend bounds the idle connections pooled for each backend. Zero means 256; a
	// negative value disables pooling.
	IdleConnsPerBackend int

	// Forwarded is the X-Forwarded-* mode. The zero value appends to a trusted proxy's fields and
	// replaces anyone else's.
	Forwarded Forwarded
	// TrustedProxies are the client addresses whose X-Forwarded-* and Forwarded fields
	// ForwardedAppend extends; an IPv4-mapped IPv6 address is matched as IPv4. Nil trusts no one:
	// every client's fields are replaced by what the proxy saw.
	TrustedProxies []netip.Prefix
	// ForwardedField adds an RFC 7239 Forwarded field (for, host, proto) besides the X-Forwarded-*
	// ones, following the same mode. The zero value adds none, and still drops an untrusted
	// client's Forwarded field unless the mode is ForwardedOff.
	ForwardedField bool
	// UpgradeProtocols are the protocols (RFC 9110 §7.8 names, matched without case or version) that
	// an Upgrade request may switch to; other offers are dropped and the request goes on as an
	// ordinary one. Nil means websocket alone: an h2c upgrade through a proxy would let a client
	// speak HTTP/2 to the backend past every check of this proxy.
	UpgradeProtocols []string

	// EventLoop serves each plain TCP listener (a *net.TCPListener or *rawio.Listener) from an
	// event loop of its own (rawio.Loop): a connection waiting for its next request holds no
	// goroutine and no state of the proxy's (0.5-0.6 KiB per idle keep-alive connection instead of
	// 6.2), and a pool of goroutines runs the connections that have work. The zero value gives
	// every connection a goroutine waiting in Go's poller, as TLS listeners always have: per
	// CPU-second it is as fast or faster (bench/RESULTS.md), so the loop is for the deployments
	// that hold many idle connections.
	EventLoop bool

	// NoBackendMetrics turns the per-backend counters off (BackendMetrics returns nothing). The
	// zero value counts; the switch exists to measure what counting costs.
	NoBackendMetrics bool

	// HealthChanged, when the proxy follows a region, is called after a request's failure or a trial
	// request's outcome was counted in a backend's health slot, so that the supervisor looks at it
	// now; it must not block. Nil means nobody is told, and the supervisor sees the counts when it
	// next looks.
	HealthChanged func() `json:"-"`

	// StickyKeys sign and check the sticky cookies of the sets that have one (balance/sticky: the
	// first signs, all verify). Every worker and data plane that must accept another's cookies
	// needs the same keys: a worker is given its supervisor's keys file. Nil means one random key
	// made by New, so that cookies hold within this proxy alone (tests, a proxy built in code).
	// Never marshalled: a worker reads them from the file its Spec names.
	StickyKeys []sticky.Key `json:"-"`

	// AccessLog receives one JSON line per request. Nil means no access log.
	AccessLog io.Writer `json:"-"`
	// Logger is the proxy's logger. Nil means a null logger.
	Logger hclog.Logger `json:"-"`

	// Dial opens a connection to a backend. Nil means a net.Dialer with ConnectTimeout. Tests use it
	// to count or refuse connections.
	Dial func(network, address string, timeout time.Duration) (net.Conn, error) `json:"-"`
}
