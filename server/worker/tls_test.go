package worker

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/tlsterm"
	"github.com/xlbproxy/xlb/internal/testutil"
	"github.com/xlbproxy/xlb/server/config"
)

// tlsEcho serves ln: each connection does its handshake, gets one byte, and is closed when the
// client closes it. It stops in cleanup.
func tlsEcho(t *testing.T, ln net.Listener) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(wait))
				if _, err := c.Write([]byte{'x'}); err == nil {
					io.Copy(io.Discard, c)
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// dialTLS connects with cfg, reads the server's byte and returns the connection's state.
func dialTLS(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return tls.ConnectionState{}, err
	}
	return c.ConnectionState(), nil
}

// tlsWorker is a terminator of a plain listener and a TLS one, serving both.
func tlsWorker(t *testing.T, lt *config.ListenerTLS, ticketKeys string, log hclog.Logger) (plain, tlsAddr string, term *terminator) {
	t.Helper()
	var lns []net.Listener
	var ls []config.Listener
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ls = append(ls, config.Listener{Address: ln.Addr().String(), BackendSet: "web"})
	}
	term, err := newTerminator([]*config.ListenerTLS{nil, lt}, ls, ticketKeys, log)
	if err != nil {
		lns[0].Close()
		lns[1].Close()
		t.Fatalf("newTerminator: %v", err)
	}
	wrapped := term.wrap(lns)
	if wrapped[0] != lns[0] {
		t.Errorf("the plain listener was wrapped")
	}
	for _, ln := range wrapped {
		tlsEcho(t, ln)
	}
	return ls[0].Address, ls[1].Address, term
}

// TestTerminatorResumesAcrossWorkers: two workers' terminators of one listener, sharing the
// supervisor's ticket key file: a session made on one resumes on the other, with TLS 1.2 and 1.3.
// The plain listener stays plain; min_version 1.3 refuses a TLS 1.2 client.
func TestTerminatorResumesAcrossWorkers(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	leaf := ca.IssueServer(t, dir, "a", "a.example.test")
	keys := filepath.Join(dir, "ticket-keys")
	r, err := tlsterm.NewTicketRotator(keys, tlsterm.RotationPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Rotate(time.Now()); err != nil {
		t.Fatal(err)
	}
	lt := &config.ListenerTLS{Certificates: []tlsterm.Pair{{CertFile: leaf.CertFile, KeyFile: leaf.KeyFile}}}
	plain, a, termA := tlsWorker(t, lt, keys, hclog.NewNullLogger())
	_, b, _ := tlsWorker(t, lt, keys, hclog.NewNullLogger())
	if termA.loader == nil || termA.loader.Status().Keys != 1 {
		t.Fatalf("the ticket keys were not loaded: %+v", termA.loader)
	}

	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "a.example.test", MinVersion: v, MaxVersion: v,
			ClientSessionCache: tls.NewLRUClientSessionCache(8)}
		if st, err := dialTLS(a, cfg); err != nil || st.DidResume {
			t.Fatalf("TLS %x: first handshake on worker A: %v (resumed %v)", v, err, st.DidResume)
		}
		st, err := dialTLS(b, cfg)
		if err != nil || !st.DidResume {
			t.Errorf("TLS %x: on worker B: error %v, resumed %v; want a resumption", v, err, st.DidResume)
		}
	}
	c, err := net.DialTimeout("tcp", plain, wait)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(wait))
	var bb [1]byte
	if _, err := io.ReadFull(c, bb[:]); err != nil || bb[0] != 'x' {
		t.Errorf("the plain listener: read %q, %v; want the byte in the clear", bb, err)
	}
	c.Close()

	lt13 := &config.ListenerTLS{Certificates: lt.Certificates, MinVersion: tls.VersionTLS13}
	_, c13, _ := tlsWorker(t, lt13, keys, hclog.NewNullLogger())
	if _, err := dialTLS(c13, &tls.Config{RootCAs: ca.Pool(), ServerName: "a.example.test", MaxVersion: tls.VersionTLS12}); err == nil {
		t.Errorf("min_version 1.3: a TLS 1.2 client was served")
	}
	if st, err := dialTLS(c13, &tls.Config{RootCAs: ca.Pool(), ServerName: "a.example.test"}); err != nil || st.Version != tls.VersionTLS13 {
		t.Errorf("min_version 1.3: a client of TLS 1.3: %v (version %x)", err, st.Version)
	}
}

