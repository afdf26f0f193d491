// Package xds is the data plane's xDS-lite client: it keeps one DiscoveryService stream open to
// one of its control planes, hands each response to the data plane, and answers it with an ACK or
// a NACK.
//
// # Guarantees
//
//   - Responses are applied one at a time, in order, from Run's goroutine; the answer to a response
//     is sent only once Config.Apply returned, so an ACK means the change is in force.
//   - A stream that fails is opened again after a jittered exponential backoff (full jitter,
//     between Config.BackoffMin and Config.BackoffMax; internal/backoff), which starts over once a
//     stream delivered a response: data planes that lost a control plane together do not come back
//     to it together. Each new stream reports what the data plane serves now: the versions of the latest
//     Apply, or Config.Initial's before the first.
//   - Failover: the control planes are tried in the order of Config.ControlPlanes. The first stream
//     goes to the first; each stream that fails, to open or later, is followed (after the backoff
//     above) by one to the next in the list, round and round. A control plane that works is kept
//     for as long as its streams last: Run never moves back to an earlier one by itself, so a
//     recovered first control plane gets its data planes back only as the others fail. Since the
//     new stream carries the versions applied, a control plane serving the same store sends only
//     the sets that differ, and Apply is not called for what the data plane already serves.
//   - A control plane that accepts the connection but never answers holds the stream: Run does not
//     time out a stream that is open, since a control plane sends nothing while nothing changed.
//     Opening one waits as long as the connection's own connect timeout (grpc-go: 20s by default)
//     for a control plane that does not answer at all, then fails and moves on.
//   - Deltas: the client asks for them (accept_deltas) and makes each one whole before Apply, on
//     the set it keeps of each name the data plane serves (the one a response carried, or a delta
//     made; only the sets that came in this process). Apply sees whole sets only. A delta it cannot
//     make whole (no such base held, a run out of bounds) is the control plane's protocol error:
//     the stream ends, and the next is sent whole sets.
//   - Losing the stream changes nothing the data plane serves: Apply is called only with responses
//     of the control plane, never on a disconnect.
//
// # What a caller must never do
//
// Block in Apply on something that waits for the stream: Apply runs on Run's goroutine, and Run
// reads nothing else until Apply returns.
package xds
