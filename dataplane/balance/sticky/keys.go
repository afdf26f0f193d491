package sticky

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/xlbproxy/xlb/internal/atomicfile"
)

// KeysFileBytesMax bounds a keys file; a larger one is refused unread.
const KeysFileBytesMax = 64 << 10

// ParseKeys reads the text of a keys file, named name in its errors. The format: one key a line,
// in standard base64 with its padding (44 characters, what `openssl rand -base64 32` prints),
// the first key the one that signs; spaces around a key, empty lines and lines that start with
// '#' are ignored. From 1 to KeysMax keys, no two the same and none all zero.
func ParseKeys(name string, text []byte) ([]Key, error) {
	var keys []Key
	firstLine := map[Key]int{}
	keyChars := base64.StdEncoding.EncodedLen(KeyBytes)
	for n, rest := 0, text; len(rest) > 0; {
		n++
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		s := bytes.TrimSpace(line) // and the \r of CRLF
		if len(s) == 0 || s[0] == '#' {
			continue
		}
		// The line is a secret: the errors never quote it.
		var buf [KeyBytes + 1]byte // DecodedLen of 44 characters is 33
		if len(s) != keyChars {
			return nil, fmt.Errorf("sticky: keys file %s line %d: %d characters, want a %d-byte key in base64 (%d characters with padding)",
				name, n, len(s), KeyBytes, keyChars)
		}
		if m, err := base64.StdEncoding.Decode(buf[:], s); err != nil || m != KeyBytes {
			return nil, fmt.Errorf("sticky: keys file %s line %d: not a %d-byte key in standard base64 with padding", name, n, KeyBytes)
		}
		k := Key(buf[:KeyBytes])
		if k == (Key{}) {
			return nil, fmt.Errorf("sticky: keys file %s line %d: the key is all zero bytes", name, n)
		}
		if first, dup := firstLine[k]; dup {
			return nil, fmt.Errorf("sticky: keys file %s line %d: the same key as line %d", name, n, first)
		}
		if len(keys) == KeysMax {
			return nil, fmt.Errorf("sticky: keys file %s line %d: more than %d keys", name, n, KeysMax)
		}
		firstLine[k] = n
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("sticky: keys file %s: no key", name)
	}
	return keys, nil
}

// FormatKeys is the text of a keys file holding keys, which ParseKeys reads back.
func FormatKeys(keys []Key) []byte {
	b := []byte("# xlb sticky cookie keys: the first signs, all verify. Keep this file secret.\n")
	for _, k := range keys {
		b = base64.StdEncoding.AppendEncode(b, k[:])
		b = append(b, '\n')
	}
	return b
}

// LoadKeys reads the keys file at path (see ParseKeys).
func LoadKeys(path string) ([]Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sticky: keys file: %w", err)
	}
	defer f.Close()
	text, err := io.ReadAll(io.LimitReader(f, KeysFileBytesMax+1))
	if err != nil {
		return nil, fmt.Errorf("sticky: keys file %s: %w", path, err)
	}
	if len(text) > KeysFileBytesMax {
		return nil, fmt.Errorf("sticky: keys file %s: larger than %d bytes", path, KeysFileBytesMax)
	}
	return ParseKeys(path, text)
}

// NewKey returns a key from crypto/rand.
func NewKey() Key {
	var k Key
	rand.Read(k[:]) // never fails (crypto/rand crashes the program instead)
	return k
}

// WriteKeys replaces the keys file at path with keys, mode 0600, through a rename: a reader sees
// the old file or the new one.
func WriteKeys(path string, keys []Key) error {
	if err := atomicfile.Write(path, FormatKeys(keys)); err != nil {
		return fmt.Errorf("sticky: keys file %s: %w", path, err)
	}
	return nil
}

// LoadOrCreateKeys loads the keys file at path, and when there is none writes one with a new key
// first (created is then true). The caller must be the only one to create it: the supervisor
// holding its state directory's lock. Any other error (a file it cannot read, a malformed one)
// is returned as it is; a malformed file is never replaced.
func LoadOrCreateKeys(path string) (keys []Key, created bool, err error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if err := WriteKeys(path, []Key{NewKey()}); err != nil {
			return nil, false, err
		}
		created = true
	}
	keys, err = LoadKeys(path)
	return keys, created, err
}
