package tlsterm

import "crypto/tls"

// ALPN is the one application protocol a listener offers.
const ALPN = "http/1.1"

// ServerConfig is the tls.Config of a listener serving certs: TLS 1.2 at least, ALPN http/1.1,
// Go's default cipher suites and key exchanges, session tickets on. Its session ticket keys are
// Go's own, made at random per process, until a TicketLoader sets the shared ones. Serve from the
// returned config itself: a Clone would not get the ticket keys a TicketLoader sets later.
func ServerConfig(certs *Store) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{ALPN},
		GetCertificate: certs.GetCertificate,
		// CipherSuites and CurvePreferences nil: Go's defaults, which follow its releases
		// (no RSA key exchange, no 3DES, no RC4, no CBC with SHA-256; X25519MLKEM768 first).
		// SessionTicketsDisabled false: tickets on.
	}
}
