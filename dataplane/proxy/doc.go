// Package proxy is xlb's data path: it accepts client connections, reads HTTP/1.x requests with the
// strict parser of package http1, picks a backend with package balance, and forwards each exchange
// over a pooled backend connection of package upstream, streaming bodies both ways.
//
// # Engine
//
// By default each client connection has a goroutine, waiting in Go's poller between requests. With
// Config.EventLoop a plain TCP listener is served by an event loop of its own instead (rawio.Loop:
// an edge-triggered epoll instance that the loop's goroutine waits on through Go's poller). A
// connection waiting for its next request is then parked in the loop and holds no goroutine, no
// buffer and no state of the proxy's: its conn goes back to a pool with the buffers and the
// request state, and what the rest of its wait needs is a mark on its LoopConn (loop.go). When its
// client sends, the loop hands it to a pool of goroutines that keep their grown stacks from one
// connection to the next, and it takes a conn again; a Shutdown reaches the parked connections
// through their loops (rawio.Loop.ExpireParked, CloseParked). Accepting
// costs accept4 and one epoll_ctl, closing one close (no EPOLL_CTL_DEL, no fcntl, no finalizer).
// While a connection runs, the waits for its client (a body still arriving, a full socket buffer)
// go through the loop too. TLS listeners always have a goroutine per connection.
//
// Why the goroutine is the default: measured side by side (bench/RESULTS.md, "Event loops against
// a goroutine per connection"), the loop costs as much CPU per request as the goroutine on plain
// keep-alive and on a connection per request, and about a tenth more with TLS to the backends:
// Go's poller is itself an event loop, and the loop's relay of each wait through its own epoll
// descriptor costs about what a goroutine's stack and poller registration save. What the loop
// does save is memory: 0.5-0.6 KiB per idle keep-alive connection against 6.2 KiB (nginx's is
// 0.56), which is what a listener holding tens of thousands of idle clients wants.
//
// One goroutine at a time owns a client connection and runs its exchanges one after the other, so
// that pipelined requests are answered in order. A request whose whole body is already read goes to the
// backend in one write, and the answer is awaited in the same pass through the runtime's poller
// (upstream.Conn.WriteThenFill). A request whose body is still arriving streams it from a second
// goroutine while the first reads the response, so that a backend may answer early (and
// `Expect: 100-continue` works). Buffers come from pools: an idle keep-alive connection holds none,
// and the keep-alive GET path allocates nothing.
//
// # What reaches the backend
//
// The request line byte for byte (as HTTP/1.1), every end-to-end header field as received, in order,
// with Host kept (but an absolute-form target's authority replaces its value); one Content-Length, or Transfer-Encoding: chunked with the body re-framed in chunks
// of the proxy's own (extensions dropped, trailers kept). Hop-by-hop fields (Connection, Keep-Alive,
// Proxy-Connection, TE, Transfer-Encoding, Upgrade and every field that Connection names) are
// removed in both directions. X-Forwarded-For, -Proto and -Host (and, with Config.ForwardedField,
// an RFC 7239 Forwarded field) follow Config.Forwarded: by default a client's own are extended only
// when it is in Config.TrustedProxies, and replaced by what the proxy saw otherwise.
//
// # Errors and retries
//
//   - A backend that refuses or cannot be reached gets nothing: the request goes to the next backend.
//   - Once bytes of a request went out, it is sent again only when its method is idempotent
//     (RFC 9110 §9.2.2) and its whole body is held in memory, which the proxy does for bodies up to
//     Config.ReplayBufferBytesMax (unless the client sent Expect: 100-continue). A backend that
//     closed a pooled connection as a request went out is retried once on a new connection to the
//     same backend; otherwise a retry goes to another backend.
//   - A pooled connection is peeked at (one non-blocking recv) before it carries a request that
//     could not be retried, so that one the backend closed while idle is never used for it.
//   - Every attempt after the first is counted (Stats.Retries). No backend reachable, or none in the
//     set: 503. A failure after the request went out, or a malformed response: 502. No response
//     head within Config.BackendTimeout: 504. A failure after the response started cuts the client
//     connection, since its framing can no longer be kept.
//
// # Health
//
// When the proxy follows a region (Proxy.Follow), each backend's route comes from its health slot,
// read again only when the region's health epoch moves: an ejected backend is not picked, a
// slow-starting one is picked at its share of its weight, and in a set in panic every active
// backend is. Each attempt's outcome is counted in the slot at once (a response head at its
// arrival): a connect refused or timed out, a reset, no response head within BackendTimeout, a
// malformed response, and, when the set says so, a 5xx or gateway status count as failures; any
// other response zeroes the count. A failure also calls Config.HealthChanged (in a worker, a byte
// on the health pipe), so that the supervisor's monitor ejects within milliseconds. A backend out
// of its ejection time and without probes is offered for one trial request, which the first worker
// to claim it sends first.
//
// An attempt waiting for its response head on a backend that goes out is abandoned when the
// worker sees the new route (the supervisor wakes every worker when a route changes): a request
// that may be sent again (the rules above) goes to another backend at once, any other is answered
// 502. A failed trial of a request that may be sent again goes to another backend too.
//
// # Policies and affinity
//
// A set's policy picks the first attempt of a request; a retry picks again, never a backend the
// request tried.
//
//   - round_robin: smooth weighted round robin, per worker.
//   - least_request: the power of two choices over the requests in flight on each backend summed
//     over every worker, which the region counts (shm's doc.go); each request counts in its
//     worker's row from its pick to its end. Without a region (SetBackends) it counts this
//     proxy's own.
//   - maglev: the set's key (the first header field of its name, any case; the first cookie of
//     its name; or the client's IP address, 4 or 16 bytes) hashed with XXH64 seed 0 and looked up
//     in a Maglev table of every backend of the set (65537 entries): the same key goes to the same
//     backend on every worker and data plane. A backend that is not active or is out by its health
//     is out of the lookup, which walks the key's own probe sequence to another (and a retry
//     walks on past those tried); the table is built when the set's ids or weights change,
//     at install, and kept across generations otherwise (slow start does not weigh in it). A
//     request without the key (or with an empty value) is picked by round robin.
//
// A set with a sticky cookie pins each client to a backend, as HAProxy's "cookie ... insert
// indirect nocache" does. A request whose cookie (the first of the name, in any Cookie field) is
// signed by one of Config.StickyKeys, fresh (within max age), and names a backend of the set that
// is active and routed, or draining and not out, goes there first: a draining backend keeps its
// pinned clients, new ones never go to it. Any other cookie (forged, of another key, stale, of a
// backend that is ejected, disabled or gone) is treated as absent: the request is picked by the
// policy. The final response of a request that was not pinned to the backend that answered (or
// whose cookie is past half its max age) carries
//
//	Set-Cookie: NAME=VALUE; Path=PATH; HttpOnly; SameSite=Lax; Secure; Max-Age=N
//
// (HttpOnly unless turned off; Secure when the client's connection is TLS, and always with
// SameSite=None; Max-Age when the set has a max age) and, unless its Cache-Control already says
// private or no-store, an added Cache-Control: private, so that a shared cache never hands one
// client's pin to every other (HAProxy's nocache adds the same field). The cookie is removed from
// the request before it goes to the backend (HAProxy's indirect): the backend sees the client's
// other cookies only, and no Cookie field when there were none. A trial request is not given to a
// pinned client.
//
// # Connections
//
// Client keep-alive follows HTTP/1.1 and HTTP/1.0 rules; a response framed by the backend's close is
// re-framed as chunked for an HTTP/1.1 client (which keeps its connection) and sent raw, then closed,
// to an HTTP/1.0 one. An Upgrade request without a body, to a protocol of Config.UpgradeProtocols
// (WebSocket by default), is tunnelled both ways after the backend's 101; other offers are dropped
// and the request is forwarded as an ordinary one. Shutdown stops accepting, lets requests in flight finish (their responses say
// Connection: close), gives an idle connection (or one accepted as the drain began) a second to
// send one more request, answered with Connection: close, so that a request already on the wire is
// not reset, then closes it; and cuts what remains at its deadline.
//
// A listener may be a tls.NewListener (a worker's TLS listener, dataplane/tlsterm): its
// connections are *tls.Conn, read and written through their own Read and Write rather than the
// raw file descriptor. The handshake is done first, in the connection's goroutine, within
// Config.ClientTimeout: a client that connects and sends no ClientHello, or stalls in it, is closed
// then (Stats.TLSHandshakeFailures counts these and the failed handshakes); the idle timeout
// counts from the end of the handshake. A draining proxy lets a handshake in progress finish
// within that timeout or Shutdown's deadline. Requests on such a connection reach the backend with
// X-Forwarded-Proto https and, with Config.ForwardedField, proto=https. The plain path is
// unchanged: a keep-alive GET on it allocates nothing.
//
// Timeouts are set lazily (upstream.Deadlines): each fires between its nominal length and an eighth
// more after the last activity.
package proxy
