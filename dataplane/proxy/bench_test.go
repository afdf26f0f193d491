package proxy

import (
	"bytes"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/balance/sticky"
	"github.com/xlbproxy/xlb/dataplane/http1"
	"github.com/xlbproxy/xlb/dataplane/shm"
	"github.com/xlbproxy/xlb/dataplane/table"
)

// rawBackend is a keep-alive HTTP/1.1 server that answers every request head with a fixed 100-byte
// body, allocating nothing per request, so that a benchmark measures the proxy alone.
func rawBackend(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n" + string(bytes.Repeat([]byte("x"), 100)))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				n := 0
				for {
					m, err := c.Read(buf[n:])
					if err != nil {
						return
					}
					n += m
					for {
						i := bytes.Index(buf[:n], []byte("\r\n\r\n"))
						if i < 0 {
							break
						}
						if _, err := c.Write(resp); err != nil {
							return
						}
						n = copy(buf, buf[i+4:n])
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// rawClient sends keep-alive GETs and reads whole responses without allocating.
type rawClient struct {
	c    net.Conn
	req  []byte
	in   http1.Buffer
	resp http1.Response
	lim  http1.Limits
}

func newRawClient(tb testing.TB, addr string) *rawClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &rawClient{
		c:    c,
		req:  []byte("GET /bench HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: xlb-bench\r\nAccept: */*\r\n\r\n"),
		in:   http1.Buffer{Buf: make([]byte, 64<<10)},
		resp: http1.Response{Headers: make([]http1.Header, 0, 32)},
	}
}

func (rc *rawClient) do() (int, error) {
	if _, err := rc.c.Write(rc.req); err != nil {
		return 0, err
	}
	for {
		if err := http1.ParseResponse(rc.in.Buffered(), &rc.lim, &rc.resp); err == nil {
			break
		} else if err != http1.ErrIncomplete {
			return 0, err
		}
		if _, err := rc.in.ReadOnce(rc.c); err != nil {
			return 0, err
		}
	}
	need := rc.resp.HeadLen + int(rc.resp.ContentLength)
	for rc.in.Len() < need {
		if _, err := rc.in.ReadOnce(rc.c); err != nil {
			return 0, err
		}
	}
	status := rc.resp.Status
	rc.in.Consume(need)
	return status, nil
}

// BenchmarkProxyGET measures one keep-alive GET through the proxy: client, proxy and backend share
// the process, and allocs/op counts all three (client and backend allocate nothing).
func BenchmarkProxyGET(b *testing.B) {
	_, addr := startProxy(b, Config{}, rawBackend(b), rawBackend(b))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		rc := newRawClient(b, addr)
		for pb.Next() {
			if st, err := rc.do(); err != nil || st != 200 {
				b.Fatal("status " + strconv.Itoa(st) + ": " + errString(err))
			}
		}
	})
}

