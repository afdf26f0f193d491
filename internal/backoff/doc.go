// Package backoff is the exponential backoff of every retry loop in xlb: a bound that starts at
// Base and doubles with each wait up to Max, and starts over at Reset; each wait is drawn under
// the bound by the Jitter the caller chose.
//
// Which jitter, by site (each documents its own):
//
//   - Full, for what many data planes do against one control plane at once: the xDS-lite stream
//     (clients/xds) and the load-report stream (server's reportLoad). When a control plane
//     restarts, a thousand data planes lose their streams in the same instant; without jitter they
//     would come back in lockstep, at Base, 2·Base, 4·Base…, each time all together. Full jitter
//     (a wait anywhere in [0, bound)) spreads them the most.
//   - Equal, for the admin client's retries of one call (clients/admin): a wait in
//     [bound/2, bound], so it never retries at once, yet two tools do not retry together.
//   - None, for what one process retries against itself: restarting a crashed worker (server's
//     supervisor), polling a lost config directory (server's watch) and accepting after EMFILE
//     (dataplane/proxy). The waits are the bounds, so logs and tests can name them.
//
// A Backoff is a value owned by one goroutine; it is not safe for concurrent use. A Base that is
// not positive, or a Max below Base, is a programmer error: Next panics.
package backoff
