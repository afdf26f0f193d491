package config

import (
	"crypto/tls"

	"go.yaml.in/yaml/v3"

	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/dataplane/upstream"
)

// tlsKey decodes the tls of a set or of a backend (the proto's BackendTls, key for key), recording
// the node of each key so that the control plane's errors on it get their lines:
//
//	tls:
//	  server_name: api.internal        # default: the backend's host
//	  ca_file: /etc/xlb/backend-ca.pem # default: the system roots
//	  client_cert_file: /etc/xlb/client.pem   # mTLS: both or neither
//	  client_key_file: /etc/xlb/client-key.pem
//	  min_version: "1.3"               # "1.2" (the default) or "1.3"
//	  insecure_skip_verify: false      # true: no verification (logged at WARN)
//	  session_resumption: true         # false: every connection a full handshake
//
// A tls with no keys ({} or nothing) is TLS with every default. The files are only named here:
// the data plane reads them when it applies the set.
func (d *decoder) tlsKey(n *yaml.Node, path string, nodes setNodes) *table.TLS {
	t := &table.TLS{}
	if isNull(resolve(n)) {
		return t
	}
	d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		at := path + "." + key
		nodes[at] = v
		str := func(dst *string) {
			if s, ok := d.str(v, at); ok {
				*dst = s
			}
		}
		switch key {
		case "server_name":
			str(&t.ServerName)
		case "ca_file":
			str(&t.CAFile)
		case "client_cert_file":
			str(&t.ClientCertFile)
		case "client_key_file":
			str(&t.ClientKeyFile)
		case "min_version":
			if s, ok := d.str(v, at); ok {
				ver, err := upstream.ParseTLSVersion(s)
				switch {
				case err != nil || s == "":
					d.errorf(v, at, `want "1.2" or "1.3", got %q`, s)
				case ver == tls.VersionTLS13:
					t.MinVersion = ver
				}
			}
		case "insecure_skip_verify":
			if b, ok := d.boolean(v, at); ok {
				t.InsecureSkipVerify = b
			}
		case "session_resumption":
			if b, ok := d.boolean(v, at); ok {
				t.NoResumption = !b
			}
		default:
			delete(nodes, at)
			return false
		}
		return true
	})
	return t
}
