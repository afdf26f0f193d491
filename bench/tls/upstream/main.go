// Command upstream is the backend of the TLS benchmark (bench/tls/run.sh): an HTTP/1.1 origin
// over plain TCP or, with -cert and -key, over TLS, which counts the TLS handshakes it serves so
// that the benchmark can report how often a load balancer resumed its backend sessions.
//
// It is the shared harness's "raw" upstream cut down to what the TLS scenarios send (GETs): a
// goroutine per connection on a net.Conn (a *tls.Conn with TLS) with bufio, responses from
// pre-built pieces, no allocation per request.
//
//	GET|HEAD /      200, a body of -size bytes, header "X-Upstream: NAME"
//	GET /__stats    "requests N" (requests served, not counting /__stats and /__tls)
//	GET /__tls      "full N", "resumed N", then "group NAME N" and "version NAME N" per key
//	                exchange group and TLS version negotiated (all zero without TLS)
//
// A request body (Content-Length) is read and dropped; a chunked one is refused with 400 and the
// connection closed. Keep-alive is HTTP/1.1's default; "Connection: close" in the request, an
// HTTP/1.0 request without "Connection: keep-alive", or -conn-requests served on the connection
// end it after the response (with "Connection: close" in it). The TLS side offers TLS 1.2 and
// 1.3, ALPN http/1.1, Go's default key exchanges and session tickets (resumption on).
//
// Usage: upstream -addr 127.0.0.1:18311 -name tls1 -cert c.pem -key k.pem [-size 100] [-conn-requests 0]
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
)

const (
	bufBytes         = 16 << 10 // read and write buffer per connection; a longer header line is refused
	headerLinesMax   = 100      // header lines per request; more is refused
	bodyBytesMax     = 64 << 20 // largest Content-Length read and dropped
	handshakeKindMax = 64       // distinct (group, version) names counted; more go to "other"
)

var errBadRequest = errors.New("bad request")

type server struct {
	name         string
	size         int         // body bytes of the 200 response
	tls          *tls.Config // nil: plain TCP
	connRequests int         // requests per connection before it is closed; 0: no limit
	keepAlive    []byte      // the 200 response head and body, keep-alive
	closing      []byte      // the same with "Connection: close"
	requests     atomic.Uint64
	full         atomic.Uint64
	resumed      atomic.Uint64

	mu       sync.Mutex
	groups   map[string]uint64 // key exchange group name -> handshakes
	versions map[string]uint64 // TLS version name -> handshakes
}

func newServer(name string, size int, cfg *tls.Config, connRequests int) *server {
	body := bytes.Repeat([]byte{'x'}, size)
	if size > 0 {
		copy(body, "upstream "+name+"\n")
		body[size-1] = '\n'
	}
	head := func(extra string) []byte {
		h := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Upstream: %s\r\nContent-Length: %d\r\n%s\r\n", name, size, extra)
		return append([]byte(h), body...)
	}
	return &server{
		name: name, size: size, tls: cfg, connRequests: connRequests,
		keepAlive: head(""), closing: head("Connection: close\r\n"),
		groups: map[string]uint64{}, versions: map[string]uint64{},
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18311", "listen address host:port")
	name := flag.String("name", "up1", "backend name, sent in the X-Upstream response header")
	size := flag.Int("size", 100, "body size in bytes of the GET response")
	certFile := flag.String("cert", "", "PEM certificate (chain) file: serve TLS (with -key)")
	keyFile := flag.String("key", "", "PEM private key file of -cert")
	connRequests := flag.Int("conn-requests", 0, "close a connection after this many requests (0: never)")
	flag.Parse()
	if *size < 0 || *connRequests < 0 {
		log.Fatal("upstream: -size and -conn-requests must be >= 0")
	}
	if (*certFile == "") != (*keyFile == "") {
		log.Fatal("upstream: -cert and -key go together")
	}
	var cfg *tls.Config
	if *certFile != "" {
		pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatalf("upstream: -cert %s, -key %s: %v", *certFile, *keyFile, err)
		}
		cfg = &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal("upstream: ", err)
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		os.Exit(0)
	}()
	log.Fatal(newServer(*name, *size, cfg, *connRequests).serve(ln))
}

func (s *server) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go s.serveConn(c)
	}
}

