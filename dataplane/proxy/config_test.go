package proxy

import (
	"context"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/xlbproxy/xlb/dataplane/table"
)

// TestConfigRefused: New refuses a Config it cannot honour, naming the field.
func TestConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"negative HeadersMax", Config{HeadersMax: -1}, "HeadersMax -1"},
		{"zero prefix", Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), {}}}, "TrustedProxies[1]"},
		{"empty protocol", Config{UpgradeProtocols: []string{""}}, "UpgradeProtocols[0]"},
		{"protocol with a version", Config{UpgradeProtocols: []string{"websocket", "h2c/1"}}, `UpgradeProtocols[1] "h2c/1"`},
		{"protocol with a space", Config{UpgradeProtocols: []string{"web socket"}}, "UpgradeProtocols[0]"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}

// TestConfigCopies: New keeps its own copies of the slices of a Config, normalised.
func TestConfigCopies(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}
	protocols := []string{"WebSocket"}
	p, err := New(Config{TrustedProxies: trusted, UpgradeProtocols: protocols})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	if trusted[0].String() != "10.1.2.3/8" || protocols[0] != "WebSocket" {
		t.Errorf("New changed the caller's slices: %v %v", trusted, protocols)
	}
	if got := p.cfg.TrustedProxies; !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}) {
		t.Errorf("TrustedProxies %v, want masked", got)
	}
	if !p.upgradeAllowed([]byte("WEBSOCKET/13")) || p.upgradeAllowed([]byte("h2c")) {
		t.Errorf("upgradeAllowed does not match %v without case and version", p.cfg.UpgradeProtocols)
	}
}

// TestConfigDefaults: the zero Config gets the exported defaults, which help texts show.
func TestConfigDefaults(t *testing.T) {
	var c Config
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	got := Config{ConnectTimeout: c.ConnectTimeout, BackendTimeout: c.BackendTimeout, ClientTimeout: c.ClientTimeout,
		IdleTimeout: c.IdleTimeout, RequestLineBytesMax: c.RequestLineBytesMax, HeaderBytesMax: c.HeaderBytesMax,
		HeadersMax: c.HeadersMax, Retries: c.Retries, ReplayBufferBytesMax: c.ReplayBufferBytesMax,
		IdleConnsPerBackend: c.IdleConnsPerBackend}
	want := Config{ConnectTimeout: DefaultConnectTimeout, BackendTimeout: DefaultBackendTimeout, ClientTimeout: DefaultClientTimeout,
		IdleTimeout: DefaultIdleTimeout, RequestLineBytesMax: DefaultRequestLineBytesMax, HeaderBytesMax: DefaultHeaderBytesMax,
		HeadersMax: DefaultHeadersMax, Retries: DefaultRetries, ReplayBufferBytesMax: DefaultReplayBufferBytesMax,
		IdleConnsPerBackend: DefaultIdleConnsPerBackend}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
}

// TestSetBackendsWeights: a zero weight means 1, as table.Backend says; a negative weight and one
// past table.WeightMax are refused, naming the backend.
func TestSetBackendsWeights(t *testing.T) {
	zero, one := newCountingBackend(t, "zero"), newCountingBackend(t, "one")
	p, addr := startProxy(t, Config{})
	if err := p.SetBackends([]table.Set{{Name: "web", Backends: []table.Backend{
		{ID: "zero", Address: zero.addr()}, {ID: "one", Address: one.addr(), Weight: 1}}}}); err != nil {
		t.Fatalf("SetBackends with a zero weight: %v", err)
	}
	c := dialTestClient(t, addr)
	for range 4 {
		res, body := c.request("GET", "/", nil)
		wantStatus(t, res, body, 200)
	}
	if zero.requests() != 2 || one.requests() != 2 {
		t.Errorf("weights 0 and 1 got %d and %d of 4 requests, want 2 each", zero.requests(), one.requests())
	}
	for _, w := range []int{-1, table.WeightMax + 1} {
		err := p.SetBackends([]table.Set{{Name: "web", Backends: []table.Backend{{ID: "b", Address: one.addr(), Weight: w}}}})
		if err == nil || !strings.Contains(err.Error(), `backend "b"`) {
			t.Errorf("SetBackends with weight %d: %v, want an error naming the backend", w, err)
		}
	}
}
