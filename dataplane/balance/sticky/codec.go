package sticky

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

const (
	// KeyBytes is the size of a signing key.
	KeyBytes = 32
	// KeysMax is the most keys of a ring: the first signs, every one verifies, so a cookie that
	// fails costs one HMAC per key.
	KeysMax = 4
	// IDBytesMax is the longest backend id a cookie carries: the control plane's bound on ids
	// (controlplane/resource.IDBytesMax), repeated here because the data plane does not import it.
	IDBytesMax = 128
	// TagBytes is the length of the truncated HMAC-SHA256 tag.
	TagBytes = 16
	// ValueBytesMax is the longest cookie value: version, issued-at, the longest id and the tag,
	// in base64.
	ValueBytesMax = ((headerBytes+IDBytesMax+TagBytes)*8 + 5) / 6

	// version is the first byte of every cookie; Decode refuses any other.
	version = 1
	// headerBytes is the version and the issued-at seconds before the id.
	headerBytes = 1 + 8
	// rawBytesMax is the longest decoded cookie.
	rawBytesMax = headerBytes + IDBytesMax + TagBytes
	// valueBytesMin is the shortest cookie value: an id of one byte.
	valueBytesMin = ((headerBytes+1+TagBytes)*8 + 5) / 6
	// blockBytes is SHA-256's block, the size of HMAC's padded key.
	blockBytes = 64
)

// ErrIDLength is Encode's refusal of a backend id that is empty or longer than IDBytesMax.
var ErrIDLength = errors.New("sticky: backend id empty or longer than 128 bytes")

// Key is one signing key.
type Key [KeyBytes]byte

// Config configures a Codec.
type Config struct {
	// Keys is the ring: Keys[0] signs, every key verifies. From 1 to KeysMax keys; none is an error.
	Keys []Key
	// MaxAge refuses, in Decode, a cookie issued more than MaxAge before now, or more than MaxAge
	// after it (another data plane's clock, or a key that leaked and signed ahead). Zero means
	// a cookie never goes stale.
	MaxAge time.Duration
}

// Codec signs and checks sticky cookie values. It is immutable and safe for concurrent use.
type Codec struct {
	keys   []hmacKey
	maxAge time.Duration
}

// hmacKey is a key padded and masked for HMAC once, so that signing is two SHA-256 sums.
type hmacKey struct {
	ipad, opad [blockBytes]byte
}

// New returns the Codec of cfg.
func New(cfg Config) (*Codec, error) {
	if len(cfg.Keys) == 0 || len(cfg.Keys) > KeysMax {
		return nil, fmt.Errorf("sticky: %d keys, want 1 to %d", len(cfg.Keys), KeysMax)
	}
	if cfg.MaxAge < 0 {
		return nil, fmt.Errorf("sticky: max age %v is negative", cfg.MaxAge)
	}
	c := &Codec{keys: make([]hmacKey, len(cfg.Keys)), maxAge: cfg.MaxAge}
	for i, k := range cfg.Keys {
		for j := range blockBytes {
			var b byte
			if j < KeyBytes {
				b = k[j]
			}
			c.keys[i].ipad[j] = b ^ 0x36
			c.keys[i].opad[j] = b ^ 0x5c
		}
	}
	return c, nil
}

// sum is HMAC-SHA256 (RFC 2104) of msg, at most rawBytesMax bytes. crypto/hmac's hash.Hash is
// stateful (one per goroutine) and hmac.New allocates; this is the same construction on stack
// buffers, checked against crypto/hmac by the tests.
func (k *hmacKey) sum(msg []byte) [sha256.Size]byte {
	var inner [blockBytes + rawBytesMax]byte
	copy(inner[:], k.ipad[:])
	n := copy(inner[blockBytes:], msg)
	var outer [blockBytes + sha256.Size]byte
	copy(outer[:], k.opad[:])
	h := sha256.Sum256(inner[:blockBytes+n])
	copy(outer[blockBytes:], h[:])
	return sha256.Sum256(outer[:])
}

