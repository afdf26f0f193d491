// Package upstream keeps connections to backends: one Pool per backend address, holding a bounded
// stack of idle keep-alive connections.
//
// A pool hands out its most recently used idle connection first, so that the fewest connections stay
// warm and the rest age out. An idle connection is closed after the pool's idle timeout (Reap does it,
// and Get never hands out an expired one). Get can check that the backend has not closed an idle
// connection, with one non-blocking peek, for requests that could not be retried if it had.
//
// A Conn belongs to one goroutine between Get and Put. A caller must Put a connection back only when
// the exchange on it ended cleanly (the whole response read, the whole request written), and must
// Close it otherwise.
//
// # TLS to backends
//
// A pool whose Config has TLS makes every connection TLS: Dial connects and handshakes, both within
// ConnectTimeout, and fails with an error that names the address, the server name and what
// crypto/tls refused (an unknown authority, a certificate not valid for the name). The *tls.Config
// comes from TLS.Config, a plain description (server name, roots, client certificates, minimum
// version, verification, resumption); LoadTLS reads its roots and client certificate from PEM
// files, each error naming its file. ALPN is always http/1.1 and renegotiation is refused. The
// server name defaults to the host of the pool's address; an IP address is verified against the
// certificate's IP addresses and sends no SNI.
//
// TLS connections are pooled exactly like plain ones. Their reads and writes go through the
// tls.Conn, not the raw socket calls of plain connections; WriteThenFill and Fill keep their
// meaning (Fill returns bytes or an error, never both, even when a close_notify follows the last
// record). Get's check of an idle TLS connection cannot peek at the socket: TLS 1.3 backends send
// session tickets (and may send key updates) after the handshake, whenever they like, in records
// indistinguishable from data until decrypted, so a waiting ticket would look like unsolicited
// bytes, and a close_notify like a ticket. So the check reads through the tls.Conn with its socket
// in a non-blocking mode: tickets and key updates are handled (a ticket goes into the session
// cache), and the connection is unusable only on application data, a close_notify, an EOF or an
// error. It makes one system call, as the plain peek does, and one small allocation inside
// crypto/tls.
//
// Session resumption is on unless TLS.NoResumption: each pool has a tls.ClientSessionCache of its
// own, so a new connection to the backend resumes from the last ticket any of its connections
// received. A pool is one backend with one TLS configuration: a caller that reaches one address
// with two configurations (two sets naming it with different TLS) needs two pools.
//
// InsecureSkipVerify is never logged here: whoever builds a TLS from a backend set with
// insecure_skip_verify logs it at WARN, naming the set and the backend, when it applies the set.
//
// Pool.Stats counts full and resumed handshakes, failed handshakes and handshake latency (a sum and
// a fixed-bucket histogram), with atomics, for the proxy to export per backend. With TLS 1.3, a
// backend that refuses the client certificate does so after the client's handshake is over: that
// shows as the first read's error ("certificate required"), not as a failed handshake.
package upstream
