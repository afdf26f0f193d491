package monitor

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/dataplane/table"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds every wait of these tests for something the monitor does.
const wait = 10 * time.Second

// fixture is a real region with one published set, a worker's follower of it, and a running
// monitor whose Changed calls are counted on a channel.
type fixture struct {
	t       *testing.T
	region  *shm.Region
	writer  *shm.Writer
	worker  *table.Follower
	mon     *Monitor
	changed chan struct{}
	slots   map[string]uint32
	stop    func()
}

func newFixture(t *testing.T, cfg health.Config, addrs map[string]string) *fixture {
	t.Helper()
	r, err := shm.Create(filepath.Join(t.TempDir(), "region"), shm.Capacities{Sets: 2, Backends: 8, StringBytes: 512, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	r.ClaimWorker(0, os.Getpid(), time.Now().UnixNano())
	f := &fixture{t: t, region: r, writer: shm.NewWriter(r), worker: table.NewFollower(r, 0), changed: make(chan struct{}, 64)}
	f.mon = f.start()
	f.publish(cfg, addrs)
	return f
}

// start runs a monitor of the fixture's region until the test ends or stop.
func (f *fixture) start() *Monitor {
	m := New(Config{Slots: f.region, Rescan: time.Hour, TrialTimeout: 500 * time.Millisecond,
		Changed: func() {
			select {
			case f.changed <- struct{}{}:
			default:
			}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	f.stop = stop
	f.t.Cleanup(stop)
	return m
}

// publish publishes set web of the backends at addrs (by id) and hands it to the monitor.
func (f *fixture) publish(cfg health.Config, addrs map[string]string) {
	f.t.Helper()
	set := shm.Set{Name: "web"}
	for _, id := range []string{"a", "b", "c", "d"} {
		if addr, ok := addrs[id]; ok {
			set.Backends = append(set.Backends, shm.Backend{ID: id, Address: addr, Weight: 1})
		}
	}
	sets := []shm.Set{set}
	if _, err := f.writer.Publish(sets); err != nil {
		f.t.Fatal(err)
	}
	f.slots = map[string]uint32{}
	ms := Set{Name: "web", Health: cfg}
	for _, b := range sets[0].Backends {
		f.slots[b.ID] = b.HealthSlot
		ms.Backends = append(ms.Backends, Backend{ID: b.ID, Address: b.Address, Slot: b.HealthSlot})
	}
	f.mon.Update(context.Background(), []Set{ms})
}

func (f *fixture) route(id string) health.Route { return f.worker.Route(f.slots[id]) }

// awaitRoute waits until the route of id satisfies cond, at the monitor's Changed calls.
func (f *fixture) awaitRoute(id, what string, cond func(health.Route) bool) {
	f.t.Helper()
	deadline := time.After(wait)
	for !cond(f.route(id)) {
		select {
		case <-f.changed:
		case <-deadline:
			f.t.Fatalf("%s: not within %v; route %+v, status %v", what, wait, f.route(id), f.status(id))
		}
	}
}

// awaitStatus waits until the status of id satisfies cond, and returns it.
func (f *fixture) awaitStatus(id, what string, cond func(BackendStatus) bool) BackendStatus {
	f.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		st := f.status(id)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s: not within %v; status %v %+v", what, wait, st, st.Machine)
		}
		time.Sleep(time.Millisecond)
	}
}

func (f *fixture) status(id string) BackendStatus {
	for _, s := range f.mon.Status(context.Background()).Sets {
		for _, b := range s.Backend {
			if b.ID == id {
				return b
			}
		}
	}
	f.t.Fatalf("no status of %s", id)
	return BackendStatus{}
}

func out(r health.Route) bool   { return r.Out && !r.Trial }
func in(r health.Route) bool    { return !r.Out }
func trial(r health.Route) bool { return r.Trial }

// TestMonitorPassive: failures counted by a worker eject the backend at once, with the reason in
// its status; after the ejection time one trial request is offered, exactly one claim wins it, and
// its success readmits the backend with its counters at zero.
func TestMonitorPassive(t *testing.T) {
	cfg := health.Config{Outlier: health.Outlier{ConsecutiveFailures: 3, BaseEjectionTime: 300 * time.Millisecond}}
	f := newFixture(t, cfg, map[string]string{"a": "127.0.0.1:1", "b": "127.0.0.1:2"})
	for range 2 {
		f.worker.ObserveFailure(f.slots["a"], health.KindConnect, 0)
	}
	f.worker.ObserveSuccess(f.slots["a"]) // the count starts again
	for range 3 {
		f.worker.ObserveFailure(f.slots["a"], health.KindConnect, 0)
	}
	f.mon.Notify()
	f.awaitRoute("a", "ejection", out)
	st := f.status("a")
	if st.Machine.Status != health.Ejected || !strings.HasPrefix(st.Reason, "ejected: 3 consecutive connect failures at ") ||
		!strings.HasSuffix(st.Reason, ", 1st ejection") || st.Ejections != 1 {
		t.Fatalf("status after the ejection: %v", st)
	}
	if n, _, _ := health.FailuresOf(f.region.HealthWord(f.slots["a"], health.WordFailures)); n != 0 {
		t.Fatalf("the failure count is %d after the ejection, want 0", n)
	}

	f.awaitRoute("a", "trial offer", trial)
	seq, ok := f.worker.ClaimTrial(f.slots["a"])
	if !ok {
		t.Fatal("the offered trial could not be claimed")
	}
	if _, ok := f.worker.ClaimTrial(f.slots["a"]); ok {
		t.Fatal("a trial was claimed twice")
	}
	f.worker.EndTrial(f.slots["a"], seq, true, health.KindNone, 200)
	f.mon.Notify()
	f.awaitRoute("a", "readmission", in)
	if st := f.status("a"); st.Machine.Status != health.Healthy || st.Machine.Fails != 0 || st.Machine.Ejections != 1 {
		t.Fatalf("status after the trial: %v %+v", st, st.Machine)
	}

	// One failure after readmission does not eject (the seed's bug); the threshold does, and the
	// second ejection in a row lasts twice as long.
	f.worker.ObserveFailure(f.slots["a"], health.KindTimeout, 0)
	f.mon.Notify()
	// Notify does not wait: the loop may answer Status before it reads the failure.
	st = f.awaitStatus("a", "the failure after readmission counted", func(st BackendStatus) bool {
		return st.Machine.Fails > 0 || st.Machine.Status != health.Healthy
	})
	if st.Machine.Status != health.Healthy || st.Machine.Fails != 1 {
		t.Fatalf("one failure after readmission: %v %+v", st, st.Machine)
	}
	f.worker.ObserveFailure(f.slots["a"], health.KindTimeout, 0)
	f.worker.ObserveFailure(f.slots["a"], health.KindTimeout, 0)
	f.mon.Notify()
	f.awaitRoute("a", "second ejection", out)
	if m := f.status("a").Machine; m.Until.Sub(m.Since) != 600*time.Millisecond || m.Ejections != 2 {
		t.Fatalf("second ejection: %+v, want 600ms and ejections 2", m)
	}

	// A claimed trial with no outcome (its worker died) counts as failed after TrialTimeout.
	f.awaitRoute("a", "second trial offer", trial)
	if _, ok := f.worker.ClaimTrial(f.slots["a"]); !ok {
		t.Fatal("the second trial could not be claimed")
	}
	f.mon.Notify() // the monitor sees the claim, and times it
	f.awaitRoute("a", "ejection by a lost trial", out)
	if st := f.status("a"); st.Machine.Cause.Source != health.SourceTrial || st.Machine.Cause.Kind != health.KindTimeout {
		t.Fatalf("after the lost trial: %v", st)
	}
}

// TestMonitorCap: with two backends and the default cap (half, at least one), the second failing
// backend stays in, and its status says why; it is ejected once the first is back.
func TestMonitorCap(t *testing.T) {
	cfg := health.Config{Outlier: health.Outlier{ConsecutiveFailures: 1, BaseEjectionTime: 200 * time.Millisecond}}
	f := newFixture(t, cfg, map[string]string{"a": "127.0.0.1:1", "b": "127.0.0.1:2"})
	f.worker.ObserveFailure(f.slots["a"], health.KindReset, 0)
	f.worker.ObserveFailure(f.slots["b"], health.KindReset, 0)
	f.mon.Notify()
	f.awaitRoute("a", "ejection of a", out)
	if st := f.status("b"); !st.Capped || in(st.Route) != true ||
		!strings.Contains(st.Reason, "not ejected: 1 of 2 active backends are out, the most max_ejection_percent (50%) allows") {
		t.Fatalf("b: %v, want it held back by the cap", st)
	}
	f.awaitRoute("a", "trial of a", trial)
	seq, _ := f.worker.ClaimTrial(f.slots["a"])
	f.worker.EndTrial(f.slots["a"], seq, true, 0, 200)
	f.mon.Notify()
	f.awaitRoute("b", "ejection of b once a is back", out)
}

// flipBackend answers its probes with the status in code.
func flipBackend(t *testing.T, code *atomic.Int32) string {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || r.Header.Get("User-Agent") != "xlb-health-check" {
			w.WriteHeader(400)
			return
		}
		w.WriteHeader(int(code.Load()))
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// TestMonitorProbes: failing probes eject, a passing probe does not end the ejection early, and
// rise passing probes readmit once it is over; a backend that refuses connections and one that
// never answers are ejected by their probes too.
func TestMonitorProbes(t *testing.T) {
	var code atomic.Int32
	code.Store(200)
	cfg := health.Config{
		Probe: health.Probe{Kind: health.ProbeHTTP, Interval: 20 * time.Millisecond, Fall: 2, Rise: 2, Path: "/healthz"},
		// Cap 100: all three may be out at once.
		Outlier: health.Outlier{BaseEjectionTime: 300 * time.Millisecond, MaxEjectionPercent: 100},
	}
	hung := hangingListener(t)
	var up atomic.Int32
	up.Store(200)
	// d stays up: with every backend out, the set would be in panic, and every route in.
	f := newFixture(t, cfg, map[string]string{"a": flipBackend(t, &code), "b": refusedAddr(t), "c": hung, "d": flipBackend(t, &up)})
	f.awaitRoute("b", "ejection of the refusing backend", out)
	f.awaitRoute("c", "ejection of the hung backend", out)
	if st := f.status("c"); st.Machine.Cause.Kind != health.KindTimeout || !strings.Contains(st.Reason, "2 failed probes in a row (timeout)") {
		t.Fatalf("c: %v", st)
	}
	if st := f.status("b"); st.Machine.Cause.Kind != health.KindConnect {
		t.Fatalf("b: %v", st)
	}
	if st := f.status("a"); st.Machine.Status != health.Healthy || st.ProbesPassed == 0 {
		t.Fatalf("a: %v, %d probes passed", st, st.ProbesPassed)
	}

	code.Store(503)
	f.awaitRoute("a", "ejection by 503s", out)
	ejected := f.status("a").Machine
	if ejected.Cause.Kind != health.KindStatus || ejected.Cause.Status != 503 {
		t.Fatalf("a ejected for %v, want status 503", ejected.Cause)
	}
	code.Store(200) // its probes pass from now on, and must not end the ejection early
	f.awaitRoute("a", "readmission", in)
	if back := f.status("a").Machine; back.Since.Sub(ejected.Since) < 300*time.Millisecond || back.Status != health.Healthy {
		t.Fatalf("a readmitted %v after its ejection (%+v), before its 300ms were over", back.Since.Sub(ejected.Since), back)
	}
}

// TestMonitorKeepsStateAcrossRestarts: a new monitor over the same region (a restarted or upgraded
// supervisor) takes every machine up where the old one left it; while paused, a monitor writes
// nothing, and on resume it reads back what another wrote meanwhile.
func TestMonitorKeepsStateAcrossRestarts(t *testing.T) {
	cfg := health.Config{Outlier: health.Outlier{ConsecutiveFailures: 1, BaseEjectionTime: time.Hour, MaxEjectionPercent: 100}}
	f := newFixture(t, cfg, map[string]string{"a": "127.0.0.1:1", "b": "127.0.0.1:2", "c": "127.0.0.1:3"})
	f.worker.ObserveFailure(f.slots["a"], health.KindConnect, 0)
	f.mon.Notify()
	f.awaitRoute("a", "ejection", out)
	before := f.status("a").Machine

	f.mon.Pause(context.Background())
	next := f.start() // the new supervisor's
	f.mon, next = next, f.mon
	f.publish(cfg, map[string]string{"a": "127.0.0.1:1", "b": "127.0.0.1:2", "c": "127.0.0.1:3"})
	after := f.status("a").Machine
	if after.Status != health.Ejected || !after.Until.Equal(before.Until.Truncate(time.Millisecond)) || after.Ejections != 1 || after.Cause != before.Cause {
		t.Fatalf("after the restart: %+v, want %+v", after, before)
	}
	// The new one ejects b; the paused one writes nothing of it, and reads it on resume.
	f.worker.ObserveFailure(f.slots["b"], health.KindConnect, 0)
	f.mon.Notify()
	f.awaitRoute("b", "ejection by the new monitor", out)
	f.stop()
	next.Resume(context.Background())
	var st BackendStatus
	for _, s := range next.Status(context.Background()).Sets {
		for _, b := range s.Backend {
			if b.ID == "b" {
				st = b
			}
		}
	}
	if st.Machine.Status != health.Ejected {
		t.Fatalf("the resumed monitor sees b %v, want ejected", st)
	}
}

func refusedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// hangingListener accepts connections and reads them, and never answers.
func hangingListener(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				go func() { <-done; c.Close() }()
				bufio.NewReader(c).ReadString(0)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestProbe: how each way a backend fails is classified.
func TestProbe(t *testing.T) {
	raw := func(resp string) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil || l == "\r\n" {
						break
					}
				}
				fmt.Fprint(c, resp)
				c.Close()
			}
		}()
		return ln.Addr().String()
	}
	httpProbe := health.Config{Probe: health.Probe{Kind: health.ProbeHTTP, Timeout: 300 * time.Millisecond}}.WithDefaults().Probe
	tcpProbe := health.Config{Probe: health.Probe{Kind: health.ProbeTCP, Timeout: 300 * time.Millisecond}}.WithDefaults().Probe
	for _, tc := range []struct {
		name   string
		addr   string
		p      health.Probe
		ok     bool
		kind   health.Kind
		status int
	}{
		{"200", raw("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), httpProbe, true, 0, 200},
		{"100 then 204", raw("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"), httpProbe, true, 0, 204},
		{"301 passes by default", raw("HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n"), httpProbe, true, 0, 301},
		{"503", raw("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"), httpProbe, false, health.KindStatus, 503},
		{"malformed", raw("HTTP/1.1 2000 what\r\n\r\n"), httpProbe, false, health.KindMalformed, 0},
		{"closed at once", raw(""), httpProbe, false, health.KindReset, 0},
		{"refused", refusedAddr(t), httpProbe, false, health.KindConnect, 0},
		{"hung", hangingListener(t), httpProbe, false, health.KindTimeout, 0},
		{"tcp up", hangingListener(t), tcpProbe, true, 0, 0},
		{"tcp refused", refusedAddr(t), tcpProbe, false, health.KindConnect, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Probe(context.Background(), tc.addr, &tc.p)
			if res.OK != tc.ok || res.Fail != tc.kind || res.Status != tc.status {
				t.Fatalf("%+v, want ok %v, kind %v, status %d", res, tc.ok, tc.kind, tc.status)
			}
		})
	}
}

// TestProbeTLS: an HTTP probe with a TLS configuration speaks TLS: it passes on an HTTPS backend
// whose certificate verifies, fails as a connect naming what TLS refused when it does not, and a
// plain probe of the same backend gets no HTTP response.
func TestProbeTLS(t *testing.T) {
	var sawTLS atomic.Bool
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawTLS.Store(r.TLS != nil)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	p := health.Config{Probe: health.Probe{Kind: health.ProbeHTTP, Timeout: 2 * time.Second}}.WithDefaults().Probe
	if res := ProbeTLS(context.Background(), addr, &p, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}); !res.OK || res.Status != 204 || !sawTLS.Load() {
		t.Fatalf("probe of an HTTPS backend: %+v (TLS seen %v), want 204 over TLS", res, sawTLS.Load())
	}
	res := ProbeTLS(context.Background(), addr, &p, &tls.Config{ServerName: "127.0.0.1"}) // the system roots
	if res.OK || res.Fail != health.KindConnect || !strings.Contains(res.Err, "TLS handshake") || !strings.Contains(res.Err, "certificate") {
		t.Fatalf("probe with the wrong roots: %+v, want a connect failure naming the certificate", res)
	}
	if res := Probe(context.Background(), addr, &p); res.OK {
		t.Fatalf("plain probe of an HTTPS backend passed: %+v", res)
	}
}

// TestMonitorDrainingKeepsItsRoute: a backend the control plane drains is out in its status, but
// its slot keeps the route of its health (in): workers leave it out by its state in the generation
// they serve, and the generation that makes it active again must find it in at once, not out until
// the monitor writes it anew (a set whose only active backend that is would answer 503 meanwhile).
func TestMonitorDrainingKeepsItsRoute(t *testing.T) {
	f := newFixture(t, health.Config{}, map[string]string{"a": "127.0.0.1:1", "b": "127.0.0.1:2"})
	ms := Set{Name: "web"}
	for _, id := range []string{"a", "b"} {
		b := Backend{ID: id, Address: "x", Slot: f.slots[id]}
		if id == "b" {
			b.State = table.Draining
		}
		ms.Backends = append(ms.Backends, b)
	}
	f.mon.Update(context.Background(), []Set{ms})
	if st := f.status("b"); !st.Route.Out {
		t.Errorf("the status of draining b: %v, route %+v; want out", st, st.Route)
	}
	// Status answers after the loop wrote what Update changed.
	if r := f.route("b"); r.Out {
		t.Errorf("the region's route of draining b: %+v, want in (by its health)", r)
	}
}
