package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// uploadBytes is the size of the bodies uploaded: past curl's threshold for Expect: 100-continue,
// and far past xlb's default replay buffer, so that the body streams through.
const uploadBytes = 2 << 20

// digestHandler answers each request with how the body came (its Content-Length, or -1, and its
// Transfer-Encoding), its length and its sha256.
func digestHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "cl=%d te=%s len=%d sha256=%x", r.ContentLength, strings.Join(r.TransferEncoding, ","), n, h.Sum(nil))
	})
}

// TestUploadBody: a POST of a 2 MiB body through curl reaches the backend intact, with a
// Content-Length, and so does one that curl sends chunked, framed chunked to the backend too. Each
// is sent twice in one curl invocation, so that the second goes over the connection the first kept.
func TestUploadBody(t *testing.T) {
	t.Parallel()
	body := make([]byte, uploadBytes)
	rand.NewChaCha8([32]byte{'x', 'l', 'b'}).Read(body)
	sum := sha256.Sum256(body)
	file := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(file, body, 0o600); err != nil {
		t.Fatal(err)
	}
	backend := newBackend(t, digestHandler())
	x := startXLB(t, runArgs("--backend", addrOf(backend)))

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"content-length", nil, fmt.Sprintf("cl=%d te= len=%d sha256=%s", uploadBytes, uploadBytes, hex.EncodeToString(sum[:]))},
		{"chunked", []string{"-H", "Transfer-Encoding: chunked"}, fmt.Sprintf("cl=-1 te=chunked len=%d sha256=%s", uploadBytes, hex.EncodeToString(sum[:]))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-X", "POST", "--data-binary", "@" + file}, tc.args...)
			res := curlMany(t, x.url("/upload"), 2, args...)
			connects := 0
			for i, r := range res {
				if r.status != http.StatusOK || r.body != tc.want {
					t.Errorf("upload %d: status %d, backend saw %q\nwant status 200, %q", i+1, r.status, r.body, tc.want)
				}
				connects += r.connects
			}
			if connects != 1 {
				t.Errorf("curl opened %d connections for 2 uploads, want 1 (keep-alive)", connects)
			}
		})
	}
}
