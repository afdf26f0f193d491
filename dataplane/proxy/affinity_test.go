package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/balance/sticky"
	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/http1"
	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/internal/testutil"
)

// idBackends starts n backends that answer their id ("b0", "b1", ...) and the Cookie field they
// received, in a header, and returns the set's backends with these weights.
func idBackends(t *testing.T, weights ...int) []table.Backend {
	t.Helper()
	var bs []table.Backend
	for i, w := range weights {
		id := fmt.Sprint("b", i)
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Cookie-Seen", strings.Join(r.Header.Values("Cookie"), " | "))
			if cc := r.URL.Query().Get("cc"); cc != "" {
				w.Header().Set("Cache-Control", cc)
			}
			io.WriteString(w, id)
		}))
		t.Cleanup(s.Close)
		bs = append(bs, table.Backend{ID: id, Address: s.Listener.Addr().String(), Weight: w})
	}
	return bs
}

// get sends one GET to the proxy at addr, on a connection of its own, with these header fields
// (name, value pairs); it returns the backend that answered and the response.
func affGet(t *testing.T, addr, path string, fields ...string) (string, *http.Response) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	for i := 0; i+1 < len(fields); i += 2 {
		req.Header.Add(fields[i], fields[i+1])
	}
	req.Close = true
	res, err := http.DefaultTransport.(*http.Transport).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: status %d: %s", path, res.StatusCode, body)
	}
	return string(body), res
}

func setProxy(t *testing.T, cfg Config, s table.Set) (*Proxy, string) {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetBackends([]table.Set{s}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(t.Context()) })
	return p, serveWeb(t, p)
}

// naiveMaglev is the backend a plain loop over balance.Maglev gives key: the lookup with every
// backend not active out.
func naiveMaglev(t *testing.T, bs []table.Backend, key []byte) string {
	t.Helper()
	ids, weights := make([]string, len(bs)), make([]int, len(bs))
	for i, b := range bs {
		ids[i], weights[i] = b.ID, max(1, b.Weight)
	}
	m, err := balance.NewMaglev(ids, weights, 0)
	if err != nil {
		t.Fatal(err)
	}
	i := m.Lookup(balance.Hash64(key, 0), func(i int) bool { return bs[i].State != table.Active })
	return ids[i]
}

// TestMaglevPickMatchesNaive: the proxy's pick for a header, a cookie and the client address is
// the naive lookup's, with backends out (disabled, draining) and back; a request without the key is
// spread by round robin.
func TestMaglevPickMatchesNaive(t *testing.T) {
	bs := idBackends(t, 1, 2, 3, 1, 5)
	for _, hash := range []table.HashOn{{Kind: table.HashHeader, Name: "X-User"}, {Kind: table.HashCookie, Name: "uid"}} {
		s := table.Set{Name: "web", Policy: balance.MaglevHash, Hash: hash, Backends: bs}
		p, addr := setProxy(t, Config{}, s)
		for step, states := range [][]table.State{{}, {2: table.Disabled}, {0: table.Draining, 4: table.Disabled}} {
			s.Backends = append([]table.Backend(nil), bs...)
			for i, st := range states {
				s.Backends[i].State = st
			}
			if err := p.SetBackends([]table.Set{s}); err != nil {
				t.Fatal(err)
			}
			for k := range 200 {
				key := fmt.Sprintf("user-%d", k)
				var got string
				if hash.Kind == table.HashHeader {
					got, _ = affGet(t, addr, "/", "x-user", key)
				} else {
					got, _ = affGet(t, addr, "/", "Cookie", "a=1; uid="+key+"; b=2")
				}
				if want := naiveMaglev(t, s.Backends, []byte(key)); got != want {
					t.Fatalf("%v step %d key %q: the proxy picked %s, the naive lookup %s", hash, step, key, got, want)
				}
			}
		}
		// No key: round robin over the active backends, by weight (12 of a cycle).
		counts := map[string]int{}
		for range 12 {
			got, _ := affGet(t, addr, "/")
			counts[got]++
		}
		if want := map[string]int{"b1": 4, "b2": 6, "b3": 2}; fmt.Sprint(counts) != fmt.Sprint(want) {
			t.Errorf("%v: without the key, 12 requests went %v; want round robin by weight, %v", hash, counts, want)
		}
	}
	// The client address: 127.0.0.1's 4 bytes.
	s := table.Set{Name: "web", Policy: balance.MaglevHash, Hash: table.HashOn{Kind: table.HashClientAddress}, Backends: bs}
	_, addr := setProxy(t, Config{}, s)
	for range 5 {
		if got, _ := affGet(t, addr, "/"); got != naiveMaglev(t, bs, []byte{127, 0, 0, 1}) {
			t.Fatalf("client address: picked %s, the naive lookup %s", got, naiveMaglev(t, bs, []byte{127, 0, 0, 1}))
		}
	}
}

