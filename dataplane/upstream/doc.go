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
package upstream
