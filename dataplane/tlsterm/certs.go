package tlsterm

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

const (
	// PairsMax bounds the pairs of one Store.
	PairsMax = 4096
	// PEMBytesMax bounds a certificate or key file: a chain of a few certificates is a few KiB.
	PEMBytesMax = 1 << 20
)

// Pair is a certificate and its private key, as two PEM files. The certificate file holds the
// leaf first, then any intermediates, which are sent with it; the key file holds one PKCS #1,
// PKCS #8 or SEC 1 private key. One file may hold both (give it as both).
type Pair struct {
	CertFile, KeyFile string
}

// StoreConfig is what a Store needs. The zero value of every field but Pairs means its documented
// default.
type StoreConfig struct {
	// Pairs are the certificates served, in order: for a name that several certificates are for,
	// the first wins, and the first pair is the default (see the package doc). Required: one pair
	// at least, PairsMax at most.
	Pairs []Pair
	// Poll is how often Watch looks at the files. Zero means 1s.
	Poll time.Duration
	// Logger is the store's: Watch logs each reload it makes, Error when a pair failed. Nil means
	// a null logger.
	Logger hclog.Logger
}

// Store holds the certificates of a listener and chooses one for each handshake by the name the
// client asked for (SNI). Its GetCertificate is for a tls.Config; Reload and Watch replace its
// certificates from their files while it serves.
type Store struct {
	cfg   StoreConfig
	log   hclog.Logger
	files []string // every pair's cert file and key file, in order: what Watch stats
	// cur is the generation served: GetCertificate loads it, a reload swaps it whole.
	cur atomic.Pointer[certSet]

	// mu serialises reloads. The handshake path never takes it.
	mu sync.Mutex
	// stamps are those of files as they were just before the last reload read them.
	stamps []stamp
	status ReloadStatus
}

// ReloadStatus says how the last reload went.
type ReloadStatus struct {
	// Reloads counts the reloads since New, by Reload or by Watch (New's load not counted).
	Reloads uint64
	// Err is the last reload's error: nil when every pair loaded, else the pairs that failed,
	// each of which serves its previous certificate.
	Err error
}

// certSet is one generation of a Store: immutable once published.
type certSet struct {
	certs []*tls.Certificate // by pair, the last that loaded
	exact map[string]*tls.Certificate
	wild  map[string]*tls.Certificate // by what follows "*." in the certificate's name
}

// NewStore loads every pair of cfg. A pair that does not load is an error naming its file: a
// listener does not start with a certificate missing.
func NewStore(cfg StoreConfig) (*Store, error) {
	if len(cfg.Pairs) == 0 {
		return nil, errors.New("tlsterm: no certificate: at least one pair (cert file, key file) is needed")
	}
	if len(cfg.Pairs) > PairsMax {
		return nil, fmt.Errorf("tlsterm: %d certificate pairs, more than the %d allowed", len(cfg.Pairs), PairsMax)
	}
	s := &Store{cfg: cfg, log: cfg.Logger}
	if s.cfg.Poll <= 0 {
		s.cfg.Poll = time.Second
	}
	if s.log == nil {
		s.log = hclog.NewNullLogger()
	}
	for i, p := range cfg.Pairs {
		if p.CertFile == "" || p.KeyFile == "" {
			return nil, fmt.Errorf("tlsterm: certificate pair %d: both a cert file and a key file are needed (got cert %q, key %q)", i, p.CertFile, p.KeyFile)
		}
		s.files = append(s.files, p.CertFile, p.KeyFile)
	}
	s.stamps = stampAll(s.files)
	certs := make([]*tls.Certificate, len(cfg.Pairs))
	var errs []error
	for i, p := range cfg.Pairs {
		c, err := loadPair(p)
		errs = append(errs, err)
		certs[i] = c
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.cur.Store(newCertSet(certs))
	return s, nil
}

// GetCertificate chooses the certificate for hello, for tls.Config.GetCertificate. It takes no
// lock and never fails: a name no certificate is for gets the default.
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cur.Load().pick(hello.ServerName), nil
}

// Reload re-reads every pair's files and swaps the new set in at once: a handshake sees the old
// set or the new, never a mix. A pair whose file is missing, bad, or whose key does not match its
// certificate keeps its previous certificate, and is named in the error; the other pairs take
// their new files.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked(stampAll(s.files))
}

