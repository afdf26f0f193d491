package sticky

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

// FuzzDecode: no value panics Decode, and a value it accepts is exactly what Encode writes for
// the id and time it returns (so an accepted value was signed, one cookie has one spelling).
func FuzzDecode(f *testing.F) {
	one := mustNew(f, Config{Keys: []Key{testKey(1)}})
	ring := mustNew(f, Config{Keys: []Key{testKey(2), testKey(1)}, MaxAge: time.Hour})
	for _, id := range []string{"a", "backend-1", string(bytes.Repeat([]byte{0xff}, IDBytesMax))} {
		f.Add(mustEncode(f, one, id, now))
	}
	f.Add([]byte(""))
	f.Add([]byte("AQAAAABrSdIAYmFja2VuZC0x"))
	f.Fuzz(func(t *testing.T, value []byte) {
		id, issued, ok := one.Decode(nil, value, now)
		if ok {
			again, err := one.Encode(nil, string(id), issued)
			if err != nil || !bytes.Equal(again, value) {
				t.Fatalf("accepted %q as %q at %v, which encodes as %q, %v", value, id, issued, again, err)
			}
		}
		ring.Decode(nil, value, now)
	})
}

// FuzzParseKeys: no text panics ParseKeys, and keys it returns come back from FormatKeys.
func FuzzParseKeys(f *testing.F) {
	f.Add([]byte(b64(testKey(1)) + "\n"))
	f.Add([]byte("# c\r\n\n " + b64(testKey(2)) + "\n" + b64(testKey(1))))
	f.Add([]byte("===="))
	f.Fuzz(func(t *testing.T, text []byte) {
		keys, err := ParseKeys("f", text)
		if err != nil {
			return
		}
		if len(keys) == 0 || len(keys) > KeysMax {
			t.Fatalf("%d keys without an error", len(keys))
		}
		again, err := ParseKeys("f", FormatKeys(keys))
		if err != nil || !slices.Equal(again, keys) {
			t.Fatalf("FormatKeys(%v) parses as %v, %v", keys, again, err)
		}
	})
}