func (s *server) serveConn(nc net.Conn) {
	defer nc.Close()
	if s.tls != nil {
		tc := tls.Server(nc, s.tls)
		if err := tc.Handshake(); err != nil {
			return
		}
		s.countHandshake(tc.ConnectionState())
		nc = tc
	}
	br := bufio.NewReaderSize(nc, bufBytes)
	bw := bufio.NewWriterSize(nc, bufBytes)
	for n := 1; ; n++ {
		keep, err := s.serveOne(br, bw, s.connRequests == 0 || n < s.connRequests)
		if err != nil {
			if err == errBadRequest {
				bw.WriteString("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
				bw.Flush()
			}
			return
		}
		if !keep {
			bw.Flush()
			return
		}
		if br.Buffered() == 0 { // flush unless a pipelined request is already here
			if err := bw.Flush(); err != nil {
				return
			}
		}
	}
}

func (s *server) countHandshake(st tls.ConnectionState) {
	if st.DidResume {
		s.resumed.Add(1)
	} else {
		s.full.Add(1)
	}
	group := "none" // as Go reports it: a TLS 1.2 resumption names the group of the session it resumes
	if st.CurveID != 0 {
		group = st.CurveID.String()
	}
	version := tls.VersionName(st.Version)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.groups) >= handshakeKindMax {
		if _, ok := s.groups[group]; !ok {
			group = "other"
		}
	}
	if len(s.versions) >= handshakeKindMax {
		if _, ok := s.versions[version]; !ok {
			version = "other"
		}
	}
	s.groups[group]++
	s.versions[version]++
}

// line returns the next line without its CRLF (or LF).
func line(br *bufio.Reader) ([]byte, error) {
	l, err := br.ReadSlice('\n')
	if err != nil {
		if err == bufio.ErrBufferFull {
			return nil, errBadRequest
		}
		return nil, err
	}
	l = l[:len(l)-1]
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	return l, nil
}

// serveOne reads one request and writes its response; it reports whether the connection stays
// open after it. mayKeep false closes it in any case.
func (s *server) serveOne(br *bufio.Reader, bw *bufio.Writer, mayKeep bool) (bool, error) {
	var l []byte
	var err error
	for { // RFC 9112 §2.2: ignore empty lines before the request line
		if l, err = line(br); err != nil {
			return false, err
		}
		if len(l) > 0 {
			break
		}
	}
	sp1 := bytes.IndexByte(l, ' ')
	sp2 := bytes.LastIndexByte(l, ' ')
	if sp1 <= 0 || sp2 <= sp1 {
		return false, errBadRequest
	}
	head := bytes.Equal(l[:sp1], []byte("HEAD"))
	target := string(l[sp1+1 : sp2]) // small; only compared below, so it does not escape
	keep := !bytes.Equal(l[sp2+1:], []byte("HTTP/1.0"))
	var length int64
	for i := 0; ; i++ {
		if l, err = line(br); err != nil {
			if err == io.EOF {
				return false, errBadRequest
			}
			return false, err
		}
		if len(l) == 0 {
			break
		}
		if i == headerLinesMax {
			return false, errBadRequest
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			return false, errBadRequest
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(value, []byte("close")) {
				keep = false
			} else if bytes.EqualFold(value, []byte("keep-alive")) {
				keep = true
			}
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || n > bodyBytesMax {
				return false, errBadRequest
			}
			length = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return false, errBadRequest
		}
	}
	if _, err := br.Discard(int(length)); err != nil {
		return false, err
	}
	keep = keep && mayKeep
	switch target {
	case "/__stats":
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n", len(s.stats()))
		bw.WriteString(s.stats())
		return false, nil
	case "/__tls":
		t := s.tlsStats()
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n", len(t))
		bw.WriteString(t)
		return false, nil
	}
	s.requests.Add(1)
	resp := s.keepAlive
	if !keep {
		resp = s.closing
	}
	if head {
		resp = resp[:len(resp)-s.size]
	}
	_, err = bw.Write(resp)
	return keep, err
}

func (s *server) stats() string { return fmt.Sprintf("requests %d\n", s.requests.Load()) }

// tlsStats is the /__tls body: the handshakes served, full and resumed, then by group and version.
func (s *server) tlsStats() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "full %d\nresumed %d\n", s.full.Load(), s.resumed.Load())
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, kv := range []struct {
		kind string
		m    map[string]uint64
	}{{"group", s.groups}, {"version", s.versions}} {
		keys := make([]string, 0, len(kv.m))
		for k := range kv.m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s %s %d\n", kv.kind, k, kv.m[k])
		}
	}
	return b.String()
}
