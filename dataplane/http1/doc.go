// Package http1 is xlb's HTTP/1.1 codec: a strict parser of request and response heads, a streaming
// decoder of chunked bodies, and the few writers the proxy needs.
//
// It parses in place: a parsed head is a set of byte slices into the caller's buffer, so parsing
// allocates nothing, and the slices are valid only until the caller reuses that buffer.
//
// It enforces the framing rules of RFC 9112 instead of repairing input, because a proxy that accepts
// what its backend reads differently can be used to smuggle requests. A request is rejected when it
// has both Content-Length and Transfer-Encoding, a differing or invalid Content-Length, a
// Transfer-Encoding whose final coding is not chunked, obs-fold, whitespace before a colon, a missing
// or repeated Host, a bare CR or LF, or a NUL, CR or LF inside a field value; a chunked body is
// rejected on a chunk-size overflow, a bare LF or a malformed chunk extension. Every rejection is an
// *Error that carries the status to answer and a reason a person can read.
//
// A caller must never keep a slice of a parsed head past the next change to the buffer it points into.
package http1