// TestMaglevTableKept: the table is built when a set's ids or weights change, and kept across
// generations otherwise (a change of state or address is not a change of the table).
func TestMaglevTableKept(t *testing.T) {
	bs := idBackends(t, 1, 1, 1)
	s := table.Set{Name: "web", Policy: balance.MaglevHash, Hash: table.HashOn{Kind: table.HashHeader, Name: "x"}, Backends: bs}
	p, _ := setProxy(t, Config{}, s)
	first := p.table.Load().sets["web"].maglev
	s.Backends = append([]table.Backend(nil), bs...)
	s.Backends[1].State = table.Draining
	p.SetBackends([]table.Set{s})
	if m := p.table.Load().sets["web"].maglev; m != first || m == nil {
		t.Fatal("a change of state rebuilt the table")
	}
	s.Backends[1].Weight = 3
	p.SetBackends([]table.Set{s})
	if m := p.table.Load().sets["web"].maglev; m == first || m == nil {
		t.Fatal("a change of weight kept the old table")
	}
}

// cookieOf is the value of the sticky cookie name that res sets, and its Set-Cookie field.
func cookieOf(res *http.Response, name string) (value, field string) {
	for _, f := range res.Header.Values("Set-Cookie") {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			v, _, _ = strings.Cut(v, ";")
			return v, f
		}
	}
	return "", ""
}

// TestStickyCookie: a new client is pinned and told so (the cookie's attributes, Cache-Control
// private); its cookie keeps it there and is not passed to the backend; a forged, stale or
// other-key cookie is ignored and replaced; a disabled or removed backend's clients are pinned
// anew with a new cookie, a draining one's are kept.
func TestStickyCookie(t *testing.T) {
	keys := []sticky.Key{sticky.NewKey()}
	bs := idBackends(t, 1, 1, 1)
	s := table.Set{Name: "web", Backends: bs, Sticky: &table.Sticky{CookieName: "srv", Path: "/app", MaxAge: time.Hour}}
	p, addr := setProxy(t, Config{StickyKeys: keys}, s)

	first, res := affGet(t, addr, "/", "Cookie", "theme=dark")
	value, field := cookieOf(res, "srv")
	if want := "srv=" + value + "; Path=/app; HttpOnly; SameSite=Lax; Max-Age=3600"; value == "" || field != want {
		t.Fatalf("Set-Cookie %q, want %q", field, want)
	}
	if cc := res.Header.Values("Cache-Control"); len(cc) != 1 || cc[0] != "private" {
		t.Errorf("Cache-Control %q on the response that sets the cookie, want private", cc)
	}
	if seen := res.Header.Get("X-Cookie-Seen"); seen != "theme=dark" {
		t.Errorf("the backend saw Cookie %q, want theme=dark", seen)
	}
	for range 20 {
		got, res := affGet(t, addr, "/", "Cookie", "theme=dark; srv="+value+"; lang=fr")
		if got != first {
			t.Fatalf("pinned to %s, answered by %s", first, got)
		}
		if v, _ := cookieOf(res, "srv"); v != "" || res.Header.Get("Cache-Control") != "" {
			t.Fatalf("a pinned request's response sets the cookie again: %q, %q", v, res.Header.Get("Cache-Control"))
		}
		if seen := res.Header.Get("X-Cookie-Seen"); seen != "theme=dark; lang=fr" {
			t.Fatalf("the backend saw Cookie %q, want the other cookies alone", seen)
		}
	}
	// Alone in its field, the cookie takes the field with it.
	if _, res := affGet(t, addr, "/", "Cookie", "srv="+value); res.Header.Get("X-Cookie-Seen") != "" {
		t.Errorf("the backend saw Cookie %q", res.Header.Get("X-Cookie-Seen"))
	}
	// A private response keeps its own Cache-Control.
	if _, res := affGet(t, addr, "/?cc=no-store"); fmt.Sprint(res.Header.Values("Cache-Control")) != "[no-store]" {
		t.Errorf("Cache-Control %q, want no-store alone", res.Header.Values("Cache-Control"))
	}

	other, _ := sticky.New(sticky.Config{Keys: []sticky.Key{sticky.NewKey()}})
	ours, _ := sticky.New(sticky.Config{Keys: keys})
	otherKey, _ := other.Encode(nil, first, time.Now())
	stale, _ := ours.Encode(nil, first, time.Now().Add(-2*time.Hour))
	unknown, _ := ours.Encode(nil, "no-such-backend", time.Now())
	forged := []byte(value)
	forged[len(forged)/2] ^= 1
	for name, v := range map[string]string{"forged": string(forged), "other key": string(otherKey), "stale": string(stale), "unknown id": string(unknown)} {
		_, res := affGet(t, addr, "/", "Cookie", "srv="+v)
		if nv, _ := cookieOf(res, "srv"); nv == "" || nv == v {
			t.Errorf("%s cookie: not replaced (Set-Cookie %q)", name, res.Header.Values("Set-Cookie"))
		}
		if seen := res.Header.Get("X-Cookie-Seen"); seen != "" {
			t.Errorf("%s cookie: passed to the backend as %q", name, seen)
		}
	}
	// Half its max age on, a cookie is set again (to the same backend): a client that keeps coming
	// keeps its pin.
	old, _ := ours.Encode(nil, first, time.Now().Add(-40*time.Minute))
	if got, res := affGet(t, addr, "/", "Cookie", "srv="+string(old)); got != first {
		t.Errorf("an older cookie went to %s, not %s", got, first)
	} else if nv, _ := cookieOf(res, "srv"); nv == "" {
		t.Error("an older cookie was not refreshed")
	}

	at := func(id string) int { i, _ := strconv.Atoi(strings.TrimPrefix(id, "b")); return i }
	// Draining: the pinned client stays, without a new cookie.
	s.Backends = append([]table.Backend(nil), bs...)
	s.Backends[at(first)].State = table.Draining
	p.SetBackends([]table.Set{s})
	if got, res := affGet(t, addr, "/", "Cookie", "srv="+value); got != first {
		t.Fatalf("draining: the client pinned to %s went to %s", first, got)
	} else if nv, _ := cookieOf(res, "srv"); nv != "" {
		t.Fatalf("draining: the cookie was replaced")
	}
	// New clients do not go to the draining backend.
	for range 10 {
		if got, _ := affGet(t, addr, "/"); got == first {
			t.Fatalf("a new client went to the draining backend %s", first)
		}
	}
	// Disabled, then removed: pinned anew, with a cookie naming the new backend.
	for _, edit := range []func(){
		func() { s.Backends[at(first)].State = table.Disabled },
		func() { s.Backends = append(s.Backends[:at(first):at(first)], s.Backends[at(first)+1:]...) },
	} {
		edit()
		p.SetBackends([]table.Set{s})
		got, res := affGet(t, addr, "/", "Cookie", "srv="+value)
		nv, _ := cookieOf(res, "srv")
		if got == first || nv == "" {
			t.Fatalf("backend %s out of service: answered by %s, new cookie %q", first, got, nv)
		}
		if again, _ := affGet(t, addr, "/", "Cookie", "srv="+nv); again != got {
			t.Fatalf("the new cookie pins to %s, not %s", again, got)
		}
		s.Backends = append([]table.Backend(nil), bs...)
	}
}

