package tlsterm

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xlbproxy/xlb/internal/testutil"
)

func TestLoadClientCAs(t *testing.T) {
	dir := t.TempDir()
	a, b := testutil.NewCA(t, dir, "a"), testutil.NewCA(t, dir, "b")
	bundle := filepath.Join(dir, "bundle.pem")
	pemA, _ := os.ReadFile(a.File)
	pemB, _ := os.ReadFile(b.File)
	if err := os.WriteFile(bundle, append(pemA, pemB...), 0o600); err != nil {
		t.Fatal(err)
	}
	pool, err := LoadClientCAs(bundle)
	if err != nil {
		t.Fatalf("LoadClientCAs: %v", err)
	}
	for _, ca := range []*testutil.CA{a, b} {
		client := ca.IssueClient(t, dir, "client-of-"+ca.Cert.Subject.CommonName)
		leaf := client.TLS.Leaf
		if _, err := leaf.Verify(x509VerifyClient(pool)); err != nil {
			t.Errorf("a client certificate of CA %s does not verify with the bundle: %v", ca.Cert.Subject.CommonName, err)
		}
	}

	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not PEM\n"), 0o600)
	for _, tt := range []struct{ name, path, want string }{
		{"missing", filepath.Join(dir, "none.pem"), "tlsterm: client CA file: open " + filepath.Join(dir, "none.pem") + ": no such file or directory"},
		{"not PEM", garbage, "tlsterm: client CA file " + garbage + ": no PEM certificate that parses in it"},
	} {
		if _, err := LoadClientCAs(tt.path); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: LoadClientCAs error %v, want %q", tt.name, err, tt.want)
		}
	}
}

func x509VerifyClient(pool *x509.CertPool) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
}
