package sticky

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func b64(k Key) string { return base64.StdEncoding.EncodeToString(k[:]) }

func TestParseKeys(t *testing.T) {
	k1, k2, k3, k4, k5 := testKey(1), testKey(2), testKey(3), testKey(4), testKey(5)
	for _, tc := range []struct {
		name, text string
		want       []Key
	}{
		{"one key", b64(k1) + "\n", []Key{k1}},
		{"no final newline", b64(k1), []Key{k1}},
		{"comments, blank lines, spaces, CRLF", "# keys\n\n  " + b64(k2) + "  \r\n# previous\r\n\t" + b64(k1) + "\n\n", []Key{k2, k1}},
		{"KeysMax keys", strings.Join([]string{b64(k1), b64(k2), b64(k3), b64(k4)}, "\n"), []Key{k1, k2, k3, k4}},
	} {
		got, err := ParseKeys("k", []byte(tc.text))
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name, text, want string
	}{
		{"empty", "", "sticky: keys file /x/k: no key"},
		{"comments only", "# a\n\n#b\n", "sticky: keys file /x/k: no key"},
		{"short", "# a\n" + b64(k1)[:43] + "\n", "sticky: keys file /x/k line 2: 43 characters, want a 32-byte key in base64 (44 characters with padding)"},
		{"unpadded", strings.TrimRight(b64(k1), "="), "sticky: keys file /x/k line 1: 43 characters, want a 32-byte key in base64 (44 characters with padding)"},
		{"url alphabet", strings.NewReplacer("+", "-", "/", "_").Replace(b64(Key{0xfb, 0xff, 0xfe, 1})), "sticky: keys file /x/k line 1: not a 32-byte key in standard base64 with padding"},
		{"48 bytes", base64.StdEncoding.EncodeToString(make([]byte, 48)), "sticky: keys file /x/k line 1: 64 characters, want a 32-byte key in base64 (44 characters with padding)"},
		{"33 bytes in 44 characters", base64.StdEncoding.EncodeToString(append(k1[:], 7))[:44], "sticky: keys file /x/k line 1: not a 32-byte key in standard base64 with padding"},
		{"zero", b64(Key{}), "sticky: keys file /x/k line 1: the key is all zero bytes"},
		{"duplicate", b64(k1) + "\n\n" + b64(k1), "sticky: keys file /x/k line 3: the same key as line 1"},
		{"too many", strings.Join([]string{b64(k1), b64(k2), b64(k3), b64(k4), b64(k5)}, "\n"), "sticky: keys file /x/k line 5: more than 4 keys"},
		{"two on a line", b64(k1) + " " + b64(k2), "sticky: keys file /x/k line 1: 89 characters, want a 32-byte key in base64 (44 characters with padding)"},
	} {
		_, err := ParseKeys("/x/k", []byte(tc.text))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(tc.text, "=") && strings.Contains(err.Error(), strings.TrimSpace(tc.text)[:10]) {
			t.Errorf("%s: the error quotes the secret: %v", tc.name, err)
		}
	}
}

func TestFormatKeys(t *testing.T) {
	keys := []Key{NewKey(), NewKey()}
	if keys[0] == keys[1] || keys[0] == (Key{}) {
		t.Fatalf("NewKey gave %x and %x", keys[0], keys[1])
	}
	got, err := ParseKeys("f", FormatKeys(keys))
	if err != nil || !slices.Equal(got, keys) {
		t.Errorf("ParseKeys(FormatKeys(keys)) = %v, %v", got, err)
	}
}

func TestLoadKeys(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys")
	if _, err := LoadKeys(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("a missing file: %v, want an error naming %s", err, path)
	}
	if err := os.WriteFile(path, []byte(strings.Repeat("#", KeysFileBytesMax+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeys(path); err == nil || err.Error() != "sticky: keys file "+path+": larger than 65536 bytes" {
		t.Errorf("a large file: %v", err)
	}
	if err := os.WriteFile(path, []byte("#\n"+b64(testKey(1))+"x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeys(path); err == nil || !strings.HasPrefix(err.Error(), "sticky: keys file "+path+" line 2: ") {
		t.Errorf("a bad line: %v, want an error naming %s line 2", err, path)
	}
}

// TestLoadOrCreateKeys: an absent file is created with one key, mode 0600, and later calls load
// that key; a malformed file is an error and stays as it was.
func TestLoadOrCreateKeys(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sticky.keys")
	keys, created, err := LoadOrCreateKeys(path)
	if err != nil || !created || len(keys) != 1 {
		t.Fatalf("absent: %v, created %v, %v; want one key, created", keys, created, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the file: %v, %v; want mode 0600", fi, err)
	}
	again, created, err := LoadOrCreateKeys(path)
	if err != nil || created || !slices.Equal(again, keys) {
		t.Errorf("present: %v, created %v, %v; want the same key, not created", again, created, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the directory holds %d entries, want the file alone", len(ents))
	}
	bad := []byte("not a key\n")
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKeys(path); err == nil || !strings.Contains(err.Error(), path+" line 1") {
		t.Errorf("malformed: %v, want an error naming %s line 1", err, path)
	}
	if b, _ := os.ReadFile(path); string(b) != string(bad) {
		t.Errorf("the malformed file was replaced by %q", b)
	}
	if _, _, err := LoadOrCreateKeys(filepath.Join(dir, "missing", "keys")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("in a missing directory: %v", err)
	}
}