// TestStickySecure: Secure with SameSite None always, and no HttpOnly when told.
func TestStickySecure(t *testing.T) {
	s := table.Set{Name: "web", Backends: idBackends(t, 1), Sticky: &table.Sticky{SameSite: table.SameSiteNone, NoHTTPOnly: true}}
	_, addr := setProxy(t, Config{}, s)
	_, res := affGet(t, addr, "/")
	v, field := cookieOf(res, "xlb_backend")
	if want := "xlb_backend=" + v + "; Path=/; SameSite=None; Secure"; field != want {
		t.Fatalf("Set-Cookie %q, want %q", field, want)
	}
}

// TestStickyEjectedRepins: through a region, a client pinned to a backend that health ejects is
// pinned anew (a new cookie) and others stay; readmitted, new pins may go there again.
func TestStickyEjectedRepins(t *testing.T) {
	bs := idBackends(t, 1, 1)
	p, addr, r, w := followingProxyWith(t, Config{})
	rec := []shm.Backend{{ID: "b0", Address: bs[0].Address, Weight: 1}, {ID: "b1", Address: bs[1].Address, Weight: 1}}
	sets := []shm.Set{{Name: "web", Sticky: &shm.Sticky{CookieName: "srv", Path: "/"}, Backends: rec}}
	if _, err := w.Publish(sets); err != nil {
		t.Fatal(err)
	}
	p.Refresh()
	pins := map[string]string{} // cookie -> backend
	for range 4 {
		got, res := affGet(t, addr, "/")
		v, _ := cookieOf(res, "srv")
		pins[v] = got
	}
	setRoute(r, sets[0].Backends[0].HealthSlot, health.Route{Out: true})
	for v, was := range pins {
		got, res := affGet(t, addr, "/", "Cookie", "srv="+v)
		nv, _ := cookieOf(res, "srv")
		switch {
		case was == "b0" && (got != "b1" || nv == ""):
			t.Errorf("pinned to the ejected b0: answered by %s, new cookie %q", got, nv)
		case was == "b1" && (got != "b1" || nv != ""):
			t.Errorf("pinned to b1: answered by %s, new cookie %q", got, nv)
		}
	}
}

