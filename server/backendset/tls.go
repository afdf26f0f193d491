package backendset

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strings"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/dataplane/upstream"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// LoadTLS reads the files of every tls of a valid set (the set's, each backend's own), as the data
// plane must before it accepts the set: a file that cannot be read or does not hold what it should
// refuses the set with a *resource.Error naming the field and saying why
// ("backend_set.backends[1].tls.ca_file: open /x: no such file or directory"). It returns each
// distinct TLS of the set (as FromProto spells it) as an upstream.TLS, files read and the rest
// filled in. A set without TLS reads nothing and returns nil.
func LoadTLS(set *discoveryv1.BackendSet) (map[table.TLS]upstream.TLS, error) {
	var out map[table.TLS]upstream.TLS
	load := func(field string, m *discoveryv1.BackendTls) error {
		t := tlsOf(m)
		if t == nil {
			return nil
		}
		if _, done := out[*t]; done {
			return nil
		}
		u, err := LoadOne(field, *t)
		if err != nil {
			return err
		}
		if out == nil {
			out = make(map[table.TLS]upstream.TLS)
		}
		out[*t] = u
		return nil
	}
	if err := load(Prefix+".tls", set.GetTls()); err != nil {
		return nil, err
	}
	for i, b := range set.GetBackends() {
		if err := load(fmt.Sprintf("%s.backends[%d].tls", Prefix, i), b.GetTls()); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// LoadOne reads the files of t, a tls named field, into an upstream.TLS with the rest of t; its
// error is a *resource.Error naming the file's field under field.
func LoadOne(field string, t table.TLS) (upstream.TLS, error) {
	u, err := upstream.LoadTLS(upstream.TLSFiles{CAFile: t.CAFile})
	if err != nil {
		return upstream.TLS{}, fileError(field+".ca_file", err)
	}
	pair, err := upstream.LoadTLS(upstream.TLSFiles{CertFile: t.ClientCertFile, KeyFile: t.ClientKeyFile})
	if err != nil {
		sub := ".client_cert_file"
		if strings.HasPrefix(err.Error(), "upstream: client key file") {
			sub = ".client_key_file"
		}
		return upstream.TLS{}, fileError(field+sub, err)
	}
	u.Certificates = pair.Certificates
	u.ServerName, u.MinVersion, u.InsecureSkipVerify, u.NoResumption = t.ServerName, t.MinVersion, t.InsecureSkipVerify, t.NoResumption
	return u, nil
}

// fileError is err of reading a file as the error of field: the system's own words for a file
// that cannot be read ("open /x: no such file or directory"), else what was wrong in it.
func fileError(field string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &resource.Error{Field: field, Msg: pe.Error()}
	}
	return &resource.Error{Field: field, Msg: strings.TrimPrefix(err.Error(), "upstream: ")}
}

// ProbeConfig is the TLS configuration of a health probe of the backend at address (host:port)
// with u: u's, with the server name defaulted to the address's host, as a pool does it. Probes
// make one connection each: no session cache.
func ProbeConfig(u upstream.TLS, address string) (*tls.Config, error) {
	c, err := u.Config()
	if err != nil {
		return nil, err
	}
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			host = address
		}
		c.ServerName = host
	}
	return c, nil
}
