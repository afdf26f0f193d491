// Package http1 is xlb's HTTP/1.1 codec: a strict parser of request and response heads, a streaming
// decoder of chunked bodies, and the few writers the proxy needs.
//
// It parses in place: a parsed head is a set of byte slices into the caller's buffer, so parsing
// allocates nothing, and the slices are valid only until the caller reuses that buffer.
//
// It enforces the framing rules of RFC 9112 instead of repairing input, because a proxy that accepts
// what its backend reads differently can be used to smuggle requests. A request is rejected when it
// has both Content-Length and Transfer-Encoding, a differing or invalid Content-Length, a
// Transfer-Encoding whose final coding is not chunked (or any Transfer-Encoding in HTTP/1.0),
// obs-fold, whitespace before a colon, a missing or repeated Host, a bare CR or LF, a NUL, CR or LF
// inside a field value, or a Connection option that names Content-Length or Host (the next hop
// needs them, so they cannot be dropped as hop-by-hop). A chunked body is rejected on a chunk-size
// overflow, whitespace after a chunk size, a bare CR or LF, a malformed chunk extension, a chunk-size
// line over 4094 bytes, or framing out of proportion to its data; it accepts nothing that net/http's
// chunked reader rejects. Every rejection is an *Error that carries the status to answer and a reason
// a person can read.
//
// Parsing a head depends only on the bytes it needs: if a prefix of the input is rejected, the whole
// input is rejected with the same *Error, and no proper prefix of a head is accepted. Limits are
// decided in byte order, so a head that is still incomplete at HeaderBytesMax bytes is 431 (502 for
// a response) whatever follows.
//
// A caller must never keep a slice of a parsed head past the next change to the buffer it points into.
package http1