// TestLeastRequestAcrossWorkers: a proxy (worker slot 0) sees the requests that another worker
// (slot 1) has in flight on a backend, in the region, and sends its own elsewhere; once that
// worker's slot is released (it crashed), its counts are gone.
func TestLeastRequestAcrossWorkers(t *testing.T) {
	bs := idBackends(t, 1, 1)
	p, addr, r, w := followingProxyWith(t, Config{})
	sets := []shm.Set{{Name: "web", Policy: balance.LeastRequest,
		Backends: []shm.Backend{{ID: "b0", Address: bs[0].Address, Weight: 1}, {ID: "b1", Address: bs[1].Address, Weight: 1}}}}
	if _, err := w.Publish(sets); err != nil {
		t.Fatal(err)
	}
	p.Refresh()
	r.ClaimWorker(1, os.Getpid()+1, time.Now().UnixNano())
	r.InFlightAdd(1, sets[0].Backends[0].HealthSlot, 50) // the other worker's slow requests on b0
	for range 100 {
		if got, _ := affGet(t, addr, "/"); got != "b1" {
			t.Fatalf("a request went to %s, which another worker keeps busy", got)
		}
	}
	// A response reaches the client before its attempt ends in the proxy: the count comes down
	// just after the last one.
	testutil.WaitFor(t, wireWait, "this worker's count of b1 to come back to 0 once its requests ended", func() bool {
		return r.InFlightOf(0, sets[0].Backends[1].HealthSlot) == 0
	})
	r.ReleaseWorker(1)
	seen := map[string]int{}
	for range 100 {
		got, _ := affGet(t, addr, "/")
		seen[got]++
	}
	if seen["b0"] == 0 || seen["b1"] == 0 {
		t.Fatalf("after the other worker's release: %v, want both", seen)
	}
}

// TestStickySecureUnderTLS: the cookie is Secure on a TLS listener, not on a plain one of the
// same proxy.
func TestStickySecureUnderTLS(t *testing.T) {
	s := table.Set{Name: "web", Backends: idBackends(t, 1), Sticky: &table.Sticky{}}
	p, plain := setProxy(t, Config{}, s)
	serverConf, clientConf := tlsPair(t)
	addr := serveTLS(t, p, serverConf)
	tr := &http.Transport{TLSClientConfig: clientConf, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	v, field := cookieOf(res, "xlb_backend")
	if want := "xlb_backend=" + v + "; Path=/; HttpOnly; SameSite=Lax; Secure"; field != want {
		t.Fatalf("over TLS: Set-Cookie %q, want %q", field, want)
	}
	_, res = affGet(t, plain, "/")
	if _, field := cookieOf(res, "xlb_backend"); strings.Contains(field, "Secure") {
		t.Fatalf("plain: Set-Cookie %q is Secure", field)
	}
}

// TestCookieFields: the scan of Cookie fields and the field the backend gets without the sticky
// cookie, on the spellings RFC 6265 and real clients use.
func TestCookieFields(t *testing.T) {
	for _, tc := range []struct{ in, value, rest string }{
		{"srv=abc", "abc", ""},
		{"a=1; srv=abc; b=2", "abc", "a=1; b=2"},
		{"a=1;srv=abc;b=2", "abc", "a=1; b=2"},
		{" srv = abc ; a=1", "abc", "a=1"},
		{`srv="abc"; a`, "abc", "a"},
		{"a=1; b=2", "", "a=1; b=2"},
		{"srvx=1; xsrv=2", "", "srvx=1; xsrv=2"},
		{";;srv=first; srv=second;;", "first", ""},
		{"SRV=upper", "", "SRV=upper"},
	} {
		h := http1.Header{Name: []byte("Cookie"), Value: []byte(tc.in)}
		c := &conn{inflight: &inflight{}}
		c.req.Headers = []http1.Header{h}
		v, _ := c.cookieValue([]byte("srv"))
		if string(v) != tc.value {
			t.Errorf("%q: value %q, want %q", tc.in, v, tc.value)
		}
		want := ""
		if tc.rest != "" {
			want = "Cookie: " + tc.rest + "\r\n"
		}
		if got := string(appendCookieField(nil, &h, []byte("srv"))); got != want {
			t.Errorf("%q: the backend gets %q, want %q", tc.in, got, want)
		}
	}
}
