package tlsterm

import (
	"crypto/x509"
	"fmt"
)

// ClientCAsBytesMax bounds a file of client certificate authorities: a bundle of a few hundred
// certificates.
const ClientCAsBytesMax = 4 << 20

// LoadClientCAs reads the PEM file of the certificate authorities whose client certificates a
// listener accepts (for tls.Config.ClientCAs). A file that is missing, too large, or holds no PEM
// certificate that parses is an error naming it.
func LoadClientCAs(path string) (*x509.CertPool, error) {
	data, err := readBounded(path, ClientCAsBytesMax)
	if err != nil {
		return nil, fmt.Errorf("tlsterm: client CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("tlsterm: client CA file %s: no PEM certificate that parses in it", path)
	}
	return pool, nil
}
