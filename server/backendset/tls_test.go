package backendset

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/dataplane/table"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/testutil"
)

// TestLoadTLS: the files of a set's TLS are read, once per distinct setting, into upstream.TLS with
// the rest of the setting; a file that cannot be read or holds the wrong thing is refused with an
// error naming its field (the set's tls or the backend's own) in the system's words.
func TestLoadTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	client := ca.IssueClient(t, dir, "client")
	other := ca.IssueClient(t, dir, "other")
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	missing := filepath.Join(dir, "missing.pem")

	set := func(setTLS *discoveryv1.BackendTls, own ...*discoveryv1.BackendTls) *discoveryv1.BackendSet {
		s := &discoveryv1.BackendSet{Name: "web", Tls: setTLS}
		for i, o := range own {
			s.Backends = append(s.Backends, &discoveryv1.Backend{Id: string(rune('a' + i)), Address: "127.0.0.1", Port: 443, Tls: o})
		}
		if err := resource.Validate(Prefix, s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := &discoveryv1.BackendTls{CaFile: ca.File, ClientCertFile: client.CertFile, ClientKeyFile: client.KeyFile,
		ServerName: "web.example", MinVersion: "1.3", SessionResumption: discoveryv1.SessionResumption_SESSION_RESUMPTION_OFF}
	loaded, err := LoadTLS(set(good, nil, &discoveryv1.BackendTls{InsecureSkipVerify: true}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 2 {
		t.Fatalf("%d settings loaded, want 2", len(loaded))
	}
	u := loaded[*tlsOf(good)]
	if u.RootCAs == nil || len(u.Certificates) != 1 || u.ServerName != "web.example" || u.MinVersion != 0x0304 || !u.NoResumption || u.InsecureSkipVerify {
		t.Errorf("loaded %+v", u)
	}
	if u := loaded[table.TLS{InsecureSkipVerify: true}]; !u.InsecureSkipVerify || u.RootCAs != nil {
		t.Errorf("the insecure setting loaded as %+v", u)
	}
	if got, err := LoadTLS(set(nil, nil)); got != nil || err != nil {
		t.Errorf("a set without TLS: %v, %v", got, err)
	}

	for _, tc := range []struct {
		name string
		set  *discoveryv1.BackendSet
		want string
	}{
		{"a missing CA file of a backend", set(nil, nil, &discoveryv1.BackendTls{CaFile: missing}),
			"backend_set.backends[1].tls.ca_file: open " + missing + ": no such file or directory"},
		{"a missing CA file of the set", set(&discoveryv1.BackendTls{CaFile: missing}, nil),
			"backend_set.tls.ca_file: open " + missing + ": no such file or directory"},
		{"a CA file that is not PEM", set(&discoveryv1.BackendTls{CaFile: notPEM}),
			"backend_set.tls.ca_file: CA file " + notPEM + " holds no PEM certificate"},
		{"a missing key", set(nil, &discoveryv1.BackendTls{ClientCertFile: client.CertFile, ClientKeyFile: missing}),
			"backend_set.backends[0].tls.client_key_file: open " + missing + ": no such file or directory"},
		{"a missing certificate", set(nil, &discoveryv1.BackendTls{ClientCertFile: missing, ClientKeyFile: client.KeyFile}),
			"backend_set.backends[0].tls.client_cert_file: open " + missing + ": no such file or directory"},
		{"a key that is not the certificate's", set(nil, &discoveryv1.BackendTls{ClientCertFile: client.CertFile, ClientKeyFile: other.KeyFile}),
			"backend_set.backends[0].tls.client_cert_file: client certificate " + client.CertFile + " with key " + other.KeyFile + ": tls: private key does not match public key"},
	} {
		_, err := LoadTLS(tc.set)
		if _, ok := err.(*resource.Error); !ok || err.Error() != tc.want {
			t.Errorf("%s: %v\nwant %s", tc.name, err, tc.want)
		}
	}
}
