package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/dataplane/upstream"
)

// TLS to backends in a worker. A backend with TLS gets a pool of its own per address and TLS
// settings: two sets that reach one address with different TLS use two pools, and a change of a
// backend's TLS makes a new pool, while a backend whose TLS is unchanged keeps its pool, its warm
// connections and its session cache across generations.
//
// The files of a TLS setting are read once, when a generation first needs the setting, and kept
// with the identity of each file (device, inode, size, modification time): each later generation
// that needs the setting stats them (a few system calls per distinct setting, none per request),
// and reads them again only when one was replaced or rewritten, which then makes new pools for the
// backends that use it. A file that cannot be read is logged at ERROR once per generation that
// needs it, and the backends that need it fail to connect (answered 502) until a generation finds
// it again; the supervisor read the same files before it accepted the set, so this is a file
// removed or broken in between.

// tlsFiles is the identity of a setting's files as they were read.
type tlsFiles [3]fileID

type fileID struct {
	dev, ino      uint64
	size, mtimeNs int64
	missing       bool
}

// loadedTLS is one TLS setting with its files read: the *tls.Config its pools use, or why there is
// none.
type loadedTLS struct {
	files tlsFiles
	cfg   *tls.Config
	err   error
}

// statTLS is the identity of t's files now.
func statTLS(t table.TLS) tlsFiles {
	var ids tlsFiles
	for i, path := range [3]string{t.CAFile, t.ClientCertFile, t.ClientKeyFile} {
		if path == "" {
			continue
		}
		fi, err := os.Stat(path)
		if err != nil {
			ids[i].missing = true
			continue
		}
		ids[i].size, ids[i].mtimeNs = fi.Size(), fi.ModTime().UnixNano()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ids[i].dev, ids[i].ino = st.Dev, st.Ino
		}
	}
	return ids
}

// loadTLS reads t's files into the *tls.Config of its pools.
func loadTLS(t table.TLS, files tlsFiles) *loadedTLS {
	u, err := upstream.LoadTLS(upstream.TLSFiles{CAFile: t.CAFile, CertFile: t.ClientCertFile, KeyFile: t.ClientKeyFile})
	if err != nil {
		return &loadedTLS{files: files, err: err}
	}
	u.ServerName, u.MinVersion, u.InsecureSkipVerify, u.NoResumption = t.ServerName, t.MinVersion, t.InsecureSkipVerify, t.NoResumption
	cfg, err := u.Config()
	return &loadedTLS{files: files, cfg: cfg, err: err}
}

// tlsFor is the loaded setting t for the generation being installed, from the cache when its
// files are unchanged; seen holds the settings of this generation already looked at. poolsMu is
// held.
func (p *Proxy) tlsFor(t table.TLS, seen map[table.TLS]*loadedTLS) *loadedTLS {
	if l, ok := seen[t]; ok {
		return l
	}
	files := statTLS(t)
	l := p.tlsCache[t]
	if l == nil || l.files != files || l.err != nil {
		l = loadTLS(t, files)
		if l.err != nil {
			p.log.Error("cannot read the TLS files of a backend; its connections fail until they can be read",
				"server_name", t.ServerName, "ca_file", t.CAFile, "client_cert_file", t.ClientCertFile, "error", l.err)
		}
	}
	seen[t] = l
	return l
}

// poolKey is what a pool serves: an address, with TLS (the setting as loaded) or plain (nil).
type poolKey struct {
	address string
	tls     *loadedTLS
}

// failingDial is the dial of a pool whose TLS files could not be read.
func failingDial(err error) upstream.DialFunc {
	return func(string, string, time.Duration) (net.Conn, error) { return nil, err }
}

// tlsWarnEvery bounds how often one backend's TLS failures are logged.
const tlsWarnEvery = 10 * time.Second

// dialFailed logs a failed connect to b, and tells whether it was the TLS handshake that failed:
// at Trace, and at WARN, at most once per tlsWarnEvery per pool, when its TLS handshake failed
// (a certificate refused, a name that does not match): those are configuration errors an
// operator must see, named by backend.
func (p *Proxy) dialFailed(b *backend, err error) bool {
	p.log.Trace("connect failed", "backend", b.address, "error", err)
	var he *upstream.HandshakeError
	if !errors.As(err, &he) {
		return false
	}
	p.warnTLS(b, "TLS handshake with a backend failed", err)
	return true
}

// noAnswer is told of a read error of a connection that got no answer: a TLS alert from the
// backend there (a client certificate it refused, after a TLS 1.3 handshake that looked done) is
// logged as dialFailed logs a failed handshake.
func (c *conn) noAnswer(err error) {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" && c.backend != nil {
		c.p.warnTLS(c.backend, "a backend refused the TLS connection (alert after the handshake: a client certificate missing or refused?)", err)
	}
}

func (p *Proxy) warnTLS(b *backend, msg string, err error) {
	now := time.Now()
	p.tlsWarnMu.Lock()
	last, ok := p.tlsWarned[b.pool]
	if ok && now.Sub(last) < tlsWarnEvery {
		p.tlsWarnMu.Unlock()
		return
	}
	if p.tlsWarned == nil {
		p.tlsWarned = make(map[*upstream.Pool]time.Time)
	}
	p.tlsWarned[b.pool] = now
	p.tlsWarnMu.Unlock()
	p.log.Warn(msg, "backend_set", b.set, "backend", b.id, "address", b.address, "error", err)
}
