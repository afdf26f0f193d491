// Package sticky is the codec of xlb's sticky-session cookie and the file of keys that signs it.
//
// A Codec encodes a backend's stable id and the time the cookie was issued into a cookie value,
// and decodes a value back to the id only when a key of its ring signed it. Every worker and
// every data plane that shares the keys file accepts the cookies of the others.
//
// # The value
//
//	value = base64url-without-padding( version | issued | id | tag )
//	version = 0x01 (1 byte; any other is refused, so the format can change)
//	issued  = the issue time in Unix seconds, 8 bytes big-endian, signed
//	id      = the backend's id, 1 to IDBytesMax (128) bytes, as the control plane names it
//	tag     = the first 16 bytes of HMAC-SHA256(key, version | issued | id)
//
// Why so:
//   - The tag makes the cookie unforgeable: without it a client could pick its backend, or a
//     script could aim every client at one backend (the seed's "sticky" sent everyone to backend 0).
//     It is truncated to 128 bits, half the hash, as RFC 2104 §5 recommends at least: a forgery
//     succeeds once in 2^128 tries, and the value is 22 characters shorter than with all 32 bytes.
//   - base64url without padding uses only characters that a cookie value may hold unquoted
//     (RFC 6265 §4.1.1) and that survive URLs and form decoding; no '=' for lax cookie parsers to
//     split on. Decode accepts only the one canonical spelling (no padding, no stray bits).
//   - The value is signed, not encrypted: a client can read the backend id. Do not put secrets
//     in backend ids.
//   - The issue time lets the data plane refuse a stale cookie itself (Config.MaxAge, checked at
//     Decode), whatever Max-Age the browser kept it for. A value is at most ValueBytesMax (204)
//     characters; an id of 9 bytes gives 46.
//
// Decode refuses (ok false, never a panic, fuzzed) a value that is too short or too long, not
// canonical base64url, of another version, signed by no key of the ring, or stale. The caller
// then treats the request as a new client; an id that names no backend of the set, or one that is
// ejected or disabled, is the caller's to re-pin (issue 14).
//
// # Keys
//
// A key is 32 random bytes. The keys file holds one key a line in standard base64 with padding
// (`openssl rand -base64 32` prints one), '#' comments and blank lines ignored, from 1 to KeysMax
// (4) keys: the first signs, every one verifies. Errors name the file and the line, and never
// quote a key. To rotate: put a new key on the first line and keep the old one below it; once
// the cookies the old key signed have expired (MaxAge), delete it. Every data plane that must
// accept another's cookies needs the same file. LoadOrCreateKeys writes a file with one new key
// (mode 0600, replaced whole through a rename) when there is none; the supervisor calls it while
// it holds its state directory's lock, so that two processes never both create one. Whoever
// reads the file can forge cookies: keep it 0600.
//
// # Cost
//
// Encode and Decode allocate nothing (Encode appends to the caller's buffer, Decode appends the
// id to it; ValueBytesMax and IDBytesMax of capacity are enough). Measured on 2 cores: Encode
// 0.32 µs, Decode 0.42 µs with one key and 0.73 µs with two (Decode computes every key's tag, so
// its time does not say which key signed; a forged cookie costs the same). HMAC is computed with
// crypto/sha256 on stack buffers from keys padded once in New, and checked against crypto/hmac:
// hmac.New per cookie costs 0.9 µs and 6 allocations, and a shared hmac hash is not safe for
// concurrent use.
package sticky