// reloadLocked reloads every pair; stamps are the files' as stat'ed before it reads them, so that
// a file replaced while it reads is seen as changed by the next look.
func (s *Store) reloadLocked(stamps []stamp) error {
	old := s.cur.Load()
	certs := make([]*tls.Certificate, len(s.cfg.Pairs))
	var errs []error
	for i, p := range s.cfg.Pairs {
		c, err := loadPair(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w (its previous certificate keeps serving)", err))
			c = old.certs[i]
		}
		certs[i] = c
	}
	s.stamps = stamps
	s.status.Reloads++
	s.status.Err = errors.Join(errs...)
	if len(errs) < len(certs) {
		s.cur.Store(newCertSet(certs))
	}
	return s.status.Err
}

// Status says how the last reload went.
func (s *Store) Status() ReloadStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Watch reloads the store whenever one of its files changed, looking every Poll, until ctx is
// done. It reloads at most once a look, and a file that fails is not read again until it changes:
// a broken file is logged once, not every second. Run it in a goroutine of its own.
func (s *Store) Watch(ctx context.Context) {
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := stampAll(s.files)
		s.mu.Lock()
		changed := !slices.Equal(now, s.stamps)
		var err error
		if changed {
			err = s.reloadLocked(now)
		}
		s.mu.Unlock()
		switch {
		case !changed:
		case err != nil:
			s.log.Error("certificates reloaded, with errors", "error", err)
		default:
			s.log.Info("certificates reloaded", "pairs", len(s.cfg.Pairs))
		}
	}
}

func stampAll(files []string) []stamp {
	out := make([]stamp, len(files))
	for i, f := range files {
		out[i] = stampOf(f)
	}
	return out
}

// loadPair reads and checks p; its error names the file at fault.
func loadPair(p Pair) (*tls.Certificate, error) {
	certPEM, err := readBounded(p.CertFile, PEMBytesMax)
	if err != nil {
		return nil, fmt.Errorf("tlsterm: certificate: %w", err)
	}
	keyPEM, err := readBounded(p.KeyFile, PEMBytesMax)
	if err != nil {
		return nil, fmt.Errorf("tlsterm: key: %w", err)
	}
	// The certificate first, on its own, so that its faults name its file; X509KeyPair then
	// finds only the key's.
	rest, der := certPEM, []byte(nil)
	for len(rest) > 0 {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			der = b.Bytes
			break
		}
	}
	if der == nil {
		return nil, fmt.Errorf("tlsterm: certificate %s: no PEM CERTIFICATE block in it", p.CertFile)
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		return nil, fmt.Errorf("tlsterm: certificate %s: %w", p.CertFile, err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsterm: key %s (for certificate %s): %w", p.KeyFile, p.CertFile, err)
	}
	if c.Leaf == nil { // X509KeyPair fills it unless GODEBUG x509keypairleaf=0
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tlsterm: certificate %s: %w", p.CertFile, err)
		}
	}
	return &c, nil
}

// newCertSet indexes certs by the DNS names of their SANs (the common name is not a name: clients
// have ignored it for years). For a name several certificates are for, the first wins.
func newCertSet(certs []*tls.Certificate) *certSet {
	cs := &certSet{certs: certs, exact: map[string]*tls.Certificate{}, wild: map[string]*tls.Certificate{}}
	for _, c := range certs {
		for _, n := range c.Leaf.DNSNames {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			m, key := cs.exact, n
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				m, key = cs.wild, rest
			}
			if key == "" || strings.Contains(key, "*") {
				continue // not a name a client can ask for, nor a wildcard of RFC 6125
			}
			if _, dup := m[key]; !dup {
				m[key] = c
			}
		}
	}
	return cs
}

// pick chooses for name: the certificate for exactly it, else the wildcard one for its parent
// (*.example.com for a.example.com, neither for example.com nor for a.b.example.com), else the
// first pair's.
func (cs *certSet) pick(name string) *tls.Certificate {
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return cs.certs[0]
	}
	if hasUpper(name) {
		name = strings.ToLower(name) // allocates, for the rare client that sends capitals
	}
	if c, ok := cs.exact[name]; ok {
		return c
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c, ok := cs.wild[name[i+1:]]; ok {
			return c
		}
	}
	return cs.certs[0]
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}
