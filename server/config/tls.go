package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/xlbproxy/xlb/dataplane/tlsterm"
)

// ListenerTLS is how a listener terminates TLS for its clients (dataplane/tlsterm). Its shape is
// fixed when xlb starts: a change of it in the file needs a restart (or an upgrade). The files it
// names are read again while serving: a certificate or key replaced on disk is served within a
// second, and one that does not load is logged while the one before it serves on.
type ListenerTLS struct {
	// Certificates are the certificates served, chosen by the name the client asks for (SNI);
	// the first is the default, for a client that asks for no name or one no certificate is for.
	// At least one, tlsterm.PairsMax at most.
	Certificates []tlsterm.Pair
	// ClientCAFile, when set, is a PEM file of the certificate authorities whose client
	// certificates are accepted: every client must then present one (mutual TLS). Empty means
	// clients are not asked for a certificate. The file is read when a worker starts.
	ClientCAFile string
	// MinVersion is the oldest TLS version served: tls.VersionTLS12 or tls.VersionTLS13. Zero
	// means TLS 1.2.
	MinVersion uint16
}

// Equal reports whether a and b are the same settings (nil is plain TCP).
func (a *ListenerTLS) Equal(b *ListenerTLS) bool {
	if a == nil || b == nil {
		return a == b
	}
	if len(a.Certificates) != len(b.Certificates) || a.ClientCAFile != b.ClientCAFile || a.MinVersion != b.MinVersion {
		return false
	}
	for i := range a.Certificates {
		if a.Certificates[i] != b.Certificates[i] {
			return false
		}
	}
	return true
}

// ParseTLSVersion reads a TLS version of the file: "1.2" or "1.3".
func ParseTLSVersion(s string) (uint16, error) {
	switch s {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, errors.New(`want "1.2" or "1.3"`)
}

// listenerTLS decodes a listener's tls section:
//
//	tls:
//	  certificates:
//	    - {cert_file: /etc/xlb/a.pem, key_file: /etc/xlb/a-key.pem}
//	  client_ca_file: /etc/xlb/clients-ca.pem
//	  min_version: "1.3"
//
// Each file must exist and be readable: what it holds is checked when xlb starts
// (tlsterm.NewStore), and again at each reload of the certificates, not here, so that a
// certificate replaced while the file is edited does not make the edit fail.
func (d *decoder) listenerTLS(n *yaml.Node, path string) *ListenerTLS {
	t := &ListenerTLS{}
	var certsKey *yaml.Node
	ok := d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		switch key {
		case "certificates":
			certsKey = k
			items := d.sequence(v, path+".certificates")
			if len(items) == 0 && (isNull(v) || v.Kind == yaml.SequenceNode) {
				d.errorf(k, path+".certificates", "want at least one certificate")
			}
			if len(items) > tlsterm.PairsMax {
				d.errorf(k, path+".certificates", "%d certificates, more than the %d allowed", len(items), tlsterm.PairsMax)
				return true
			}
			for i, cn := range items {
				if p, ok := d.certificate(cn, index(path+".certificates", i)); ok {
					t.Certificates = append(t.Certificates, p)
				}
			}
		case "client_ca_file":
			if s, ok := d.filePath(v, path+".client_ca_file"); ok {
				t.ClientCAFile = s
			}
		case "min_version":
			if s, ok := d.str(v, path+".min_version"); ok {
				ver, err := ParseTLSVersion(s)
				if err != nil {
					d.errorf(v, path+".min_version", "%v, got %q", err, s)
				}
				t.MinVersion = ver
			}
		default:
			return false
		}
		return true
	})
	if !ok {
		return nil
	}
	if certsKey == nil {
		d.errorf(n, path, `missing key "certificates": want at least one certificate`)
	}
	return t
}

// certificate decodes one {cert_file, key_file}.
func (d *decoder) certificate(n *yaml.Node, path string) (tlsterm.Pair, bool) {
	var p tlsterm.Pair
	var certNode, keyNode *yaml.Node
	ok := d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		switch key {
		case "cert_file":
			certNode = v
			p.CertFile, _ = d.filePath(v, path+".cert_file")
		case "key_file":
			keyNode = v
			p.KeyFile, _ = d.filePath(v, path+".key_file")
		default:
			return false
		}
		return true
	})
	if !ok {
		return p, false
	}
	d.required(certNode, n, path, "cert_file")
	d.required(keyNode, n, path, "key_file")
	return p, p.CertFile != "" && p.KeyFile != ""
}

// filePath reads the path of a file that must exist and be readable now.
func (d *decoder) filePath(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if s == "" {
		d.errorf(n, path, `want a file path, got ""`)
		return "", false
	}
	if err := readable(s); err != nil {
		d.errorf(n, path, "%v", err)
		return "", false
	}
	return s, true
}

// readable checks that path is a regular file this process can open. It stats before it opens:
// opening a FIFO would wait for a writer.
func readable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}
