package proxy

import (
	"bufio"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/shm"
)

// The proxy's side of health, against a real region: what it counts in a backend's health slot,
// how it follows the routes written there, the trial request, and the waits it cuts short.

// publishSet publishes set "web" of backends with failure statuses fs, and returns the health slot
// of each backend, by id.
func publishSet(t *testing.T, w *shm.Writer, fs health.FailureStatuses, backends ...shm.Backend) map[string]uint32 {
	t.Helper()
	sets := []shm.Set{{Name: "web", FailureStatuses: uint8(fs), Backends: backends}}
	if _, err := w.Publish(sets); err != nil {
		t.Fatal(err)
	}
	slots := map[string]uint32{}
	for _, b := range sets[0].Backends {
		slots[b.ID] = b.HealthSlot
	}
	return slots
}

// setRoute writes r as the route of slot, as the supervisor's monitor does, and bumps the epoch. A
// zero weight is full weight.
func setRoute(r *shm.Region, slot uint32, route health.Route) {
	if route.WeightPermille == 0 {
		route.WeightPermille = 1000
	}
	w, _, _ := health.Encode(&health.Machine{Status: health.Ejected}, route)
	r.SetHealthWord(slot, health.WordRoute, w)
	r.BumpHealthEpoch()
}

func failures(r *shm.Region, slot uint32) (int, health.Kind, int) {
	return health.FailuresOf(r.HealthWord(slot, health.WordFailures))
}

func TestHealthCountsOutcomes(t *testing.T) {
	ok := newRecordingBackend(t, func(*wireRequest) (string, bool) { return plainResponse(200, "ok"), false })
	unavailable := newRecordingBackend(t, func(*wireRequest) (string, bool) { return plainResponse(503, "busy"), false })
	var told atomic.Int64
	_, addr, r, w := followingProxyWith(t, Config{HealthChanged: func() { told.Add(1) }, Retries: -1})
	refused := refusedAddr(t)

	// A refused connect is a connect failure, counted in the backend's slot, and the supervisor is
	// told; the next backend answers the request.
	slots := publishSet(t, w, health.FailNoStatus, shm.Backend{ID: "down", Address: refused, Weight: 1},
		shm.Backend{ID: "ok", Address: ok.addr(), Weight: 1})
	c := dialWire(t, addr)
	for range 4 { // round robin: down, ok, down, ok; no retries, so down's requests fail
		c.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.response("GET")
		c = dialWire(t, addr) // a 503 of the proxy closes the connection
	}
	if n, k, _ := failures(r, slots["down"]); n != 2 || k != health.KindConnect {
		t.Errorf("down: %d failures of kind %v, want 2 connect failures", n, k)
	}
	if n, _, _ := failures(r, slots["ok"]); n != 0 {
		t.Errorf("ok: %d failures", n)
	}
	if told.Load() != 2 {
		t.Errorf("the supervisor was told %d times, want 2 (once per failure)", told.Load())
	}

	// A 503 counts only when the set says gateway statuses fail; a success resets the count.
	for _, tc := range []struct {
		fs   health.FailureStatuses
		want int
	}{{health.FailNoStatus, 0}, {health.FailGateway, 3}, {health.Fail5xx, 3}} {
		slots = publishSet(t, w, tc.fs, shm.Backend{ID: "busy", Address: unavailable.addr(), Weight: 1})
		r.SetHealthWord(slots["busy"], health.WordFailures, 0) // the count of the case before
		c := dialWire(t, addr)
		for range 3 {
			c.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			if res, _ := c.response("GET"); res.StatusCode != 503 {
				t.Fatalf("status %d, want the backend's 503", res.StatusCode)
			}
		}
		n, k, st := failures(r, slots["busy"])
		if n != tc.want || tc.want > 0 && (k != health.KindStatus || st != 503) {
			t.Errorf("failure statuses %v: %d failures (%v, %d), want %d of status 503", tc.fs, n, k, st, tc.want)
		}
	}
	slots = publishSet(t, w, health.FailNoStatus, shm.Backend{ID: "busy", Address: ok.addr(), Weight: 1})
	if n, _, _ := failures(r, slots["busy"]); n != 3 {
		t.Fatalf("busy: %d failures before a success, want the 3 of before", n)
	}
	dialWire(t, addr).get("/", "ok")
	if n, _, _ := failures(r, slots["busy"]); n != 0 {
		t.Errorf("busy: %d failures after a success, want 0", n)
	}
}

