package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestConnectionsMax: through the real binary, a worker at --connections-max stops accepting (a new
// connection waits unanswered in the backlog), serves it once an open one closes, and says so in
// its Status, its log and the Prometheus scrape.
func TestConnectionsMax(t *testing.T) {
	t.Parallel()
	be := newBackend(t, nameHandler("a"))
	state, prom := t.TempDir(), freeAddr(t)
	x := startXLB(t, runArgs("--backend", addrOf(be), "--workers", "1", "--connections-max", "2", "--state-dir", state,
		"--metrics-interval", "100ms", "--prometheus-listen", prom, "--log-format", "json"))
	get := func(c net.Conn, br *bufio.Reader, path string) (*http.Response, error) {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: example.test\r\n\r\n", path)
		return http.ReadResponse(br, nil)
	}
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.DialTimeout("tcp", x.addr, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(ioTimeout))
		return c, bufio.NewReader(c)
	}
	var held []net.Conn
	for i := range 2 {
		c, br := dial()
		if res, err := get(c, br, fmt.Sprintf("/held/%d", i)); err != nil || res.StatusCode != 200 {
			t.Fatalf("held connection %d: %v %v", i, res, err)
		}
		held = append(held, c)
	}
	// The loop pauses each time it reaches the bound: the probe of startXLB's may have made it once
	// more already.
	paused := waitStatus(t, state, "2 connections open and the accept paused", func(w workerJSON) bool {
		return w.Connections == "2" && w.AcceptPaused != "0" && w.AcceptPaused != ""
	})

	waiting, br := dial()
	fmt.Fprintf(waiting, "GET /waiting HTTP/1.1\r\nHost: example.test\r\n\r\n")
	waiting.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if b, err := br.ReadByte(); err == nil {
		t.Fatalf("a connection past --connections-max was answered (%q)", b)
	}
	held[0].Close()
	waiting.SetReadDeadline(time.Now().Add(ioTimeout))
	if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != 200 {
		t.Fatalf("after a connection closed, the waiting one: %v %v", res, err)
	}
	again := strconv.Itoa(paused + 1)
	waitStatus(t, state, "2 connections open and one more pause", func(w workerJSON) bool { return w.Connections == "2" && w.AcceptPaused == again })

	if !strings.Contains(x.stderr.String(), "accept paused") {
		t.Errorf("no log line says accept paused:\n%s", tail(x.stderr.String()))
	}
	metrics := curl(t, "http://"+prom+"/metrics")
	if got, ok := promValue(metrics, "xlb_worker_accept_paused_total", nil); !ok || got != again {
		t.Errorf("xlb_worker_accept_paused_total %q (%v), want %s:\n%s", got, ok, again, grepLines(metrics, "xlb_worker"))
	}
	if got, ok := promValue(metrics, "xlb_worker_connections", []string{`xlb_worker_slot="0"`}); !ok || got != "2" {
		t.Errorf("xlb_worker_connections %q (%v), want 2:\n%s", got, ok, grepLines(metrics, "xlb_worker"))
	}
}

// workerJSON is a worker of the data plane's Status.
type workerJSON struct {
	Pid          int    `json:"pid"`
	Connections  string `json:"connections"`
	AcceptPaused string `json:"acceptPaused"`
}

// waitStatus waits until the only worker of the supervisor of stateDir satisfies ok, and returns
// its pauses.
func waitStatus(t *testing.T, stateDir, what string, ok func(workerJSON) bool) int {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		st := status(t, stateDir)
		if len(st.Workers) == 1 && ok(st.Workers[0]) {
			n, _ := strconv.Atoi(st.Workers[0].AcceptPaused)
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Status never showed %s: %+v", what, st.Workers)
		}
		time.Sleep(pollInterval)
	}
}