// BenchmarkProxyGETFollow is BenchmarkProxyGET on a proxy that follows a region, as a worker does:
// each request reads the generation word and the health epoch, and counts its outcome in its
// backend's health slot. go test -run XXX -bench ProxyGETFollow -count 6 ./dataplane/proxy.
func BenchmarkProxyGETFollow(b *testing.B) {
	_, addr := followingGET(b)
	b.ReportAllocs()
	cpu := cpuTime(b)
	b.RunParallel(func(pb *testing.PB) {
		rc := newRawClient(b, addr)
		for pb.Next() {
			if st, err := rc.do(); err != nil || st != 200 {
				b.Fatal("status " + strconv.Itoa(st) + ": " + errString(err))
			}
		}
	})
	b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the CPU time this process has used (user and system), in nanoseconds. Its difference
// over a benchmark, per op, is what a request costs in CPU-seconds (the proxy's, its backends' and
// its clients', all in this process), which other tenants of a shared machine do not inflate as
// they do ns/op.
func cpuTime(tb testing.TB) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// followingGET is a proxy following a region with one generation of two raw backends.
func followingGET(tb testing.TB) (*Proxy, string) {
	p, addr, _, w := followingProxyWith(tb, Config{})
	publish(tb, w, shm.Backend{ID: "a", Address: rawBackend(tb), Weight: 1}, shm.Backend{ID: "b", Address: rawBackend(tb), Weight: 1})
	// Installed before the clients start: one that sees the generation while another installs it
	// serves the one in force (none).
	if _, err := p.Refresh(); err != nil {
		tb.Fatal(err)
	}
	return p, addr
}

// BenchmarkProxyGETMetrics is BenchmarkProxyGET with the per-backend counters on and off, to show
// what counting costs: go test -run XXX -bench ProxyGETMetrics -count 6 ./dataplane/proxy.
func BenchmarkProxyGETMetrics(b *testing.B) {
	for _, off := range []bool{false, true} {
		name := "on"
		if off {
			name = "off"
		}
		b.Run(name, func(b *testing.B) {
			_, addr := startProxy(b, Config{NoBackendMetrics: off}, rawBackend(b), rawBackend(b))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				rc := newRawClient(b, addr)
				for pb.Next() {
					if st, err := rc.do(); err != nil || st != 200 {
						b.Fatal("status " + strconv.Itoa(st) + ": " + errString(err))
					}
				}
			})
		})
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// TestProxyGETAllocs holds the keep-alive GET path at zero allocations per request in steady state.
func TestProxyGETAllocs(t *testing.T) {
	_, addr := startProxy(t, Config{}, rawBackend(t))
	wantNoAllocs(t, addr, "")
}

// TestProxyGETAllocsFollow is TestProxyGETAllocs on a proxy that follows a region: the generation
// and health checks, and the counting in health slots, allocate nothing either.
func TestProxyGETAllocsFollow(t *testing.T) {
	_, addr := followingGET(t)
	wantNoAllocs(t, addr, " on a following proxy")
}

// wantNoAllocs fails the test unless a keep-alive GET through the proxy at addr allocates nothing
// once the pools and the backend connection are warm.
func wantNoAllocs(t *testing.T, addr, what string) {
	t.Helper()
	wantNoAllocsReq(t, addr, nil, what)
}

// wantNoAllocsReq is wantNoAllocs with the request req (nil: the raw client's own).
func wantNoAllocsReq(t *testing.T, addr string, req []byte, what string) {
	t.Helper()
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race; make test runs this test without it")
	}
	rc := newRawClient(t, addr)
	if req != nil {
		rc.req = req
	}
	for range 100 { // warm the pools and the backend connection
		if st, err := rc.do(); err != nil || st != 200 {
			t.Fatal(st, err)
		}
	}
	allocs := testing.AllocsPerRun(2000, func() {
		if st, err := rc.do(); err != nil || st != 200 {
			t.Fatal(st, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.2f allocations per proxied keep-alive GET%s, want 0", allocs, what)
	}
}

// policyProxy is a proxy of set "web" over two raw backends with policy: round_robin,
// least_request (following a region, so that it reads every worker's counts), maglev on a header,
// or round robin with a sticky cookie; the client sends what the policy reads (the header, a valid
// cookie naming backend b0).
func policyProxy(tb testing.TB, policy string) (addr string, req []byte) {
	tb.Helper()
	req = []byte("GET /bench HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: xlb-bench\r\nAccept: */*\r\n\r\n")
	keys := []sticky.Key{sticky.NewKey()}
	cfg := Config{StickyKeys: keys}
	bs := []table.Backend{{ID: "b0", Address: rawBackend(tb), Weight: 1}, {ID: "b1", Address: rawBackend(tb), Weight: 1}}
	s := table.Set{Name: "web", Backends: bs}
	switch policy {
	case "least_request":
		p, addr, _, w := followingProxyWith(tb, cfg)
		if _, err := w.Publish([]shm.Set{{Name: "web", Policy: balance.LeastRequest, Backends: table.Records([]table.Set{s})[0].Backends}}); err != nil {
			tb.Fatal(err)
		}
		if _, err := p.Refresh(); err != nil {
			tb.Fatal(err)
		}
		return addr, req
	case "maglev":
		s.Policy, s.Hash = balance.MaglevHash, table.HashOn{Kind: table.HashHeader, Name: "X-User"}
		req = []byte("GET /bench HTTP/1.1\r\nHost: bench.example\r\nX-User: user-12345\r\nAccept: */*\r\n\r\n")
	case "sticky":
		s.Sticky = &table.Sticky{}
		codec, _ := sticky.New(sticky.Config{Keys: keys})
		v, _ := codec.Encode(nil, "b0", time.Now())
		req = []byte("GET /bench HTTP/1.1\r\nHost: bench.example\r\nCookie: theme=dark; xlb_backend=" + string(v) + "\r\nAccept: */*\r\n\r\n")
	case "sticky-new": // every response sets the cookie
		s.Sticky = &table.Sticky{}
	}
	p, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.SetBackends([]table.Set{s}); err != nil {
		tb.Fatal(err)
	}
	return serveWeb(tb, p), req
}

var policies = []string{"round_robin", "least_request", "maglev", "sticky", "sticky-new"}

// BenchmarkProxyGETPolicy is BenchmarkProxyGET for each policy: go test -run XXX -bench
// ProxyGETPolicy -count 6 ./dataplane/proxy, and compare each with round_robin.
func BenchmarkProxyGETPolicy(b *testing.B) {
	for _, policy := range policies {
		b.Run(policy, func(b *testing.B) {
			addr, req := policyProxy(b, policy)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				rc := newRawClient(b, addr)
				rc.req = req
				for pb.Next() {
					if st, err := rc.do(); err != nil || st != 200 {
						b.Fatal("status " + strconv.Itoa(st) + ": " + errString(err))
					}
				}
			})
		})
	}
}

// TestProxyGETAllocsPolicy holds the keep-alive GET path at zero allocations for every policy:
// the Maglev lookup and the header's hash, the cookie's scan, check and (for a new client) its
// signing, and the region's in-flight counting allocate nothing.
func TestProxyGETAllocsPolicy(t *testing.T) {
	for _, policy := range policies {
		t.Run(policy, func(t *testing.T) {
			addr, req := policyProxy(t, policy)
			wantNoAllocsReq(t, addr, req, " with policy "+policy)
		})
	}
}