func TestHealthFollowsRoutes(t *testing.T) {
	a := newRecordingBackend(t, func(*wireRequest) (string, bool) { return plainResponse(200, "a"), false })
	b := newRecordingBackend(t, func(*wireRequest) (string, bool) { return plainResponse(200, "b"), false })
	_, addr, r, w := followingProxy(t)
	slots := publishSet(t, w, health.FailNoStatus, shm.Backend{ID: "a", Address: a.addr(), Weight: 1},
		shm.Backend{ID: "b", Address: b.addr(), Weight: 1})
	c := dialWire(t, addr)
	split := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			c.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			_, body := c.response("GET")
			got[body]++
		}
		return got
	}
	if got := split(10); got["a"] != 5 || got["b"] != 5 {
		t.Fatalf("all in: split %v, want 5/5", got)
	}

	// Out: nothing new goes to it, from the next request on.
	setRoute(r, slots["a"], health.Route{Out: true})
	if got := split(10); got["b"] != 10 {
		t.Fatalf("a out: split %v, want everything on b", got)
	}

	// On trial: exactly one request claims the trial and goes to a; it passes.
	r.SetHealthWord(slots["a"], health.WordTrial, health.TrialWord(health.TrialOffered, 7, 0, 0))
	setRoute(r, slots["a"], health.Route{Out: true, Trial: true})
	if got := split(10); got["a"] != 1 || got["b"] != 9 {
		t.Fatalf("a on trial: split %v, want 1 trial on a", got)
	}
	if s, seq, _, _ := health.TrialOf(r.HealthWord(slots["a"], health.WordTrial)); s != health.TrialPassed || seq != 7 {
		t.Fatalf("trial word: %v of offer %d, want passed of offer 7", s, seq)
	}

	// Slow start: a tenth of its weight.
	setRoute(r, slots["a"], health.Route{WeightPermille: 100})
	if got := split(110); got["a"] != 10 || got["b"] != 100 {
		t.Fatalf("a at 10%%: split %v, want 10/100", got)
	}

	// Panic: out by its health, in all the same.
	setRoute(r, slots["a"], health.Route{Panic: true})
	if got := split(10); got["a"] != 5 {
		t.Fatalf("panic: split %v, want a back to 5/5", got)
	}
}

// TestHealthTrialFailureRetried: a GET that fails as the trial of an ejected backend is answered by
// another backend, and the trial's failure is recorded for the supervisor.
func TestHealthTrialFailureRetried(t *testing.T) {
	b := newRecordingBackend(t, func(*wireRequest) (string, bool) { return plainResponse(200, "b"), false })
	_, addr, r, w := followingProxy(t)
	slots := publishSet(t, w, health.FailNoStatus, shm.Backend{ID: "a", Address: refusedAddr(t), Weight: 1},
		shm.Backend{ID: "b", Address: b.addr(), Weight: 1})
	r.SetHealthWord(slots["a"], health.WordTrial, health.TrialWord(health.TrialOffered, 1, 0, 0))
	setRoute(r, slots["a"], health.Route{Out: true, Trial: true})
	dialWire(t, addr).get("/", "b")
	if s, _, k, _ := health.TrialOf(r.HealthWord(slots["a"], health.WordTrial)); s != health.TrialFailed || k != health.KindConnect {
		t.Fatalf("trial word: %v (%v), want a failed trial by a connect failure", s, k)
	}
}

// hangingBackend accepts connections and reads what comes, and never answers, until release.
func hangingBackend(t *testing.T) (addr string, arrived chan struct{}, release func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	arrived = make(chan struct{}, 16)
	done := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(done); ln.Close() }) }
	t.Cleanup(release)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := readWireRequest(br); err == nil {
					arrived <- struct{}{}
				}
				<-done
			}()
		}
	}()
	return ln.Addr().String(), arrived, release
}

// TestHealthAbandonsWaitOnEjection: a GET waiting for the head of a backend that goes out is sent
// to another backend at once, not after the backend timeout (60s here), and a 504; a POST, which
// may not be sent twice, waits on.
func TestHealthAbandonsWaitOnEjection(t *testing.T) {
	hung, arrived, release := hangingBackend(t)
	b := newRecordingBackend(t, func(*wireRequest) (string, bool) { return plainResponse(200, "b"), false })
	p, addr, r, w := followingProxyWith(t, Config{BackendTimeout: 60 * time.Second})
	t.Cleanup(release) // before the proxy's shutdown, which the POST would hold up
	slots := publishSet(t, w, health.FailNoStatus, shm.Backend{ID: "hung", Address: hung, Weight: 1},
		shm.Backend{ID: "b", Address: b.addr(), Weight: 1})

	get := dialWire(t, addr)
	get.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n") // round robin: the first goes to hung
	<-arrived
	dialWire(t, addr).get("/", "b")
	post := dialWire(t, addr)
	post.write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi") // and the third to hung
	select {
	case <-arrived:
	case <-time.After(wireWait):
		t.Fatal("the POST did not reach the hung backend")
	}

	setRoute(r, slots["hung"], health.Route{Out: true})
	p.Refresh() // as the worker does when its supervisor wakes it
	get.nc.SetReadDeadline(time.Now().Add(wireWait))
	res, body := get.response("GET")
	if res.StatusCode != 200 || body != "b" {
		t.Fatalf("the GET that waited on the ejected backend: %d %q, want 200 from b", res.StatusCode, body)
	}
	if n, _, _ := failures(r, slots["hung"]); n != 0 {
		t.Errorf("the abandoned wait counted %d failures of the ejected backend, want none", n)
	}
	// The POST is still waiting: its read times out on the test's side, not with an answer.
	post.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := post.br.ReadByte(); err == nil {
		t.Fatal("the POST was answered; it must wait for the backend it went to")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("the POST's connection: %v, want it still open", err)
	}
}
