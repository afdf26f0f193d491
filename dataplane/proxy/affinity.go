package proxy

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/balance/sticky"
	"github.com/xlbproxy/xlb/dataplane/http1"
	"github.com/xlbproxy/xlb/dataplane/table"
)

// maglevEntry is a set's Maglev table and the ids and weights it was built from.
type maglevEntry struct {
	ids     []string
	weights []int
	m       *balance.Maglev
}

// stickySet is a set's sticky cookie, ready for the request path: its codec, and the bytes of its
// Set-Cookie field around the value.
type stickySet struct {
	name  []byte // the cookie's name
	codec *sticky.Codec
	// head is "Set-Cookie: NAME=", attrs "; Path=P[; HttpOnly]; SameSite=S", maxAge
	// "; Max-Age=N" or empty; secure says Secure always (SameSite None).
	head, attrs, maxAge []byte
	secure              bool
	// refresh is how old a cookie with a max age may be before a response sets it again (half
	// the max age: a client that keeps coming keeps its pin); zero for a session cookie.
	refresh time.Duration
}

// affinity makes the template of set s for route: its policy and failures, its hash key and
// Maglev table (the one of the table in force when its backends' ids and weights are the same,
// kept in keep), and its sticky cookie. Off the request path: install calls it.
func (p *Proxy) affinity(s table.Set, keep map[string]*maglevEntry) *set {
	t := &set{name: s.Name, policy: s.Policy, failures: s.FailureStatuses}
	if s.Policy == balance.MaglevHash {
		t.hash = hashKey{kind: s.Hash.Kind, name: s.Hash.Name}
		if t.hash.kind == table.HashHeader {
			t.hash.name = strings.ToLower(t.hash.name)
		}
		t.hash.cookie = []byte(t.hash.name)
		ids := make([]string, len(s.Backends))
		weights := make([]int, len(s.Backends))
		for i, b := range s.Backends {
			ids[i], weights[i] = b.ID, max(1, b.Weight)
		}
		e := p.maglevs[s.Name]
		if e == nil || !slices.Equal(e.ids, ids) || !slices.Equal(e.weights, weights) {
			m, err := balance.NewMaglev(ids, weights, 0)
			if err != nil {
				// Past MaglevBackendsMax: the set is served by round robin.
				p.log.Error("cannot build the set's Maglev table; it is served by round robin", "backend_set", s.Name, "error", err)
				m = nil
			}
			e = &maglevEntry{ids: ids, weights: weights, m: m}
		}
		keep[s.Name] = e
		t.maglev = e.m
	}
	if st := s.Sticky; st != nil {
		codec, err := sticky.New(sticky.Config{Keys: p.stickyKeys, MaxAge: st.MaxAge})
		if err != nil {
			panic("proxy: sticky codec: " + err.Error()) // the keys were checked by New, the max age by the control plane
		}
		name, path := st.CookieName, st.Path
		if name == "" {
			name = "xlb_backend"
		}
		if path == "" {
			path = "/"
		}
		ss := &stickySet{name: []byte(name), codec: codec, head: []byte("Set-Cookie: " + name + "="), refresh: st.MaxAge / 2}
		ss.attrs = append(ss.attrs, "; Path="+path...)
		if !st.NoHTTPOnly {
			ss.attrs = append(ss.attrs, "; HttpOnly"...)
		}
		switch st.SameSite {
		case table.SameSiteStrict:
			ss.attrs = append(ss.attrs, "; SameSite=Strict"...)
		case table.SameSiteNone:
			ss.attrs = append(ss.attrs, "; SameSite=None"...)
			ss.secure = true
		default:
			ss.attrs = append(ss.attrs, "; SameSite=Lax"...)
		}
		if st.MaxAge > 0 {
			ss.maxAge = strconv.AppendInt([]byte("; Max-Age="), int64(st.MaxAge/time.Second), 10)
		}
		t.sticky = ss
	}
	return t
}

// isCookie tells whether h is a Cookie field.
func isCookie(h *http1.Header) bool { return len(h.Name) == 6 && http1.EqualFold(h.Name, "cookie") }

// nextCookie cuts the first cookie-pair off a Cookie field's value: the pair as it stands (spaces
// around it trimmed), its name and value (spaces around them trimmed, a quoted value unquoted),
// and the rest after its ';'. ok is false at the end.
func nextCookie(v []byte) (pair, name, value, rest []byte, ok bool) {
	for len(v) > 0 {
		pair = v
		if i := bytes.IndexByte(v, ';'); i >= 0 {
			pair, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		pair = bytes.TrimSpace(pair)
		if len(pair) == 0 {
			continue
		}
		name, value = pair, nil
		if i := bytes.IndexByte(pair, '='); i >= 0 {
			name, value = bytes.TrimSpace(pair[:i]), bytes.TrimSpace(pair[i+1:])
		}
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			value = value[1 : len(value)-1] // RFC 6265 allows a quoted value
		}
		return pair, name, value, v, true
	}
	return nil, nil, nil, nil, false
}

