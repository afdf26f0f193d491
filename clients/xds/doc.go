// Package xds is the data plane's xDS-lite client: it keeps one DiscoveryService stream open to
// the control plane, hands each response to the data plane, and answers it with an ACK or a NACK.
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
//   - Losing the stream changes nothing the data plane serves: Apply is called only with responses
//     of the control plane, never on a disconnect.
//
// # What a caller must never do
//
// Block in Apply on something that waits for the stream: Apply runs on Run's goroutine, and Run
// reads nothing else until Apply returns.
package xds