// TestTerminatorClientCA: with client_ca_file a client must present a certificate of that CA.
func TestTerminatorClientCA(t *testing.T) {
	dir := t.TempDir()
	ca, other := testutil.NewCA(t, dir, "ca"), testutil.NewCA(t, dir, "other")
	leaf := ca.IssueServer(t, dir, "a", "a.example.test")
	lt := &config.ListenerTLS{Certificates: []tlsterm.Pair{{CertFile: leaf.CertFile, KeyFile: leaf.KeyFile}}, ClientCAFile: ca.File}
	_, addr, _ := tlsWorker(t, lt, "", hclog.NewNullLogger())
	client := func(l *testutil.Leaf) *tls.Config {
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "a.example.test"}
		if l != nil {
			cfg.Certificates = []tls.Certificate{l.TLS}
		}
		return cfg
	}
	good, bad := ca.IssueClient(t, dir, "good"), other.IssueClient(t, dir, "bad")
	if _, err := dialTLS(addr, client(&good)); err != nil {
		t.Errorf("a client certificate of the CA: %v", err)
	}
	for name, l := range map[string]*testutil.Leaf{"no client certificate": nil, "a certificate of another CA": &bad} {
		if _, err := dialTLS(addr, client(l)); err == nil {
			t.Errorf("%s: served", name)
		}
	}
}

// TestTerminatorWatchLogs: the terminator's Watch reloads a certificate replaced by rename and
// logs it at INFO; a broken file is logged at ERROR, naming it, and the previous certificate
// serves on. A spec whose certificate does not load is an error naming the file.
func TestTerminatorWatchLogs(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	leaf := ca.IssueServer(t, dir, "a", "a.example.test")
	var logBuf testutil.SyncBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logBuf, Level: hclog.Info, JSONFormat: true})
	lt := &config.ListenerTLS{Certificates: []tlsterm.Pair{{CertFile: leaf.CertFile, KeyFile: leaf.KeyFile}}}
	_, addr, term := tlsWorker(t, lt, "", log)
	ctx, cancel := context.WithCancel(context.Background())
	term.watch(ctx)
	t.Cleanup(func() { cancel(); term.wait() })
	serial := func() string {
		st, err := dialTLS(addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "a.example.test"})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		return st.PeerCertificates[0].SerialNumber.String()
	}
	first := serial()

	next := ca.IssueServer(t, t.TempDir(), "a2", "a.example.test")
	replace(t, next.KeyFile, leaf.KeyFile)
	replace(t, next.CertFile, leaf.CertFile)
	awaitLog(t, &logBuf, `"@level":"info","@message":"certificates reloaded"`)
	second := serial()
	if second == first || second != next.TLS.Leaf.SerialNumber.String() {
		t.Errorf("after the reload the serial is %s (before %s), want the new certificate's", second, first)
	}

	os.WriteFile(leaf.CertFile+".tmp", []byte("garbage\n"), 0o600)
	replace(t, leaf.CertFile+".tmp", leaf.CertFile)
	line := awaitLog(t, &logBuf, `"@level":"error","@message":"certificates reloaded, with errors"`)
	if !strings.Contains(line, leaf.CertFile) || !strings.Contains(line, `"listener":"`+addr+`"`) {
		t.Errorf("the error line does not name the file %s and the listener %s: %s", leaf.CertFile, addr, line)
	}
	if got := serial(); got != second {
		t.Errorf("with a broken file the serial is %s, want the previous %s", got, second)
	}

	_, err := newTerminator([]*config.ListenerTLS{lt}, []config.Listener{{Address: "127.0.0.1:1"}}, "", log)
	if err == nil || !strings.Contains(err.Error(), leaf.CertFile) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("newTerminator of a broken certificate: error %v, want one naming %s and the listener", err, leaf.CertFile)
	}
}

func replace(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.Rename(src, dst); err != nil {
		t.Fatal(err)
	}
}

// awaitLog waits for a line of buf that holds sub, and returns it.
func awaitLog(t *testing.T, buf *testutil.SyncBuffer, sub string) string {
	t.Helper()
	var found string
	testutil.WaitFor(t, wait, "a log line with "+sub, func() bool {
		for _, line := range strings.Split(buf.String(), "\n") {
			if strings.Contains(line, sub) {
				found = line
				return true
			}
		}
		return false
	})
	return found
}
