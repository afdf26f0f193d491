package config

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/xlbproxy/xlb/dataplane/tlsterm"
)

// tlsYAML is a file with one listener whose tls section is tlsSection, indented under it. The
// tls key is on line 4, its first key on line 5.
func tlsYAML(tlsSection string) string {
	var b strings.Builder
	b.WriteString("listeners:\n  - address: 127.0.0.1:8443\n    backend_set: web\n    tls:\n")
	for _, line := range strings.Split(strings.TrimSuffix(tlsSection, "\n"), "\n") {
		b.WriteString("      " + line + "\n")
	}
	b.WriteString("backend_sets:\n  - {name: web, backends: [{id: a, address: 127.0.0.1:9001}]}\n")
	return b.String()
}

// tlsFiles makes empty files a.pem, a-key.pem, b.pem, b-key.pem and ca.pem in a directory and
// returns it: the parser checks they are there, not what they hold.
func tlsFiles(t *testing.T) string {
	dir := t.TempDir()
	for _, f := range []string{"a.pem", "a-key.pem", "b.pem", "b-key.pem", "ca.pem"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestParseListenerTLS(t *testing.T) {
	dir := tlsFiles(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	tests := []struct {
		name, tls string
		want      *ListenerTLS
	}{
		{"one certificate", "certificates: [{cert_file: " + p("a.pem") + ", key_file: " + p("a-key.pem") + "}]",
			&ListenerTLS{Certificates: []tlsterm.Pair{{CertFile: p("a.pem"), KeyFile: p("a-key.pem")}}}},
		{"every key", "certificates:\n  - {cert_file: " + p("a.pem") + ", key_file: " + p("a-key.pem") + "}\n  - cert_file: " + p("b.pem") +
			"\n    key_file: " + p("b-key.pem") + "\nclient_ca_file: " + p("ca.pem") + "\nmin_version: \"1.3\"",
			&ListenerTLS{Certificates: []tlsterm.Pair{{CertFile: p("a.pem"), KeyFile: p("a-key.pem")}, {CertFile: p("b.pem"), KeyFile: p("b-key.pem")}},
				ClientCAFile: p("ca.pem"), MinVersion: tls.VersionTLS13}},
		{"min_version unquoted", "certificates: [{cert_file: " + p("a.pem") + ", key_file: " + p("a-key.pem") + "}]\nmin_version: 1.2",
			&ListenerTLS{Certificates: []tlsterm.Pair{{CertFile: p("a.pem"), KeyFile: p("a-key.pem")}}, MinVersion: tls.VersionTLS12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("xlb.yaml", []byte(tlsYAML(tt.tls)))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := cfg.Listeners[0].TLS; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("TLS:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
	cfg, err := Parse("xlb.yaml", []byte(minimal))
	if err != nil || cfg.Listeners[0].TLS != nil {
		t.Errorf("a listener without tls: TLS %+v (%v), want nil", cfg.Listeners[0].TLS, err)
	}
}

func TestParseListenerTLSErrors(t *testing.T) {
	dir := tlsFiles(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	if err := syscall.Mkfifo(p("fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := "{cert_file: " + p("a.pem") + ", key_file: " + p("a-key.pem") + "}"
	tests := []struct {
		name, tls string
		want      []string
	}{
		{"missing cert file", "certificates:\n  - {cert_file: " + p("none.pem") + ", key_file: " + p("a-key.pem") + "}",
			[]string{"xlb.yaml:6: listeners[0].tls.certificates[0].cert_file: stat " + p("none.pem") + ": no such file or directory"}},
		{"missing key file", "certificates:\n  - " + a + "\n  - cert_file: " + p("b.pem") + "\n    key_file: " + p("none-key.pem"),
			[]string{"xlb.yaml:8: listeners[0].tls.certificates[1].key_file: stat " + p("none-key.pem") + ": no such file or directory"}},
		{"a FIFO", "certificates: [{cert_file: " + p("fifo") + ", key_file: " + p("a-key.pem") + "}]",
			[]string{"xlb.yaml:5: listeners[0].tls.certificates[0].cert_file: " + p("fifo") + ": not a regular file"}},
		{"a directory", "certificates: [{cert_file: " + dir + ", key_file: " + p("a-key.pem") + "}]",
			[]string{"xlb.yaml:5: listeners[0].tls.certificates[0].cert_file: " + dir + ": not a regular file"}},
		{"missing client CA", "certificates: [" + a + "]\nclient_ca_file: " + p("none-ca.pem"),
			[]string{"xlb.yaml:6: listeners[0].tls.client_ca_file: stat " + p("none-ca.pem") + ": no such file or directory"}},
		{"no certificates key", "client_ca_file: " + p("ca.pem"),
			[]string{`xlb.yaml:5: listeners[0].tls: missing key "certificates": want at least one certificate`}},
		{"empty certificates", "certificates: []",
			[]string{`xlb.yaml:5: listeners[0].tls.certificates: want at least one certificate`}},
		{"certificates not a list", "certificates: " + p("a.pem"),
			[]string{`xlb.yaml:5: listeners[0].tls.certificates: want a list, got "` + p("a.pem") + `"`}},
		{"no key_file", "certificates:\n  - cert_file: " + p("a.pem"),
			[]string{`xlb.yaml:6: listeners[0].tls.certificates[0]: missing key "key_file"`}},
		{"empty cert_file", "certificates: [{cert_file: \"\", key_file: " + p("a-key.pem") + "}]",
			[]string{`xlb.yaml:5: listeners[0].tls.certificates[0].cert_file: want a file path, got ""`}},
		{"unknown key", "certificates: [" + a + "]\nciphers: [x]",
			[]string{`xlb.yaml:6: listeners[0].tls: unknown key "ciphers"`}},
		{"unknown certificate key", "certificates: [{cert_file: " + p("a.pem") + ", key_file: " + p("a-key.pem") + ", chain: x}]",
			[]string{`xlb.yaml:5: listeners[0].tls.certificates[0]: unknown key "chain"`}},
		{"bad min_version", "certificates: [" + a + "]\nmin_version: \"1.1\"",
			[]string{`xlb.yaml:6: listeners[0].tls.min_version: want "1.2" or "1.3", got "1.1"`}},
		{"min_version a list", "certificates: [" + a + "]\nmin_version: [1.3]",
			[]string{`xlb.yaml:6: listeners[0].tls.min_version: want a string, got a list`}},
		{"tls not a mapping", "true", []string{`xlb.yaml:5: listeners[0].tls: want a mapping, got "true"`}},
		{"certificate given twice", "certificates: [" + a + "]\ncertificates: [" + a + "]",
			[]string{`xlb.yaml:6: listeners[0].tls.certificates: given twice (first on line 5)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("xlb.yaml", []byte(tlsYAML(tt.tls)))
			if err == nil {
				t.Fatalf("Parse: no error, want %q", tt.want)
			}
			for _, want := range tt.want {
				if !hasLine(err, want) {
					t.Errorf("Parse error:\n%v\nhas no line\n%s", err, want)
				}
			}
		})
	}
}

func TestListenerTLSEqual(t *testing.T) {
	a := &ListenerTLS{Certificates: []tlsterm.Pair{{CertFile: "a", KeyFile: "k"}}}
	same := &ListenerTLS{Certificates: []tlsterm.Pair{{CertFile: "a", KeyFile: "k"}}}
	for _, tt := range []struct {
		name string
		x, y *ListenerTLS
		want bool
	}{
		{"both plain", nil, nil, true},
		{"plain and TLS", nil, a, false},
		{"the same settings", a, same, true},
		{"another key file", a, &ListenerTLS{Certificates: []tlsterm.Pair{{CertFile: "a", KeyFile: "k2"}}}, false},
		{"one more certificate", a, &ListenerTLS{Certificates: []tlsterm.Pair{{CertFile: "a", KeyFile: "k"}, {CertFile: "b", KeyFile: "k"}}}, false},
		{"a client CA", a, &ListenerTLS{Certificates: a.Certificates, ClientCAFile: "ca"}, false},
		{"a min version", a, &ListenerTLS{Certificates: a.Certificates, MinVersion: tls.VersionTLS13}, false},
	} {
		if got := tt.x.Equal(tt.y); got != tt.want {
			t.Errorf("%s: Equal = %v, want %v", tt.name, got, tt.want)
		}
	}
}
