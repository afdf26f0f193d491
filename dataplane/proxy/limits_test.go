package proxy

import (
	"fmt"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// TestConnectionsMax: at ConnectionsMax open client connections the proxy stops accepting (one
// pause, counted once however long it lasts: it waits, it does not spin), a new connection waits
// unanswered in the backlog, and it is served as soon as an open one closes.
func TestConnectionsMax(t *testing.T) {
	be := newRecordingBackend(t, nil)
	p, addr := startProxyTo(t, Config{ConnectionsMax: 2}, be)
	held := []*wireClient{dialWire(t, addr), dialWire(t, addr)}
	for i, c := range held {
		c.get(fmt.Sprintf("/held/%d", i), fmt.Sprintf("GET /held/%d", i))
	}
	waitPauses(t, p, 1)          // 2 open, ConnectionsMax 2
	waiting := dialWire(t, addr) // the kernel completes the handshake; the proxy does not accept it
	waiting.write("GET /waiting HTTP/1.1\r\nHost: example.test\r\n\r\n")
	waiting.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if b, err := waiting.br.ReadByte(); err == nil {
		t.Fatalf("a connection past ConnectionsMax was answered (%q)", b)
	}
	if st := p.Stats(); st.Connections != 2 || st.AcceptPaused != 1 {
		t.Fatalf("while paused: %d connections, %d pauses; want 2 and 1", st.Connections, st.AcceptPaused)
	}
	held[0].nc.Close()
	waiting.nc.SetReadDeadline(time.Now().Add(wireWait))
	if res, body := waiting.response("GET"); res.StatusCode != 200 || body != "GET /waiting" {
		t.Fatalf("after a connection closed, the waiting one got %d %q", res.StatusCode, body)
	}
	// Back at the bound, the loop pauses again: once.
	waitPauses(t, p, 2)
	if st := p.Stats(); st.Connections != 2 || st.AcceptPaused != 2 {
		t.Fatalf("served again at the bound: %d connections, %d pauses; want 2 and 2", st.Connections, st.AcceptPaused)
	}
}

// waitPauses waits until the proxy has paused its accept loops n times.
func waitPauses(t *testing.T, p *Proxy, n uint64) {
	t.Helper()
	testutil.WaitFor(t, promptWait, fmt.Sprintf("the accept loop to pause %d times", n), func() bool { return p.Stats().AcceptPaused >= n })
}
