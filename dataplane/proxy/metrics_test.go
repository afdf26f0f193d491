package proxy

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/dataplane/table"
)

// TestBackendMetrics: every attempt is counted on its backend: responses by class, local-origin
// errors kept apart from backend 5xx, retries, connections opened and reused, bytes, and
// latencies; counters carry across generations and leave with their backend.
func TestBackendMetrics(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello")) }))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) }))
	defer bad.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := ln.Addr().String()
	ln.Close()

	p, addr := startProxy(t, Config{})
	sets := []table.Set{{Name: "web", Backends: []table.Backend{
		{ID: "ok", Address: ok.Listener.Addr().String(), Weight: 1},
		{ID: "bad", Address: bad.Listener.Addr().String(), Weight: 1},
		{ID: "refused", Address: refused, Weight: 1},
	}}}
	if err := p.SetBackends(sets); err != nil {
		t.Fatal(err)
	}
	c := dialWire(t, addr)
	const n = 30 // ten cycles of the three backends: a refused pick retries on the next one
	for range n {
		c.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.response("GET")
	}
	// A response reaches the client before its attempt is counted: wait until none is in flight.
	by := map[string]BackendMetrics{}
	deadline := time.Now().Add(wireWait)
	for {
		inFlight := int64(0)
		for _, m := range p.BackendMetrics() {
			by[m.ID] = m
			inFlight += m.InFlight
		}
		if inFlight == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d attempts still in flight after %v", inFlight, wireWait)
		}
		time.Sleep(time.Millisecond)
	}
	okm, badm, refm := by["ok"], by["bad"], by["refused"]
	if refm.Requests == 0 || refm.LocalOriginErrors != refm.Requests || refm.Responses != [5]uint64{} {
		t.Errorf("refused backend: %+v; want every attempt a local-origin error and no response", refm)
	}
	if okm.Responses[1] != okm.Requests || okm.LocalOriginErrors != 0 || okm.BytesIn != 5*okm.Requests {
		t.Errorf("ok backend: %+v; want every attempt a 2xx of 5 bytes", okm)
	}
	if badm.Responses[4] != badm.Requests || badm.LocalOriginErrors != 0 {
		t.Errorf("bad backend: %+v; want every attempt a 5xx, none local-origin", badm)
	}
	if got := okm.Responses[1] + badm.Responses[4]; got != n {
		t.Errorf("%d responses counted, want %d", got, n)
	}
	if okm.Retries+badm.Retries != refm.Requests {
		t.Errorf("retries ok %d + bad %d, want the %d refused attempts", okm.Retries, badm.Retries, refm.Requests)
	}
	for _, m := range []BackendMetrics{okm, badm} {
		if m.ConnectionsOpened != 1 || m.ConnectionsReused != m.Requests-1 || m.InFlight != 0 {
			t.Errorf("%s: opened %d reused %d in flight %d; want one connection reused by the rest", m.ID, m.ConnectionsOpened, m.ConnectionsReused, m.InFlight)
		}
		var header, total uint64
		for i := range m.HeaderLatency.Counts {
			header += m.HeaderLatency.Counts[i]
			total += m.TotalLatency.Counts[i]
		}
		if header != m.Requests || total != m.Requests || m.HeaderLatency.Sum > m.TotalLatency.Sum || m.TotalLatency.Sum <= 0 {
			t.Errorf("%s: latencies %+v %+v; want one observation per request, the head before the end", m.ID, m.HeaderLatency, m.TotalLatency)
		}
	}

	// A backend drained or disabled keeps its counters (a draining one still finishes requests, and a
	// counter that restarts from zero reads as a reset to Prometheus); one re-enabled goes on from them.
	for _, st := range []table.State{table.Draining, table.Disabled, table.Active} {
		sets[0].Backends[1].State = st
		if err := p.SetBackends(sets); err != nil {
			t.Fatal(err)
		}
		got := map[string]BackendMetrics{}
		for _, m := range p.BackendMetrics() {
			got[m.ID] = m
		}
		if m, ok := got["bad"]; !ok || m.Requests != badm.Requests || m.Responses != badm.Responses {
			t.Fatalf("bad %v: %+v; want its %d requests kept", st, m, badm.Requests)
		}
	}

	// A new generation keeps the counters of a backend that stays and drops those of one that left.
	sets[0].Backends = sets[0].Backends[:1]
	if err := p.SetBackends(sets); err != nil {
		t.Fatal(err)
	}
	ms := p.BackendMetrics()
	if len(ms) != 1 || ms[0].ID != "ok" || ms[0].Requests != okm.Requests {
		t.Fatalf("after the flip: %+v; want ok alone, its %d requests kept", ms, okm.Requests)
	}
}

// TestBackendMetricsOff: with NoBackendMetrics nothing is counted.
func TestBackendMetricsOff(t *testing.T) {
	be := newRecordingBackend(t, nil)
	p, addr := startProxy(t, Config{NoBackendMetrics: true}, be.addr())
	c := dialWire(t, addr)
	c.get("/a", "GET /a")
	if ms := p.BackendMetrics(); len(ms) != 0 {
		t.Fatalf("metrics off: %+v", ms)
	}
}
