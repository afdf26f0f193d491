package proxy

import (
	"bytes"
	"net"
	"strconv"
	"testing"

	"github.com/xlbproxy/xlb/dataplane/http1"
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
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race; make test runs this test without it")
	}
	_, addr := startProxy(t, Config{}, rawBackend(t))
	rc := newRawClient(t, addr)
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
		t.Fatalf("%.2f allocations per proxied keep-alive GET, want 0", allocs)
	}
}
