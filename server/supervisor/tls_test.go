package supervisor

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/tlsterm"
	"github.com/xlbproxy/xlb/internal/testutil"
	"github.com/xlbproxy/xlb/server/config"
)

// tlsSupervisor is a supervisor with just what its TLS needs: one TLS listener of a certificate
// made now, and a state directory.
func tlsSupervisor(t *testing.T) (*supervisor, testutil.Leaf) {
	dir := t.TempDir()
	leaf := testutil.NewCA(t, dir, "ca").IssueServer(t, dir, "a", "a.example.test")
	s := &supervisor{log: hclog.NewNullLogger(), stateDir: t.TempDir(), cfg: config.Config{Listeners: []config.Listener{
		{Address: "127.0.0.1:0", BackendSet: "web"},
		{Address: "127.0.0.1:0", BackendSet: "web", TLS: &config.ListenerTLS{Certificates: []tlsterm.Pair{{CertFile: leaf.CertFile, KeyFile: leaf.KeyFile}}}},
	}}}
	return s, leaf
}

func readTicketKeys(t *testing.T, path string) tlsterm.TicketKeys {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := tlsterm.ParseTicketKeys(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return ks
}

// TestStartTLSMakesTicketKeys: with a TLS listener, the supervisor makes STATE_DIR/ticket-keys
// (mode 0600) before the workers start and names it in their Spec; the loop's rotation adds a key
// when the current one is a Period old, at most once a minute, and never during an upgrade or
// after the hand-over.
func TestStartTLSMakesTicketKeys(t *testing.T) {
	s, _ := tlsSupervisor(t)
	if err := s.startTLS(); err != nil {
		t.Fatalf("startTLS: %v", err)
	}
	path := filepath.Join(s.stateDir, ticketKeysFile)
	if got := s.ticketKeysPath(); got != path {
		t.Errorf("ticketKeysPath %q, want %q", got, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("no ticket key file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("ticket key file mode %v, want 0600", fi.Mode().Perm())
	}
	first := readTicketKeys(t, path)
	if len(first) != 1 {
		t.Fatalf("%d keys at start, want 1", len(first))
	}
	start := s.tickets.last

	// A Period later, but less than a minute after the last rotation: not yet looked at.
	s.tickets.last = start.Add(tlsterm.DefaultRotationPeriod)
	s.rotateTickets(start.Add(tlsterm.DefaultRotationPeriod + 30*time.Second))
	if ks := readTicketKeys(t, path); len(ks) != 1 {
		t.Fatalf("rotated within a minute of the last look: %d keys", len(ks))
	}
	s.tickets.last = start
	s.upgrade = &upgradeState{}
	s.rotateTickets(start.Add(tlsterm.DefaultRotationPeriod))
	if ks := readTicketKeys(t, path); len(ks) != 1 {
		t.Fatalf("rotated during an upgrade: %d keys", len(ks))
	}
	s.upgrade, s.handedOver = nil, true
	s.rotateTickets(start.Add(tlsterm.DefaultRotationPeriod))
	if ks := readTicketKeys(t, path); len(ks) != 1 {
		t.Fatalf("rotated after the hand-over: %d keys", len(ks))
	}
	s.handedOver = false
	s.rotateTickets(start.Add(tlsterm.DefaultRotationPeriod))
	ks := readTicketKeys(t, path)
	if len(ks) != 2 || ks[1].Key != first[0].Key {
		t.Fatalf("a Period after the start: keys %d (the first now second: %v), want 2", len(ks), len(ks) == 2 && ks[1].Key == first[0].Key)
	}
}

// TestStartTLSNoTLSListener: without a TLS listener there is no ticket key file.
func TestStartTLSNoTLSListener(t *testing.T) {
	s, _ := tlsSupervisor(t)
	s.cfg.Listeners = s.cfg.Listeners[:1]
	if err := s.startTLS(); err != nil {
		t.Fatalf("startTLS: %v", err)
	}
	if s.tickets != nil || s.ticketKeysPath() != "" {
		t.Errorf("a ticket keeper without a TLS listener")
	}
	s.rotateTickets(time.Now()) // nothing to do, and no crash
	if _, err := os.Stat(filepath.Join(s.stateDir, ticketKeysFile)); !os.IsNotExist(err) {
		t.Errorf("a ticket key file without a TLS listener (%v)", err)
	}
}

// TestStartTLSBadFiles: a certificate, key or client CA file that does not load fails the start,
// naming the listener and the file; no ticket key file is made then.
func TestStartTLSBadFiles(t *testing.T) {
	for _, tt := range []struct {
		name string
		// spoil breaks the listener's TLS, returning the file the error must name.
		spoil func(t *testing.T, l *config.ListenerTLS, leaf testutil.Leaf) string
		want  string
	}{
		{"certificate not PEM", func(t *testing.T, l *config.ListenerTLS, leaf testutil.Leaf) string {
			os.WriteFile(leaf.CertFile, []byte("garbage\n"), 0o600)
			return leaf.CertFile
		}, "no PEM CERTIFICATE block"},
		{"key of another certificate", func(t *testing.T, l *config.ListenerTLS, leaf testutil.Leaf) string {
			other := testutil.NewCA(t, t.TempDir(), "other").IssueServer(t, t.TempDir(), "b", "b.example.test")
			l.Certificates[0].KeyFile = other.KeyFile
			return other.KeyFile
		}, "private key does not match public key"},
		{"client CA not PEM", func(t *testing.T, l *config.ListenerTLS, leaf testutil.Leaf) string {
			l.ClientCAFile = leaf.KeyFile
			return leaf.KeyFile
		}, "no PEM certificate that parses"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, leaf := tlsSupervisor(t)
			file := tt.spoil(t, s.cfg.Listeners[1].TLS, leaf)
			err := s.startTLS()
			if err == nil {
				t.Fatal("startTLS: no error")
			}
			for _, want := range []string{"listener 1 (127.0.0.1:0)", file, tt.want} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("startTLS error %q does not say %q", err, want)
				}
			}
			if _, err := os.Stat(filepath.Join(s.stateDir, ticketKeysFile)); !os.IsNotExist(err) {
				t.Errorf("a ticket key file after a failed start (%v)", err)
			}
		})
	}
}

// TestRestartKeysListenerTLS: a reload that keeps the listeners' TLS settings (new but equal
// values) needs no restart; one that changes them does.
func TestRestartKeysListenerTLS(t *testing.T) {
	tlsOf := func(key string) *config.ListenerTLS {
		return &config.ListenerTLS{Certificates: []tlsterm.Pair{{CertFile: "a.pem", KeyFile: key}}}
	}
	cfg := func(t *config.ListenerTLS) config.Config {
		return config.Config{Listeners: []config.Listener{{Address: "127.0.0.1:8443", BackendSet: "web", TLS: t}}}
	}
	if keys := restartKeys(cfg(tlsOf("a-key.pem")), cfg(tlsOf("a-key.pem"))); len(keys) != 0 {
		t.Errorf("the same TLS settings: restart keys %v, want none", keys)
	}
	for _, b := range []*config.ListenerTLS{tlsOf("b-key.pem"), nil} {
		if keys := restartKeys(cfg(tlsOf("a-key.pem")), cfg(b)); !slices.Equal(keys, []string{"listeners"}) {
			t.Errorf("TLS settings changed to %+v: restart keys %v, want [listeners]", b, keys)
		}
	}
}
