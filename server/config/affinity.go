package config

import (
	"go.yaml.in/yaml/v3"

	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/server/backendset"
)

// The affinity keys of a backend set (the proto's HashOn and Sticky, key for key):
//
//	policy: maglev
//	hash_on: {header: x-user}      # or {cookie: sid}, or client_address
//	sticky:                        # a signed cookie pinning each client; {} = the defaults
//	  cookie_name: xlb_backend
//	  path: /
//	  max_age: 0s                  # 0: a session cookie; else whole seconds, at most 400 days
//	  same_site: lax               # strict | none (none is always Secure)
//	  http_only: true
//
// The decoder checks the form; the control plane's rules (checkSet) check the values, with the
// line of the key they name.

// hashOn decodes hash_on: a mapping of one key (header or cookie, with a name; client_address
// with {} or nothing) or the word client_address.
func (d *decoder) hashOn(n *yaml.Node, path string, nodes setNodes) table.HashOn {
	var h table.HashOn
	if r := resolve(n); r.Kind == yaml.ScalarNode && r.Value == "client_address" {
		return table.HashOn{Kind: table.HashClientAddress}
	}
	keys := 0
	d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		at := path + "." + key
		nodes[at] = v
		switch key {
		case "header", "cookie":
			if s, ok := d.str(v, at); ok {
				h = table.HashOn{Kind: table.HashHeader, Name: s}
				if key == "cookie" {
					h.Kind = table.HashCookie
				}
			}
		case "client_address":
			if r := resolve(v); !isNull(r) && !(r.Kind == yaml.MappingNode && len(r.Content) == 0) {
				d.errorf(v, at, "want {} or nothing")
			}
			h = table.HashOn{Kind: table.HashClientAddress}
		default:
			delete(nodes, at)
			return false
		}
		if keys++; keys > 1 {
			d.errorf(k, at, "hash_on takes one key: header, cookie or client_address")
		}
		return true
	})
	if keys == 0 && resolve(n).Kind == yaml.MappingNode {
		d.errorf(n, path, "want one key: header, cookie or client_address")
	}
	return h
}

// sticky decodes sticky; an empty value is a cookie with every default.
func (d *decoder) sticky(n *yaml.Node, path string, nodes setNodes) *table.Sticky {
	st := &table.Sticky{}
	if isNull(resolve(n)) {
		return st
	}
	d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		at := path + "." + key
		nodes[at] = v
		switch key {
		case "cookie_name":
			if s, ok := d.str(v, at); ok {
				st.CookieName = s
			}
		case "path":
			if s, ok := d.str(v, at); ok {
				st.Path = s
			}
		case "max_age":
			if dur, ok := d.duration(v, at); ok {
				st.MaxAge = dur
			}
		case "same_site":
			if s, ok := d.str(v, at); ok {
				ss, err := backendset.ParseSameSite(s)
				if err != nil {
					d.errorf(v, at, "%v, got %q", err, s)
				}
				st.SameSite = ss
			}
		case "http_only":
			if b, ok := d.boolean(v, at); ok {
				st.NoHTTPOnly = !b
			}
		default:
			delete(nodes, at)
			return false
		}
		return true
	})
	return st
}
