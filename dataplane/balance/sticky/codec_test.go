package sticky

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var now = time.Unix(1_800_000_000, 0)

// testKey is a key made from one byte, so that tests read which key is which.
func testKey(b byte) Key {
	var k Key
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func mustNew(t testing.TB, cfg Config) *Codec {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustEncode(t testing.TB, c *Codec, id string, at time.Time) []byte {
	t.Helper()
	v, err := c.Encode(nil, id, at)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// cookieOctet reports whether b may appear in a cookie value unquoted (RFC 6265 §4.1.1).
func cookieOctet(b byte) bool {
	return b == 0x21 || 0x23 <= b && b <= 0x2b || 0x2d <= b && b <= 0x3a || 0x3c <= b && b <= 0x5b || 0x5d <= b && b <= 0x7e
}

func TestRoundTrip(t *testing.T) {
	c := mustNew(t, Config{Keys: []Key{testKey(1)}})
	for _, id := range []string{"a", "backend-1", "10.0.0.7:8080", "zoné/ünïcode", strings.Repeat("x", IDBytesMax)} {
		for _, at := range []time.Time{now, time.Unix(0, 0), time.Unix(-5, 0), now.Add(1500 * time.Millisecond)} {
			dst := []byte("prefix=")
			v, err := c.Encode(dst, id, at)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(v, dst) {
				t.Fatalf("Encode did not append to dst: %q", v)
			}
			v = v[len(dst):]
			if len(v) > ValueBytesMax {
				t.Errorf("id of %d bytes: value of %d bytes, ValueBytesMax %d", len(id), len(v), ValueBytesMax)
			}
			for _, b := range v {
				if !cookieOctet(b) {
					t.Fatalf("value %q has %q, not allowed in a cookie value", v, b)
				}
			}
			got, issued, ok := c.Decode([]byte("x"), v, at)
			if !ok || string(got) != "x"+id || !issued.Equal(at.Truncate(time.Second)) {
				t.Errorf("Decode(Encode(%q, %v)) = %q, %v, %v", id, at, got, issued, ok)
			}
		}
	}
	// The largest value is exactly ValueBytesMax, and the shortest id gives the shortest value.
	if v := mustEncode(t, c, strings.Repeat("x", IDBytesMax), now); len(v) != ValueBytesMax {
		t.Errorf("the longest id gives %d bytes, ValueBytesMax is %d", len(v), ValueBytesMax)
	}
	if v := mustEncode(t, c, "x", now); len(v) != valueBytesMin {
		t.Errorf("a 1-byte id gives %d bytes, valueBytesMin is %d", len(v), valueBytesMin)
	}
}

// TestHMAC checks the HMAC written on stack buffers against crypto/hmac.
func TestHMAC(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		var k Key
		for i := range k {
			k[i] = byte(r.Uint32())
		}
		msg := make([]byte, r.IntN(rawBytesMax+1))
		for i := range msg {
			msg[i] = byte(r.Uint32())
		}
		c := mustNew(t, Config{Keys: []Key{k}})
		got := c.keys[0].sum(msg)
		m := hmac.New(sha256.New, k[:])
		m.Write(msg)
		if want := m.Sum(nil); !bytes.Equal(got[:], want) {
			t.Fatalf("key %x, message %x: HMAC %x, crypto/hmac %x", k, msg, got, want)
		}
	}
}

// TestKeyRotation: the first key signs, every key of the ring verifies, a key that left the ring
// no longer does.
func TestKeyRotation(t *testing.T) {
	k1, k2, k3 := testKey(1), testKey(2), testKey(3)
	old := mustNew(t, Config{Keys: []Key{k1}})
	rotated := mustNew(t, Config{Keys: []Key{k2, k1}})
	again := mustNew(t, Config{Keys: []Key{k3, k2}})
	v1 := mustEncode(t, old, "b1", now)
	v2 := mustEncode(t, rotated, "b2", now)
	for _, tc := range []struct {
		name  string
		c     *Codec
		value []byte
		want  bool
	}{
		{"the rotated ring verifies the old key's cookie", rotated, v1, true},
		{"the rotated ring verifies its own", rotated, v2, true},
		{"the old ring does not know the new key", old, v2, false},
		{"a ring without the old key refuses its cookie", again, v1, false},
		{"the ring after next verifies the middle key", again, v2, true},
	} {
		if _, _, ok := tc.c.Decode(nil, tc.value, now); ok != tc.want {
			t.Errorf("%s: ok = %v", tc.name, ok)
		}
	}
	if bytes.Equal(v2, mustEncode(t, mustNew(t, Config{Keys: []Key{k1, k2}}), "b2", now)) {
		t.Error("a ring signed with its second key")
	}
}

// resign returns the value of raw (version, issued-at, id) with a valid tag of key k.
func resign(t *testing.T, k Key, raw []byte) []byte {
	c := mustNew(t, Config{Keys: []Key{k}})
	tag := c.keys[0].sum(raw)
	return base64.RawURLEncoding.AppendEncode(nil, append(append([]byte(nil), raw...), tag[:TagBytes]...))
}

// standardAlphabet returns a good cookie of c spelled in the standard base64 alphabet ('+' and
// '/' for '-' and '_'), which must be refused.
func standardAlphabet(t *testing.T, c *Codec) []byte {
	for i := 0; ; i++ {
		v := mustEncode(t, c, "b"+strings.Repeat("?", i%40)+string(rune('a'+i%26)), now)
		if bytes.ContainsAny(v, "-_") {
			v = bytes.ReplaceAll(v, []byte("-"), []byte("+"))
			return bytes.ReplaceAll(v, []byte("_"), []byte("/"))
		}
	}
}

func TestRefused(t *testing.T) {
	k := testKey(1)
	c := mustNew(t, Config{Keys: []Key{k}, MaxAge: time.Hour})
	good := mustEncode(t, c, "backend-1", now)
	if _, _, ok := c.Decode(nil, good, now); !ok {
		t.Fatal("the good cookie is refused")
	}
	raw, _ := base64.RawURLEncoding.DecodeString(string(good))
	body := raw[:len(raw)-TagBytes]
	refuse := map[string][]byte{
		"empty":               {},
		"another key":         mustEncode(t, mustNew(t, Config{Keys: []Key{testKey(9)}}), "backend-1", now),
		"padding":             append(append([]byte(nil), good...), '='),
		"standard alphabet":   standardAlphabet(t, c),
		"a space":             append([]byte(" "), good...),
		"version 2":           resign(t, k, append([]byte{2}, body[1:]...)),
		"version 0":           resign(t, k, append([]byte{0}, body[1:]...)),
		"no id":               resign(t, k, body[:headerBytes]),
		"issued an hour ago+": mustEncode(t, c, "backend-1", now.Add(-time.Hour-time.Second)),
		"issued in an hour+":  mustEncode(t, c, "backend-1", now.Add(time.Hour+time.Second)),
		"too long":            mustEncode(t, c, strings.Repeat("x", IDBytesMax), now)[:ValueBytesMax-1],
		"longer than a value": append(mustEncode(t, c, strings.Repeat("x", IDBytesMax), now), "AAAA"...),
		"another's tail":      append(append([]byte(nil), good[:len(good)-22]...), mustEncode(t, c, "backend-2", now)[len(good)-22:]...),
	}
	// A value whose last character carries bits past the last byte decodes to the same bytes
	// with a lax decoder: one cookie, one spelling.
	if len(good)%4 != 0 {
		lax := append([]byte(nil), good...)
		lax[len(lax)-1] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[base64Value(lax[len(lax)-1])|1]
		refuse["bits past the end"] = lax
	}
	for name, v := range refuse {
		if id, _, ok := c.Decode([]byte("dst"), v, now); ok || string(id) != "dst" {
			t.Errorf("%s (%q): Decode = %q, %v; want dst unchanged and false", name, v, id, ok)
		}
	}
	// Every truncation, and every change of one character, is refused.
	for n := range len(good) {
		if _, _, ok := c.Decode(nil, good[:n], now); ok {
			t.Errorf("truncated to %d characters: accepted", n)
		}
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range good {
		for j := range len(alphabet) {
			v := append([]byte(nil), good...)
			if v[i] = alphabet[j]; v[i] == good[i] {
				continue
			}
			if _, _, ok := c.Decode(nil, v, now); ok {
				t.Fatalf("character %d changed to %q: accepted", i, alphabet[j])
			}
		}
	}
	// At the edges of MaxAge the cookie is still fresh.
	for _, at := range []time.Time{now.Add(-time.Hour), now.Add(time.Hour)} {
		if _, _, ok := c.Decode(nil, mustEncode(t, c, "b", at), now); !ok {
			t.Errorf("issued at now%+v: refused, MaxAge is an hour", at.Sub(now))
		}
	}
}

func TestEncodeIDLength(t *testing.T) {
	c := mustNew(t, Config{Keys: []Key{testKey(1)}})
	for _, id := range []string{"", strings.Repeat("x", IDBytesMax+1)} {
		dst, err := c.Encode([]byte("dst"), id, now)
		if !errors.Is(err, ErrIDLength) || string(dst) != "dst" {
			t.Errorf("id of %d bytes: %q, %v; want dst unchanged and ErrIDLength", len(id), dst, err)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "sticky: 0 keys, want 1 to 4"},
		{Config{Keys: make([]Key, 5)}, "sticky: 5 keys, want 1 to 4"},
		{Config{Keys: []Key{testKey(1)}, MaxAge: -time.Second}, "sticky: max age -1s is negative"},
	} {
		if _, err := New(tc.cfg); err == nil || err.Error() != tc.want {
			t.Errorf("New(%+v): %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestAllocs: encoding into a buffer with room, decoding a good cookie and refusing a forged one
// allocate nothing.
func TestAllocs(t *testing.T) {
	c := mustNew(t, Config{Keys: []Key{testKey(2), testKey(1)}, MaxAge: time.Hour})
	good := mustEncode(t, c, "backend-17", now)
	forged := append([]byte(nil), good...)
	forged[3] ^= 1
	dst := make([]byte, 0, ValueBytesMax)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := c.Encode(dst[:0], "backend-17", now); err != nil {
			panic(err)
		}
		if _, _, ok := c.Decode(dst[:0], good, now); !ok {
			panic("refused")
		}
		if _, _, ok := c.Decode(dst[:0], forged, now); ok {
			panic("accepted")
		}
	}); n != 0 {
		t.Errorf("%.1f allocations", n)
	}
}

func BenchmarkEncode(b *testing.B) {
	c := mustNew(b, Config{Keys: []Key{testKey(1)}})
	dst := make([]byte, 0, ValueBytesMax)
	b.ReportAllocs()
	for b.Loop() {
		c.Encode(dst[:0], "backend-17", now)
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, keys := range []int{1, 2} {
		ring := make([]Key, keys)
		for i := range ring {
			ring[i] = testKey(byte(i))
		}
		c := mustNew(b, Config{Keys: ring, MaxAge: time.Hour})
		v := mustEncode(b, c, "backend-17", now)
		dst := make([]byte, 0, IDBytesMax)
		b.Run(map[int]string{1: "one key", 2: "two keys"}[keys], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, ok := c.Decode(dst[:0], v, now); !ok {
					b.Fatal("refused")
				}
			}
		})
	}
}
