package upstream

import (
	"crypto/tls"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time the process has used, user and system: the pool's and the backend's,
// which share it. On a shared machine it varies less than the wall time of ns/op.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process's CPU time per operation since start.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64((cpuTime(b)-start)/time.Nanosecond)/float64(b.N)/1e3, "cpu-µs/op")
}

// plainBackend is newTLSBackend without TLS: a server on 127.0.0.1:0 that answers every request.
func plainBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Go(func() { serveHTTP(c) })
		}
	})
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// BenchmarkKeepAlive is one request and its response over a pooled keep-alive connection: Get,
// the exchange, Put. The backend runs in the same process, on the same cores.
func BenchmarkKeepAlive(b *testing.B) {
	k := newPKI(b)
	for _, tc := range []struct {
		name string
		v    uint16 // 0: plain TCP
	}{{"plain", 0}, {"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}} {
		b.Run(tc.name, func(b *testing.B) {
			var p *Pool
			if tc.v == 0 {
				p = NewPool(Config{Address: plainBackend(b), IdleConnsMax: 1})
				b.Cleanup(p.Close)
			} else {
				p = tlsPool(b, newTLSBackend(b, k.serverConfig(tc.v), true).addr(), TLS{RootCAs: k.ca.Pool()})
			}
			p.Put(dialT(b, p))
			b.ReportAllocs()
			cpu := cpuTime(b)
			for b.Loop() {
				c, ok := p.Get(true)
				if !ok {
					b.Fatal("the pool lost its connection")
				}
				exchange(b, c)
				p.Put(c)
			}
			reportCPU(b, cpu)
			if s := p.Stats(); s.FullHandshakes+s.ResumedHandshakes > 1 {
				b.Fatalf("%d handshakes for one connection", s.FullHandshakes+s.ResumedHandshakes)
			}
		})
	}
}

// BenchmarkTLSConnect is a new connection per request: Dial (connect and handshake), one
// exchange, Close; with session resumption and without. It reports the share of handshakes that
// resumed and the mean handshake time the pool measured.
func BenchmarkTLSConnect(b *testing.B) {
	k := newPKI(b)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, off := range []bool{false, true} {
			name := map[uint16]string{tls.VersionTLS12: "TLS1.2", tls.VersionTLS13: "TLS1.3"}[v] +
				map[bool]string{false: "/resumed", true: "/full"}[off]
			b.Run(name, func(b *testing.B) {
				be := newTLSBackend(b, k.serverConfig(v), true)
				p := tlsPool(b, be.addr(), TLS{RootCAs: k.ca.Pool(), NoResumption: off})
				warm := dialT(b, p) // the first ticket
				exchange(b, warm)
				warm.Close()
				before := p.Stats()
				b.ReportAllocs()
				cpu := cpuTime(b)
				for b.Loop() {
					c, err := p.Dial()
					if err != nil {
						b.Fatal(err)
					}
					exchange(b, c)
					c.Close()
				}
				reportCPU(b, cpu)
				s := p.Stats()
				full, resumed := s.FullHandshakes-before.FullHandshakes, s.ResumedHandshakes-before.ResumedHandshakes
				b.ReportMetric(float64(resumed)/float64(full+resumed), "resumed/handshake")
				took := s.HandshakeTime - before.HandshakeTime
				b.ReportMetric(float64(took/time.Microsecond)/float64(full+resumed), "µs/handshake")
			})
		}
	}
}