// cookieValue is the value of the request's first cookie named name; ok false when it has none.
func (c *conn) cookieValue(name []byte) (value []byte, ok bool) {
	for i := range c.req.Headers {
		h := &c.req.Headers[i]
		if !isCookie(h) {
			continue
		}
		for _, n, v, rest, more := nextCookie(h.Value); more; _, n, v, rest, more = nextCookie(rest) {
			if bytes.Equal(n, name) {
				return v, true
			}
		}
	}
	return nil, false
}

// appendCookieField appends the Cookie field h for the backend without the sticky cookie named
// name (HAProxy's "indirect": the backend never sees it); nothing when no other cookie is left.
func appendCookieField(b []byte, h *http1.Header, name []byte) []byte {
	start, wrote := len(b), false
	b = append(b, h.Name...)
	b = append(b, ": "...)
	for pair, n, _, rest, more := nextCookie(h.Value); more; pair, n, _, rest, more = nextCookie(rest) {
		if bytes.Equal(n, name) {
			continue
		}
		if wrote {
			b = append(b, "; "...)
		}
		b, wrote = append(b, pair...), true
	}
	if !wrote {
		return b[:start]
	}
	return append(b, "\r\n"...)
}

// affinityOf reads, before the request's head is consumed, what s's affinity makes of it: the
// backend its valid sticky cookie pins it to (c.pinned, when that backend may take it), and its
// hash key (c.hashed, c.hashKey).
func (c *conn) affinityOf(s *set) {
	c.pinned, c.pinFresh, c.hashed, c.stickyOn = nil, false, false, nil
	if s == nil {
		return
	}
	if ss := s.sticky; ss != nil {
		c.stickyOn = ss
		if v, ok := c.cookieValue(ss.name); ok {
			var issued time.Time
			var valid bool
			c.cookieID, issued, valid = ss.codec.Decode(c.cookieID[:0], v, c.started)
			if b := s.byID[string(c.cookieID)]; valid && b != nil && usable(b) {
				c.pinned = b
				c.pinFresh = ss.refresh == 0 || c.started.Sub(issued) < ss.refresh
			}
		}
	}
	if s.maglev != nil {
		var key []byte
		switch s.hash.kind {
		case table.HashHeader:
			for i := range c.req.Headers {
				if h := &c.req.Headers[i]; http1.EqualFold(h.Name, s.hash.name) {
					key = h.Value
					break
				}
			}
		case table.HashCookie:
			key, _ = c.cookieValue(s.hash.cookie)
		case table.HashClientAddress:
			key = c.clientAddr[:c.clientAddrLen]
		}
		if len(key) > 0 {
			c.hashKey, c.hashed = balance.Hash64(key, 0), true
		}
	}
}

// usable tells whether a pinned client's requests may go to b: an active backend that takes
// requests by its health, or a draining one that is not out (it keeps its pinned clients). One
// disabled, ejected or removed (not in the set) is not: its clients are pinned anew.
func usable(b *backend) bool {
	switch b.state {
	case table.Active:
		return b.routedAt >= 0
	case table.Draining:
		return b.pool != nil && !b.route.Out
	}
	return false
}

// maglevOut is the out func of the Maglev lookup of c's set (bound once as c.outFn): a backend
// is out when it takes no new request (not active, or out by its health) or the request tried it.
func (c *conn) maglevOut(i int) bool {
	b := c.set.all[i]
	return b.routedAt < 0 || c.tried.Has(b.routedAt)
}

// appendSetCookie appends, for a final response from backend b of a sticky set, the Set-Cookie
// field that pins the client to b (and Cache-Control: private, unless the response is private or
// no-store already: HAProxy's "nocache", so that no shared cache hands one client's pin to
// others), when the request's cookie did not already pin it there, fresh.
func (c *conn) appendSetCookie(out []byte) []byte {
	ss, b := c.stickyOn, c.backend
	if ss == nil || b == nil || b == c.pinned && c.pinFresh {
		return out
	}
	start := len(out)
	out = append(out, ss.head...)
	var err error
	if out, err = ss.codec.Encode(out, b.id, c.started); err != nil {
		return out[:start] // an id the control plane refuses: no cookie
	}
	out = append(out, ss.attrs...)
	if ss.secure || c.tls != nil {
		out = append(out, "; Secure"...)
	}
	out = append(out, ss.maxAge...)
	out = append(out, "\r\n"...)
	private := false
	for i := range c.resp.Headers {
		h := &c.resp.Headers[i]
		if len(h.Name) == 13 && http1.EqualFold(h.Name, "cache-control") && (containsFold(h.Value, "private") || containsFold(h.Value, "no-store")) {
			private = true
		}
	}
	if !private {
		out = append(out, "Cache-Control: private\r\n"...)
	}
	return out
}

// containsFold tells whether v holds the lower-case ASCII word w, ignoring v's case.
func containsFold(v []byte, w string) bool {
	for i := 0; i+len(w) <= len(v); i++ {
		if http1.EqualFold(v[i:i+len(w)], w) {
			return true
		}
	}
	return false
}