// Encode appends to dst the cookie value naming backendID, issued at issuedAt (kept to the
// second), signed with the ring's first key, and returns the extended slice. It allocates only
// when dst lacks the capacity (ValueBytesMax is always enough). An id that is empty or longer
// than IDBytesMax is refused with ErrIDLength and dst is returned as it was.
func (c *Codec) Encode(dst []byte, backendID string, issuedAt time.Time) ([]byte, error) {
	if len(backendID) == 0 || len(backendID) > IDBytesMax {
		return dst, ErrIDLength
	}
	var raw [rawBytesMax]byte
	raw[0] = version
	binary.BigEndian.PutUint64(raw[1:], uint64(issuedAt.Unix()))
	n := headerBytes + copy(raw[headerBytes:], backendID)
	tag := c.keys[0].sum(raw[:n])
	n += copy(raw[n:], tag[:TagBytes])
	return base64.RawURLEncoding.AppendEncode(dst, raw[:n]), nil
}

// Decode checks a cookie value. When its format is right, one key of the ring signed it, and it
// is fresh at now (see Config.MaxAge), Decode appends the backend id to dst and returns the
// extended slice, the time the cookie was issued, and true. Otherwise it returns dst, the zero
// time and false: a forged, truncated, stale or otherwise malformed value is refused, never a
// panic. It does not allocate unless dst lacks IDBytesMax bytes of capacity.
func (c *Codec) Decode(dst, value []byte, now time.Time) (id []byte, issuedAt time.Time, ok bool) {
	if len(value) < valueBytesMin || len(value) > ValueBytesMax || !canonical(value) {
		return dst, time.Time{}, false
	}
	var raw [rawBytesMax]byte
	n, err := base64.RawURLEncoding.Decode(raw[:], value)
	if err != nil || raw[0] != version {
		return dst, time.Time{}, false
	}
	msg, tag := raw[:n-TagBytes], raw[n-TagBytes:n]
	signed := false
	for i := range c.keys {
		sum := c.keys[i].sum(msg)
		// Every key is tried whatever the outcome, so the time taken does not say which one signed.
		if subtle.ConstantTimeCompare(sum[:TagBytes], tag) == 1 {
			signed = true
		}
	}
	if !signed {
		return dst, time.Time{}, false
	}
	secs := int64(binary.BigEndian.Uint64(msg[1:headerBytes]))
	if c.maxAge > 0 {
		age := now.Unix() - secs
		if limit := int64(c.maxAge / time.Second); age > limit || age < -limit {
			return dst, time.Time{}, false
		}
	}
	return append(dst, msg[headerBytes:]...), time.Unix(secs, 0), true
}

// canonical reports whether v is base64url without padding as Encode writes it: only the
// alphabet's characters, a length that a whole number of bytes gives, and zero bits past the
// last byte. Checking first means that the decoder cannot fail (its errors allocate) and that
// one cookie has one spelling.
func canonical(v []byte) bool {
	if len(v)%4 == 1 {
		return false
	}
	for _, c := range v {
		if base64Value(c) < 0 {
			return false
		}
	}
	last := base64Value(v[len(v)-1])
	switch len(v) % 4 {
	case 2: // one byte in the last group: 4 unused bits
		return last&0x0f == 0
	case 3: // two bytes: 2 unused bits
		return last&0x03 == 0
	}
	return true
}

// base64Value is the value of c in the base64url alphabet, -1 if it is not in it.
func base64Value(c byte) int {
	switch {
	case 'A' <= c && c <= 'Z':
		return int(c - 'A')
	case 'a' <= c && c <= 'z':
		return int(c-'a') + 26
	case '0' <= c && c <= '9':
		return int(c-'0') + 52
	case c == '-':
		return 62
	case c == '_':
		return 63
	}
	return -1
}
