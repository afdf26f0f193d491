package proxy

// End-to-end tests of forwarding: real backends and clients on loopback. Raw TCP backends and raw
// client sockets are used wherever the exact bytes on the wire are what is being tested; net/http
// only where the behaviour is ordinary.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// wireWait bounds every wait in these tests. A correct proxy never comes close to it; reaching it
// means something hung or was lost.
const wireWait = 10 * time.Second

// promptWait bounds the wait for something the proxy must do at once, where the wrong behaviour is
// to sit out one of its 60-second timeouts.
const promptWait = 3 * time.Second

// ---------------------------------------------------------------------------------------------
// Raw backends

// wireBackend is a TCP backend on 127.0.0.1:0 that hands every accepted connection to handle on a
// goroutine of its own. It counts accepts, and the requests that a handler records.
type wireBackend struct {
	ln       net.Listener
	accepts  atomic.Int64
	requests chan *wireRequest
	done     chan struct{}
	wg       sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func newWireBackend(t testing.TB, handle func(s *wireBackend, c net.Conn)) *wireBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &wireBackend{
		ln:       ln,
		requests: make(chan *wireRequest, 1024),
		done:     make(chan struct{}),
		conns:    make(map[net.Conn]struct{}),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				c.Close()
				continue
			}
			s.conns[c] = struct{}{}
			s.wg.Add(1)
			s.mu.Unlock()
			go func() {
				defer s.wg.Done()
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
				}()
				c.SetDeadline(time.Now().Add(wireWait))
				handle(s, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		close(s.done)
		s.closeConns()
		s.wg.Wait()
	})
	return s
}

func (s *wireBackend) addr() string { return s.ln.Addr().String() }

// closeConns closes every connection accepted so far, and every later one.
func (s *wireBackend) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
}

func (s *wireBackend) record(r *wireRequest) {
	select {
	case s.requests <- r:
	case <-s.done:
	}
}

// nextRequest waits for the next request the backend recorded.
func (s *wireBackend) nextRequest(t testing.TB) *wireRequest {
	t.Helper()
	select {
	case r := <-s.requests:
		return r
	case <-time.After(wireWait):
		t.Fatalf("the backend received no request within %v", wireWait)
		return nil
	}
}

// startProxyTo starts a proxy in front of raw backends. At cleanup, the backends' connections are
// closed first, so that a request stuck on a backend cannot hold up the proxy's Shutdown.
func startProxyTo(t testing.TB, cfg Config, servers ...*wireBackend) (*Proxy, string) {
	t.Helper()
	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, s.addr())
	}
	p, addr := startProxy(t, cfg, addrs...)
	t.Cleanup(func() {
		for _, s := range servers {
			s.closeConns()
		}
	})
	return p, addr
}

// field is one header field line as it was on the wire: value without surrounding whitespace.
type wireField struct{ name, value string }

// wireRequest is a request as a raw backend received it.
type wireRequest struct {
	line    string // the request line, without CRLF
	head    string // the whole head byte for byte, its final empty line included
	fields  []wireField
	chunked bool
	bodyLen int64
	bodySum [sha256.Size]byte
	body    []byte // the first wireBodyKeepMax bytes of the body
	trailer string // the trailer lines byte for byte, without the final empty line
}

const wireBodyKeepMax = 64 << 10

func (r *wireRequest) values(name string) []string { return wireValues(r.fields, name) }

func wireValues(fs []wireField, name string) []string {
	var vs []string
	for _, f := range fs {
		if strings.EqualFold(f.name, name) {
			vs = append(vs, f.value)
		}
	}
	return vs
}

// readWireHead reads a message head byte for byte: its first line (without CRLF), the whole head, and
// its fields. Every line must end in CRLF.
func readWireHead(br *bufio.Reader) (first, head string, fields []wireField, err error) {
	var b strings.Builder
	for n := 0; ; n++ {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return "", b.String(), nil, err
		}
		if !strings.HasSuffix(line, "\r\n") {
			return "", b.String(), nil, fmt.Errorf("line %q does not end in CRLF", line)
		}
		line = line[:len(line)-2]
		if n == 0 {
			first = line
			continue
		}
		if line == "" {
			return first, b.String(), fields, nil
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return "", b.String(), nil, fmt.Errorf("field line %q has no colon", line)
		}
		fields = append(fields, wireField{name, strings.Trim(value, " \t")})
	}
}

// readWireBody reads the body of a request whose head has fields into w, and returns its trailer lines.
func readWireBody(br *bufio.Reader, fields []wireField, w io.Writer) (chunked bool, trailer string, err error) {
	for _, te := range wireValues(fields, "Transfer-Encoding") {
		if strings.Contains(strings.ToLower(te), "chunked") {
			chunked = true
		}
	}
	if !chunked {
		cls := wireValues(fields, "Content-Length")
		if len(cls) == 0 {
			return false, "", nil
		}
		n, err := strconv.ParseInt(cls[0], 10, 64)
		if err != nil {
			return false, "", fmt.Errorf("Content-Length %q: %w", cls[0], err)
		}
		_, err = io.CopyN(w, br, n)
		return false, "", err
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return true, "", err
		}
		if !strings.HasSuffix(line, "\r\n") {
			return true, "", fmt.Errorf("chunk size line %q does not end in CRLF", line)
		}
		size, _, _ := strings.Cut(line[:len(line)-2], ";")
		n, err := strconv.ParseInt(size, 16, 64)
		if err != nil {
			return true, "", fmt.Errorf("chunk size line %q: %w", line, err)
		}
		if n == 0 {
			var tr strings.Builder
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return true, "", err
				}
				if line == "\r\n" {
					return true, tr.String(), nil
				}
				tr.WriteString(line)
			}
		}
		if _, err := io.CopyN(w, br, n); err != nil {
			return true, "", err
		}
		var crlf [2]byte
		if _, err := io.ReadFull(br, crlf[:]); err != nil {
			return true, "", err
		}
		if string(crlf[:]) != "\r\n" {
			return true, "", fmt.Errorf("chunk data followed by %q, not CRLF", crlf)
		}
	}
}

// readWireRequest reads one whole request as a backend sees it.
func readWireRequest(br *bufio.Reader) (*wireRequest, error) {
	line, head, fields, err := readWireHead(br)
	if err != nil {
		return nil, err
	}
	r := &wireRequest{line: line, head: head, fields: fields}
	h := sha256.New()
	keep := &prefixBuffer{max: wireBodyKeepMax}
	cw := &byteCounter{}
	r.chunked, r.trailer, err = readWireBody(br, fields, io.MultiWriter(h, keep, cw))
	if err != nil {
		return nil, err
	}
	r.bodyLen, r.body = cw.n, keep.b
	h.Sum(r.bodySum[:0])
	return r, nil
}

type prefixBuffer struct {
	b   []byte
	max int
}

func (l *prefixBuffer) Write(p []byte) (int, error) {
	if room := l.max - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

type byteCounter struct{ n int64 }

func (c *byteCounter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// wireResponder answers a request a recorder received: the bytes to write, and whether to close the
// connection after them.
type wireResponder func(r *wireRequest) (resp string, closeAfter bool)

// echoTargetResponse answers 200 with "METHOD target" as the body.
func echoTargetResponse(r *wireRequest) (string, bool) {
	method, rest, _ := strings.Cut(r.line, " ")
	target, _, _ := strings.Cut(rest, " ")
	return plainResponse(200, method+" "+target), false
}

func plainResponse(status int, body string) string {
	return fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
}

// newRecordingBackend starts a keep-alive raw backend that records every request and answers it with
// respond (echoTargetResponse when nil).
func newRecordingBackend(t testing.TB, respond wireResponder) *wireBackend {
	t.Helper()
	if respond == nil {
		respond = echoTargetResponse
	}
	return newWireBackend(t, func(s *wireBackend, c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := readWireRequest(br)
			if err != nil {
				return
			}
			s.record(r)
			resp, closeAfter := respond(r)
			if _, err := io.WriteString(c, resp); err != nil || closeAfter {
				return
			}
		}
	})
}

// ---------------------------------------------------------------------------------------------
// Raw clients

type wireClient struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dialWire(t testing.TB, addr string) *wireClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(wireWait))
	t.Cleanup(func() { nc.Close() })
	return &wireClient{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *wireClient) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("client write: %v", err)
	}
}

// response reads one response to a request of method, and its whole body.
func (c *wireClient) response(method string) (*http.Response, string) {
	c.t.Helper()
	res, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("reading the response to %s: %v", method, err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatalf("reading the body of the response to %s (status %d, header %v; body so far %q): %v",
			method, res.StatusCode, res.Header, body, err)
	}
	return res, string(body)
}

// head reads one response head byte for byte.
func (c *wireClient) head() (statusLine, head string, fields []wireField) {
	c.t.Helper()
	statusLine, head, fields, err := readWireHead(c.br)
	if err != nil {
		c.t.Fatalf("reading a response head (got %q): %v", head, err)
	}
	return statusLine, head, fields
}

// get sends a GET on the connection and checks that it is answered 200 with want.
func (c *wireClient) get(target, want string) {
	c.t.Helper()
	c.write("GET " + target + " HTTP/1.1\r\nHost: example.test\r\n\r\n")
	res, body := c.response("GET")
	if res.StatusCode != 200 || body != want {
		c.t.Fatalf("GET %s on the same connection: got %d %q, want 200 %q", target, res.StatusCode, body, want)
	}
}

// expectClosed checks that the proxy closed the connection: the next read ends (EOF or reset)
// without data.
func (c *wireClient) expectClosed() {
	c.t.Helper()
	b, err := c.br.ReadByte()
	switch {
	case err == nil:
		rest, _ := c.br.Peek(c.br.Buffered())
		c.t.Fatalf("connection still open: read %q", append([]byte{b}, rest...))
	case err == io.EOF, errors.Is(err, syscall.ECONNRESET):
	default:
		c.t.Fatalf("connection not closed: %v", err)
	}
}

// randomBody is n deterministic, incompressible bytes.
func randomBody(n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16)}).Read(b)
	return b
}

// encodeChunked frames body as a chunked body of chunks of varying sizes, with trailer lines (each
// ending in CRLF) after the last chunk.
func encodeChunked(body []byte, trailer string) string {
	var b strings.Builder
	sizes := []int{1, 7, 1000, 16 << 10, 100 << 10, 3}
	for i := 0; len(body) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(body))
		fmt.Fprintf(&b, "%x\r\n", n)
		b.Write(body[:n])
		b.WriteString("\r\n")
		body = body[n:]
	}
	b.WriteString("0\r\n" + trailer + "\r\n")
	return b.String()
}

func sha256Hex(b []byte) string { s := sha256.Sum256(b); return fmt.Sprintf("%x", s) }

// waitOn waits for ch to be closed or to deliver, or fails with what did not happen.
func waitOn[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s: nothing within %v", what, d)
		var zero T
		return zero
	}
}

// ---------------------------------------------------------------------------------------------
// Request bodies

// TestRequestBodyIntact sends Content-Length and chunked POST and PUT bodies through the proxy and
// compares what the backend read, by length and SHA-256, and how the backend saw it framed.
func TestRequestBodyIntact(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "len=%d sha256=%x cl=%d te=%v", n, h.Sum(nil), r.ContentLength, r.TransferEncoding)
	}))
	defer be.Close()
	_, addr := startProxy(t, Config{}, be.Listener.Addr().String())

	for _, size := range []int{0, 1, 16 << 10, 5 << 20} {
		for _, chunked := range []bool{false, true} {
			for _, method := range []string{"POST", "PUT"} {
				framing := "content-length"
				if chunked {
					framing = "chunked"
				}
				t.Run(fmt.Sprintf("%s/%s/%d", method, framing, size), func(t *testing.T) {
					body := randomBody(size)
					var req string
					want := fmt.Sprintf("len=%d sha256=%s cl=%d te=[]", size, sha256Hex(body), size)
					if chunked {
						req = method + " /upload HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n" + encodeChunked(body, "")
						want = fmt.Sprintf("len=%d sha256=%s cl=-1 te=[chunked]", size, sha256Hex(body))
					} else {
						req = fmt.Sprintf("%s /upload HTTP/1.1\r\nHost: example.test\r\nContent-Length: %d\r\n\r\n%s", method, size, body)
					}
					c := dialWire(t, addr)
					wrote := make(chan error, 1)
					go func() { _, err := io.WriteString(c.nc, req); wrote <- err }()
					res, got := c.response(method)
					if err := waitOn(t, wrote, wireWait, "client write"); err != nil {
						t.Fatalf("client write: %v", err)
					}
					if res.StatusCode != 200 || got != want {
						t.Fatalf("backend read %d %q\nwant %q", res.StatusCode, got, want)
					}
				})
			}
		}
	}
}

// TestRequestChunkedTrailersForwarded: the trailer section of a chunked request reaches the backend
// byte for byte, after the body.
func TestRequestChunkedTrailersForwarded(t *testing.T) {
	be := newRecordingBackend(t, nil)
	_, addr := startProxyTo(t, Config{}, be)
	c := dialWire(t, addr)
	body := []byte("hello, trailers")
	trailer := "X-Checksum: abc123\r\nX-Count: 2\r\n"
	c.write("POST /t HTTP/1.1\r\nHost: example.test\r\nTrailer: X-Checksum, X-Count\r\nTransfer-Encoding: chunked\r\n\r\n" + encodeChunked(body, trailer))
	if res, got := c.response("POST"); res.StatusCode != 200 {
		t.Fatalf("got %d %q", res.StatusCode, got)
	}
	r := be.nextRequest(t)
	if !r.chunked || string(r.body) != string(body) {
		t.Errorf("backend got chunked=%v body %q, want chunked %q", r.chunked, r.body, body)
	}
	if r.trailer != trailer {
		t.Errorf("backend got trailer section %q, want %q", r.trailer, trailer)
	}
	if got := r.values("Trailer"); !slices.Equal(got, []string{"X-Checksum, X-Count"}) {
		t.Errorf("backend got Trailer fields %q", got)
	}
}

// TestRequestBodyStreamed: a large request body is streamed, not buffered whole. The client sends
// half of it and holds back the rest until the backend has received bytes of the body.
func TestRequestBodyStreamed(t *testing.T) {
	const size = 1 << 20
	for _, method := range []string{"POST", "PUT"} {
		for _, chunked := range []bool{false, true} {
			name := method + "/content-length"
			if chunked {
				name = method + "/chunked"
			}
			t.Run(name, func(t *testing.T) {
				gotBody := make(chan struct{})
				be := newWireBackend(t, func(s *wireBackend, c net.Conn) {
					br := bufio.NewReader(c)
					_, _, fields, err := readWireHead(br)
					if err != nil {
						return
					}
					var once sync.Once
					h := sha256.New()
					cw := &byteCounter{}
					signal := onWrite(func(p []byte) (int, error) {
						once.Do(func() { close(gotBody) })
						return len(p), nil
					})
					if _, _, err := readWireBody(br, fields, io.MultiWriter(h, cw, signal)); err != nil {
						return
					}
					io.WriteString(c, plainResponse(200, fmt.Sprintf("len=%d sha256=%x", cw.n, h.Sum(nil))))
				})
				_, addr := startProxyTo(t, Config{}, be)
				body := randomBody(size)
				var first, second string
				if chunked {
					first = fmt.Sprintf("%s /big HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s", method, size, body[:size/2])
					second = string(body[size/2:]) + "\r\n0\r\n\r\n"
				} else {
					first = fmt.Sprintf("%s /big HTTP/1.1\r\nHost: example.test\r\nContent-Length: %d\r\n\r\n%s", method, size, body[:size/2])
					second = string(body[size/2:])
				}
				c := dialWire(t, addr)
				c.write(first)
				waitOn(t, gotBody, wireWait, "the backend receiving the first half of the body while the client holds back the rest (the proxy buffers the body instead of streaming it)")
				c.write(second)
				res, got := c.response(method)
				if want := fmt.Sprintf("len=%d sha256=%s", size, sha256Hex(body)); res.StatusCode != 200 || got != want {
					t.Fatalf("got %d %q, want 200 %q", res.StatusCode, got, want)
				}
			})
		}
	}
}

type onWrite func(p []byte) (int, error)

func (f onWrite) Write(p []byte) (int, error) { return f(p) }

// TestStreamedBodyDoesNotOverwriteRequestMethod pins a bug: while the rest of a streamed request
// body is read, it is read into the buffer that the parsed request head (method, target) still
// points into. A POST whose body bytes land at the start of that buffer as "HEAD" made the proxy
// take the response to be the answer to a HEAD, and drop its body.
func TestStreamedBodyDoesNotOverwriteRequestMethod(t *testing.T) {
	gotFirst := make(chan struct{})
	be := newWireBackend(t, func(s *wireBackend, c net.Conn) {
		br := bufio.NewReader(c)
		_, _, fields, err := readWireHead(br)
		if err != nil {
			return
		}
		var n int64
		counter := onWrite(func(p []byte) (int, error) {
			n += int64(len(p))
			if n == 1000 {
				close(gotFirst)
			}
			return len(p), nil
		})
		if _, _, err := readWireBody(br, fields, counter); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
	})
	_, addr := startProxyTo(t, Config{}, be)
	c := dialWire(t, addr)
	c.write("POST /upload HTTP/1.1\r\nHost: example.test\r\nContent-Length: 2000\r\n\r\n" + strings.Repeat("x", 1000))
	waitOn(t, gotFirst, wireWait, "the backend receiving the first 1000 bytes of the body")
	// The proxy has forwarded everything it read: the rest lands at the start of its read buffer.
	c.write("HEAD" + strings.Repeat("y", 996))
	c.nc.SetReadDeadline(time.Now().Add(promptWait))
	res, err := http.ReadResponse(c.br, &http.Request{Method: "POST"})
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil || string(body) != "hello" {
		t.Fatalf("POST answered %d with Content-Length %d: body %q, %v; want the backend's body \"hello\"",
			res.StatusCode, res.ContentLength, body, err)
	}
}

// TestAbandonedBodyClosesBackendPromptly pins a bug: when the client goes away in the middle of a
// streamed request body, the proxy kept the backend connection (holding half a request) open until
// BackendTimeout, instead of closing it at once.
func TestAbandonedBodyClosesBackendPromptly(t *testing.T) {
	gotBody := make(chan struct{})
	backendDone := make(chan error, 1)
	be := newWireBackend(t, func(s *wireBackend, c net.Conn) {
		br := bufio.NewReader(c)
		_, _, fields, err := readWireHead(br)
		if err != nil {
			backendDone <- err
			return
		}
		var once sync.Once
		signal := onWrite(func(p []byte) (int, error) {
			once.Do(func() { close(gotBody) })
			return len(p), nil
		})
		_, _, err = readWireBody(br, fields, signal)
		backendDone <- err
	})
	_, addr := startProxyTo(t, Config{BackendTimeout: 60 * time.Second}, be)
	c := dialWire(t, addr)
	c.write("POST /upload HTTP/1.1\r\nHost: example.test\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("x", 1000))
	waitOn(t, gotBody, wireWait, "the backend receiving body bytes")
	c.nc.Close()
	select {
	case err := <-backendDone:
		if err == nil {
			t.Fatal("the backend read a whole body, but the client sent only 1000 of 100000 bytes")
		}
	case <-time.After(promptWait):
		t.Fatalf("the client closed after 1000 of 100000 body bytes; %v later the backend connection is still open (the proxy waits for BackendTimeout)", promptWait)
	}
}

// TestMalformedChunkMidStreamAnsweredPromptly pins a bug: a malformed chunk that arrives after the
// request head went to the backend was answered 400 only after BackendTimeout, because the proxy
// kept waiting for the backend's response to a request it had given up on.
func TestMalformedChunkMidStreamAnsweredPromptly(t *testing.T) {
	gotChunk := make(chan struct{})
	backendDone := make(chan error, 1)
	be := newWireBackend(t, func(s *wireBackend, c net.Conn) {
		br := bufio.NewReader(c)
		_, _, fields, err := readWireHead(br)
		if err != nil {
			backendDone <- err
			return
		}
		var once sync.Once
		signal := onWrite(func(p []byte) (int, error) {
			once.Do(func() { close(gotChunk) })
			return len(p), nil
		})
		_, _, err = readWireBody(br, fields, signal)
		backendDone <- err
	})
	_, addr := startProxyTo(t, Config{BackendTimeout: 60 * time.Second}, be)
	c := dialWire(t, addr)
	c.write("POST /upload HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	waitOn(t, gotChunk, wireWait, "the backend receiving the first chunk")
	c.write("zz\r\nbad\r\n0\r\n\r\n")
	c.nc.SetReadDeadline(time.Now().Add(promptWait))
	res, err := http.ReadResponse(c.br, &http.Request{Method: "POST"})
	if err != nil {
		t.Fatalf("a malformed chunk size after the first chunk: no response within %v: %v", promptWait, err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 400 || !strings.Contains(string(body), "chunk size") {
		t.Errorf("got %d %q, want 400 naming the chunk size", res.StatusCode, body)
	}
	select {
	case err := <-backendDone:
		if err == nil {
			t.Error("the backend read a whole body, but the client's was malformed")
		}
	case <-time.After(promptWait):
		t.Errorf("the backend connection holding half a request is still open %v after the 400", promptWait)
	}
}

// ---------------------------------------------------------------------------------------------
// Responses

// TestResponseFraming: each way a backend frames a response reaches the client framed correctly for
// its HTTP version, and the client connection stays usable exactly when it should.
func TestResponseFraming(t *testing.T) {
	// Each response is chosen by the request target; /next is the follow-up request that shows the
	// connection is still in step.
	responses := map[string]struct {
		resp       string
		closeAfter bool
	}{
		"/length":  {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false},
		"/chunked": {"HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n", false},
		"/close":   {"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nread until close", true},
		"/close10": {"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nread until close", true},
		"/head":    {"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", false},
		"/204":     {"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", false},
		"/304":     {"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n", false},
		"/next":    {"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext", false},
	}
	be := newRecordingBackend(t, func(r *wireRequest) (string, bool) {
		_, rest, _ := strings.Cut(r.line, " ")
		target, _, _ := strings.Cut(rest, " ")
		resp, ok := responses[target]
		if !ok {
			return plainResponse(404, "no such test target"), false
		}
		return resp.resp, resp.closeAfter
	})
	_, addr := startProxyTo(t, Config{}, be)

	t.Run("content-length", func(t *testing.T) {
		c := dialWire(t, addr)
		c.write("GET /length HTTP/1.1\r\nHost: example.test\r\n\r\n")
		res, body := c.response("GET")
		if res.ContentLength != 5 || body != "hello" || res.TransferEncoding != nil || res.Close {
			t.Fatalf("got Content-Length %d, TE %v, close %v, body %q", res.ContentLength, res.TransferEncoding, res.Close, body)
		}
		c.get("/next", "next")
	})
	t.Run("chunked with trailers to HTTP/1.1", func(t *testing.T) {
		c := dialWire(t, addr)
		c.write("GET /chunked HTTP/1.1\r\nHost: example.test\r\n\r\n")
		res, body := c.response("GET")
		if !slices.Equal(res.TransferEncoding, []string{"chunked"}) || body != "hello world" {
			t.Fatalf("got TE %v, body %q", res.TransferEncoding, body)
		}
		if got := res.Trailer.Get("X-Sum"); got != "42" {
			t.Errorf("trailer X-Sum = %q, want 42 (trailers %v)", got, res.Trailer)
		}
		c.get("/next", "next")
	})
	t.Run("read until close to HTTP/1.1 is re-framed as chunked", func(t *testing.T) {
		for _, target := range []string{"/close", "/close10"} {
			c := dialWire(t, addr)
			c.write("GET " + target + " HTTP/1.1\r\nHost: example.test\r\n\r\n")
			res, body := c.response("GET")
			if !slices.Equal(res.TransferEncoding, []string{"chunked"}) || body != "read until close" || res.Close {
				t.Fatalf("%s: got TE %v, close %v, body %q; want chunked and keep-alive", target, res.TransferEncoding, res.Close, body)
			}
			c.get("/next", "next")
		}
	})
	t.Run("read until close to HTTP/1.0 is raw, then close", func(t *testing.T) {
		for _, ka := range []string{"", "Connection: keep-alive\r\n"} {
			c := dialWire(t, addr)
			c.write("GET /close HTTP/1.0\r\nHost: example.test\r\n" + ka + "\r\n")
			_, head, fields := c.head()
			if wireValues(fields, "Transfer-Encoding") != nil || !slices.Equal(wireValues(fields, "Connection"), []string{"close"}) {
				t.Fatalf("request with %q: head %q: want no Transfer-Encoding and Connection: close", ka, head)
			}
			rest, err := io.ReadAll(c.br)
			if err != nil || string(rest) != "read until close" {
				t.Fatalf("body %q, %v; want the raw body, then EOF", rest, err)
			}
		}
	})
	t.Run("chunked to HTTP/1.0 is raw, then close", func(t *testing.T) {
		c := dialWire(t, addr)
		c.write("GET /chunked HTTP/1.0\r\nHost: example.test\r\nConnection: keep-alive\r\n\r\n")
		_, head, fields := c.head()
		if wireValues(fields, "Transfer-Encoding") != nil || !slices.Equal(wireValues(fields, "Connection"), []string{"close"}) {
			t.Fatalf("head %q: want no Transfer-Encoding and Connection: close", head)
		}
		rest, err := io.ReadAll(c.br)
		if err != nil || string(rest) != "hello world" {
			t.Fatalf("body %q, %v; want \"hello world\" raw, then EOF", rest, err)
		}
	})
	t.Run("HEAD with Content-Length has no body", func(t *testing.T) {
		c := dialWire(t, addr)
		c.write("HEAD /head HTTP/1.1\r\nHost: example.test\r\n\r\n")
		_, head, fields := c.head()
		if !slices.Equal(wireValues(fields, "Content-Length"), []string{"1234"}) {
			t.Fatalf("head %q: want Content-Length: 1234", head)
		}
		c.get("/next", "next")
	})
	for _, st := range []string{"204", "304"} {
		t.Run(st+" has no body", func(t *testing.T) {
			c := dialWire(t, addr)
			c.write("GET /" + st + " HTTP/1.1\r\nHost: example.test\r\n\r\n")
			statusLine, head, _ := c.head()
			if !strings.HasPrefix(statusLine, "HTTP/1.1 "+st+" ") {
				t.Fatalf("head %q", head)
			}
			c.get("/next", "next")
		})
	}
	for name, req := range map[string]string{
		"HTTP/1.1 with Connection: close closes": "GET /length HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
		"HTTP/1.0 without keep-alive closes":     "GET /length HTTP/1.0\r\nHost: example.test\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c := dialWire(t, addr)
			c.write(req)
			res, body := c.response("GET")
			if body != "hello" || !res.Close {
				t.Fatalf("got close %v, body %q; want Connection: close", res.Close, body)
			}
			c.expectClosed()
		})
	}
	t.Run("HTTP/1.0 keep-alive", func(t *testing.T) {
		c := dialWire(t, addr)
		for range 3 {
			c.write("GET /length HTTP/1.0\r\nHost: example.test\r\nConnection: keep-alive\r\n\r\n")
			_, head, fields := c.head()
			if !slices.Equal(wireValues(fields, "Connection"), []string{"keep-alive"}) ||
				!slices.Equal(wireValues(fields, "Content-Length"), []string{"5"}) {
				t.Fatalf("head %q: want Connection: keep-alive and Content-Length: 5", head)
			}
			body := make([]byte, 5)
			if _, err := io.ReadFull(c.br, body); err != nil || string(body) != "hello" {
				t.Fatalf("body %q, %v", body, err)
			}
		}
	})
}

// TestInterimResponses: a 1xx before the final response reaches an HTTP/1.1 client and not an
// HTTP/1.0 one.
func TestInterimResponses(t *testing.T) {
	be := newRecordingBackend(t, func(r *wireRequest) (string, bool) {
		return "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	_, addr := startProxyTo(t, Config{}, be)

	t.Run("HTTP/1.1 client gets the 103", func(t *testing.T) {
		c := dialWire(t, addr)
		c.write("GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
		res, _ := c.response("GET")
		if res.StatusCode != 103 || res.Header.Get("Link") != "</style.css>; rel=preload" {
			t.Fatalf("first response %d %v, want 103 with the Link field", res.StatusCode, res.Header)
		}
		res, body := c.response("GET")
		if res.StatusCode != 200 || body != "ok" {
			t.Fatalf("final response %d %q", res.StatusCode, body)
		}
	})
	t.Run("HTTP/1.0 client gets no 1xx", func(t *testing.T) {
		c := dialWire(t, addr)
		c.write("GET / HTTP/1.0\r\nHost: example.test\r\n\r\n")
		statusLine, head, fields := c.head()
		if !strings.HasPrefix(statusLine, "HTTP/1.1 200 ") || !slices.Equal(wireValues(fields, "Content-Length"), []string{"2"}) {
			t.Fatalf("first head %q, want the final 200 with Content-Length: 2", head)
		}
		rest, err := io.ReadAll(c.br)
		if err != nil || string(rest) != "ok" {
			t.Fatalf("body %q, %v; want \"ok\", then close", rest, err)
		}
	})
}

// TestExpectContinue: the client sends only the head, gets the backend's 100 Continue through the
// proxy, and only then sends the body.
func TestExpectContinue(t *testing.T) {
	sawExpect := make(chan []string, 1)
	be := newWireBackend(t, func(s *wireBackend, c net.Conn) {
		br := bufio.NewReader(c)
		for {
			_, _, fields, err := readWireHead(br)
			if err != nil {
				return
			}
			sawExpect <- wireValues(fields, "Expect")
			if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
				return
			}
			var body bytes.Buffer
			if _, _, err := readWireBody(br, fields, &body); err != nil {
				return
			}
			if _, err := io.WriteString(c, plainResponse(201, "got "+body.String())); err != nil {
				return
			}
		}
	})
	_, addr := startProxyTo(t, Config{}, be)
	for _, method := range []string{"POST", "PUT"} {
		t.Run(method, func(t *testing.T) {
			c := dialWire(t, addr)
			c.write(method + " /e HTTP/1.1\r\nHost: example.test\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
			if got := waitOn(t, sawExpect, wireWait, "the backend receiving the head before the body"); !slices.Equal(got, []string{"100-continue"}) {
				t.Errorf("backend saw Expect %q", got)
			}
			res, _ := c.response(method)
			if res.StatusCode != 100 {
				t.Fatalf("first response %d, want 100 Continue", res.StatusCode)
			}
			c.write("hello world")
			res, body := c.response(method)
			if res.StatusCode != 201 || body != "got hello world" {
				t.Fatalf("final response %d %q", res.StatusCode, body)
			}
		})
	}
}

// ---------------------------------------------------------------------------------------------
// Upgrade

// echoUpgradeBackend answers an Upgrade request 101, sends greeting in the same write, then echoes
// until the client's EOF, or until it reads "bye", when it closes. It reports on eof when it read
// the client's EOF.
func echoUpgradeBackend(t testing.TB, greeting string, heads chan<- *wireRequest, eof chan<- struct{}) *wireBackend {
	return newWireBackend(t, func(s *wireBackend, c net.Conn) {
		br := bufio.NewReader(c)
		r, err := readWireRequest(br)
		if err != nil {
			return
		}
		heads <- r
		if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"+greeting); err != nil {
			return
		}
		buf := make([]byte, 32<<10)
		for {
			n, err := br.Read(buf)
			if n > 0 {
				if bytes.HasSuffix(buf[:n], []byte("bye")) {
					return
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
			if err == io.EOF {
				close(eof)
				return
			}
			if err != nil {
				return
			}
		}
	})
}

const wsUpgradeRequest = "GET /chat HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// startWireTunnel sends the upgrade request and checks both heads: what the backend got, and the 101.
func startWireTunnel(t *testing.T, addr string, heads <-chan *wireRequest) *wireClient {
	t.Helper()
	c := dialWire(t, addr)
	c.write(wsUpgradeRequest)
	r := waitOn(t, heads, wireWait, "the backend receiving the upgrade request")
	if !slices.Equal(r.values("Upgrade"), []string{"websocket"}) || !slices.ContainsFunc(r.values("Connection"), func(v string) bool {
		return strings.EqualFold(v, "upgrade")
	}) || !slices.Equal(r.values("Sec-WebSocket-Key"), []string{"dGhlIHNhbXBsZSBub25jZQ=="}) {
		t.Fatalf("backend got head %q: want Upgrade: websocket, Connection: upgrade and the key", r.head)
	}
	statusLine, head, fields := c.head()
	if !strings.HasPrefix(statusLine, "HTTP/1.1 101 ") || !slices.Equal(wireValues(fields, "Upgrade"), []string{"websocket"}) ||
		!slices.ContainsFunc(wireValues(fields, "Connection"), func(v string) bool { return strings.EqualFold(v, "upgrade") }) ||
		!slices.Equal(wireValues(fields, "Sec-WebSocket-Accept"), []string{"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}) {
		t.Fatalf("client got head %q: want 101 with Upgrade, Connection and the accept key", head)
	}
	return c
}

func (c *wireClient) readExactly(want string) {
	c.t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c.br, got); err != nil || string(got) != want {
		c.t.Fatalf("read %d bytes %.40q..., %v; want %d bytes %.40q...", len(got), got, err, len(want), want)
	}
}

// expectShutdownWithin checks that the proxy has no connection left that would keep Shutdown waiting.
func expectShutdownWithin(t *testing.T, p *Proxy, d time.Duration, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("%s: the proxy still holds the connection %v later: Shutdown: %v", what, d, err)
	}
}

func TestUpgradeTunnel(t *testing.T) {
	t.Run("bytes flow both ways", func(t *testing.T) {
		heads, eof := make(chan *wireRequest, 1), make(chan struct{})
		be := echoUpgradeBackend(t, "hello from the backend", heads, eof)
		_, addr := startProxyTo(t, Config{}, be)
		c := startWireTunnel(t, addr, heads)
		c.readExactly("hello from the backend")
		for i := range 5 {
			msg := fmt.Sprintf("message %d", i)
			c.write(msg)
			c.readExactly(msg)
		}
		big := string(randomBody(256 << 10))
		wrote := make(chan error, 1)
		go func() { _, err := io.WriteString(c.nc, big); wrote <- err }()
		c.readExactly(big)
		if err := waitOn(t, wrote, wireWait, "client write"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("client closing ends it", func(t *testing.T) {
		heads, eof := make(chan *wireRequest, 1), make(chan struct{})
		be := echoUpgradeBackend(t, "", heads, eof)
		p, addr := startProxyTo(t, Config{}, be)
		c := startWireTunnel(t, addr, heads)
		c.write("ping")
		c.readExactly("ping")
		c.nc.Close()
		waitOn(t, eof, wireWait, "the backend reading EOF after the client closed")
		expectShutdownWithin(t, p, promptWait, "the client closed its tunnel and the backend closed after it")
	})
	t.Run("backend closing ends it", func(t *testing.T) {
		heads, eof := make(chan *wireRequest, 1), make(chan struct{})
		be := echoUpgradeBackend(t, "", heads, eof)
		p, addr := startProxyTo(t, Config{}, be)
		c := startWireTunnel(t, addr, heads)
		c.write("ping")
		c.readExactly("ping")
		c.write("bye") // the backend closes its socket
		if b, err := c.br.ReadByte(); err != io.EOF {
			t.Fatalf("after the backend closed, the client read %q, %v; want EOF", b, err)
		}
		// The client does not close: the proxy must end the tunnel on its own.
		expectShutdownWithin(t, p, promptWait, "the backend closed the tunnel")
	})
}

// TestUpgradeOnlyAllowedProtocols: an Upgrade offer reaches the backend only for the protocols
// Config.UpgradeProtocols allows (websocket by default); an h2c offer is dropped and the request is
// answered as an ordinary one, and a backend that switches to a protocol nobody allowed gets 502.
func TestUpgradeOnlyAllowedProtocols(t *testing.T) {
	for _, tc := range []struct {
		name    string
		allowed []string
		offer   string
		upgrade []string // what the backend gets
	}{
		{"h2c by default", nil, "h2c", nil},
		{"h2c and websocket by default", nil, "h2c, WebSocket/13", []string{"WebSocket/13"}},
		{"h2c allowed", []string{"H2C"}, "h2c", []string{"h2c"}},
		{"websocket when only h2c is allowed", []string{"h2c"}, "websocket", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newRecordingBackend(t, nil)
			_, addr := startProxyTo(t, Config{UpgradeProtocols: tc.allowed}, be)
			c := dialWire(t, addr)
			c.write("GET /u HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: " + tc.offer +
				"\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
			if res, body := c.response("GET"); res.StatusCode != 200 {
				t.Fatalf("got %d %q", res.StatusCode, body)
			}
			r := be.nextRequest(t)
			if got := r.values("Upgrade"); !slices.Equal(got, tc.upgrade) {
				t.Errorf("backend Upgrade %q, want %q", got, tc.upgrade)
			}
			if got := r.values("HTTP2-Settings"); got != nil {
				t.Errorf("backend HTTP2-Settings %q: a field Connection names must not pass", got)
			}
			upgrading := slices.ContainsFunc(r.values("Connection"), func(v string) bool { return strings.EqualFold(v, "upgrade") })
			if upgrading != (tc.upgrade != nil) {
				t.Errorf("backend Connection %q, want upgrade only with an Upgrade", r.values("Connection"))
			}
		})
	}
	t.Run("a switch to another protocol is 502", func(t *testing.T) {
		be := newWireBackend(t, func(s *wireBackend, c net.Conn) {
			if _, err := readWireRequest(bufio.NewReader(c)); err == nil {
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
			}
		})
		_, addr := startProxyTo(t, Config{}, be)
		c := dialWire(t, addr)
		c.write(wsUpgradeRequest)
		if res, body := c.response("GET"); res.StatusCode != 502 {
			t.Fatalf("got %d %q, want 502", res.StatusCode, body)
		}
	})
}

// ---------------------------------------------------------------------------------------------
// Keep-alive

// TestKeepAliveReusesBackendConnection: several requests on one client connection go over one
// backend connection.
func TestKeepAliveReusesBackendConnection(t *testing.T) {
	be := newRecordingBackend(t, nil)
	_, addr := startProxyTo(t, Config{}, be)
	c := dialWire(t, addr)
	for i := range 5 {
		target := fmt.Sprintf("/r%d", i)
		c.get(target, "GET "+target)
	}
	c.write("POST /p HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\nabc")
	if res, body := c.response("POST"); body != "POST /p" {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	c.get("/last", "GET /last")
	if n := be.accepts.Load(); n != 1 {
		t.Fatalf("7 requests on one client connection took %d backend connections, want 1", n)
	}
}

// TestPipelinedRequestsAnsweredInOrder: requests written in one write are answered in order.
func TestPipelinedRequestsAnsweredInOrder(t *testing.T) {
	be := newRecordingBackend(t, nil)
	_, addr := startProxyTo(t, Config{}, be)
	for _, tc := range []struct {
		name string
		reqs []string
		want []string
	}{
		{"three GETs", []string{
			"GET /1 HTTP/1.1\r\nHost: example.test\r\n\r\n",
			"GET /2 HTTP/1.1\r\nHost: example.test\r\n\r\n",
			"GET /3 HTTP/1.1\r\nHost: example.test\r\n\r\n",
		}, []string{"GET /1", "GET /2", "GET /3"}},
		{"bodies in between", []string{
			"GET /1 HTTP/1.1\r\nHost: example.test\r\n\r\n",
			"POST /2 HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\nabc",
			"PUT /3 HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n",
		}, []string{"GET /1", "POST /2", "PUT /3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialWire(t, addr)
			c.write(strings.Join(tc.reqs, ""))
			for i, want := range tc.want {
				method, _, _ := strings.Cut(want, " ")
				if res, body := c.response(method); res.StatusCode != 200 || body != want {
					t.Fatalf("response %d: got %d %q, want 200 %q", i+1, res.StatusCode, body, want)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------------------------
// Headers

// hopByHopRequestFields are the request fields that must not reach the backend, however spelled.
var hopByHopNames = []string{"Connection", "Keep-Alive", "Proxy-Connection", "TE", "Upgrade"}

// TestHopByHopRequestFieldsRemoved: the hop-by-hop fields of a request, and every field its
// Connection header names (in any case), do not reach the backend; end-to-end fields do.
func TestHopByHopRequestFieldsRemoved(t *testing.T) {
	be := newRecordingBackend(t, nil)
	_, addr := startProxyTo(t, Config{}, be)
	longName := "X-" + strings.Repeat("Long-Name-", 10) // 102 bytes: past any small fast path
	for _, tc := range []struct {
		name    string
		req     string
		dropped []string // besides hopByHopNames
		kept    []wireField
	}{
		{
			name: "the listed hop-by-hop fields",
			req: "GET /h HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n" +
				"Proxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Keep: 1\r\n\r\n",
			kept: []wireField{{"X-Keep", "1"}},
		},
		{
			name: "lower and upper case names",
			req: "GET /h HTTP/1.1\r\nHost: example.test\r\nCONNECTION: Keep-Alive\r\nkeep-alive: timeout=5\r\n" +
				"PROXY-CONNECTION: close\r\nte: trailers\r\nuPgRaDe: h2c\r\nX-Keep: 1\r\n\r\n",
			kept: []wireField{{"X-Keep", "1"}},
		},
		{
			name: "fields named in Connection, case-insensitively",
			req: "GET /h HTTP/1.1\r\nHost: example.test\r\nConnection: X-Drop-One, x-drop-TWO\r\nConnection: X-DROP-THREE\r\n" +
				"x-drop-one: 1\r\nX-Drop-Two: 2\r\nx-drop-three: 3\r\nX-Keep: 4\r\n\r\n",
			dropped: []string{"X-Drop-One", "X-Drop-Two", "X-Drop-Three"},
			kept:    []wireField{{"X-Keep", "4"}},
		},
		{
			name:    "a long field name named in Connection in another case",
			req:     "GET /h HTTP/1.1\r\nHost: example.test\r\nConnection: " + longName + "\r\n" + strings.ToLower(longName) + ": v\r\nX-Keep: 5\r\n\r\n",
			dropped: []string{longName},
			kept:    []wireField{{"X-Keep", "5"}},
		},
		{
			name: "Transfer-Encoding is replaced by the proxy's own",
			req: "POST /h HTTP/1.1\r\nHost: example.test\r\ntransfer-ENCODING: Chunked\r\nX-Keep: 6\r\n\r\n" +
				"3\r\nabc\r\n0\r\n\r\n",
			kept: []wireField{{"X-Keep", "6"}},
		},
		{
			name: "Upgrade on a request with a body is not an upgrade",
			req: "POST /h HTTP/1.1\r\nHost: example.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n" +
				"Content-Length: 3\r\nX-Keep: 7\r\n\r\nabc",
			kept: []wireField{{"X-Keep", "7"}, {"Content-Length", "3"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialWire(t, addr)
			c.write(tc.req)
			method, _, _ := strings.Cut(tc.req, " ")
			if res, body := c.response(method); res.StatusCode != 200 {
				t.Fatalf("got %d %q", res.StatusCode, body)
			}
			r := be.nextRequest(t)
			for _, name := range append(slices.Clone(hopByHopNames), tc.dropped...) {
				if vs := r.values(name); vs != nil {
					t.Errorf("backend got %s: %q\nhead %q", name, vs, r.head)
				}
			}
			te := r.values("Transfer-Encoding")
			if r.chunked && !slices.Equal(te, []string{"chunked"}) || !r.chunked && te != nil {
				t.Errorf("backend got Transfer-Encoding %q (chunked body %v)\nhead %q", te, r.chunked, r.head)
			}
			for _, f := range tc.kept {
				if vs := r.values(f.name); !slices.Equal(vs, []string{f.value}) {
					t.Errorf("backend got %s %q, want %q", f.name, vs, f.value)
				}
			}
		})
	}
}

// TestHopByHopResponseFieldsRemoved: the same for the fields of a response, on the way to the client.
func TestHopByHopResponseFieldsRemoved(t *testing.T) {
	longName := "X-" + strings.Repeat("Long-Name-", 10)
	be := newRecordingBackend(t, func(r *wireRequest) (string, bool) {
		if r.line != "GET / HTTP/1.1" {
			return echoTargetResponse(r)
		}
		return "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Resp-Drop\r\nconnection: " + longName + "\r\n" +
			"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\n" +
			"X-Resp-Drop: 1\r\n" + strings.ToLower(longName) + ": 2\r\nX-Resp-Keep: 3\r\n" +
			"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false
	})
	_, addr := startProxyTo(t, Config{}, be)
	c := dialWire(t, addr)
	c.write("GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
	_, head, fields := c.head()
	for _, name := range append(slices.Clone(hopByHopNames), "X-Resp-Drop", longName) {
		if vs := wireValues(fields, name); vs != nil {
			t.Errorf("client got %s: %q", name, vs)
		}
	}
	if vs := wireValues(fields, "Transfer-Encoding"); !slices.Equal(vs, []string{"chunked"}) {
		t.Errorf("client got Transfer-Encoding %q, want the proxy's own chunked once", vs)
	}
	if vs := wireValues(fields, "X-Resp-Keep"); !slices.Equal(vs, []string{"3"}) {
		t.Errorf("client got X-Resp-Keep %q, want 3", vs)
	}
	if t.Failed() {
		t.Logf("head: %q", head)
	}
	if _, _, err := readWireBody(c.br, fields, io.Discard); err != nil {
		t.Fatal(err)
	}
	c.get("/next", "GET /next")
}

// TestXForwarded: X-Forwarded-For, -Proto and -Host and the RFC 7239 Forwarded field in each mode,
// with and without values from the client, from a trusted proxy and from anyone else: only a
// trusted proxy's fields are extended, and everyone else's say what the proxy itself saw.
func TestXForwarded(t *testing.T) {
	const plain = "GET /x HTTP/1.1\r\nHost: example.test:8080\r\n\r\n"
	const incoming = "GET /x HTTP/1.1\r\nHost: example.test:8080\r\nX-Forwarded-For: 203.0.113.7\r\n" +
		"x-forwarded-for: 198.51.100.1, 192.0.2.3\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: orig.example\r\n" +
		"Forwarded: for=203.0.113.7;proto=https\r\n\r\n"
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	elsewhere := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	ours := `for=127.0.0.1;host="example.test:8080";proto=http`
	for _, tc := range []struct {
		name        string
		mode        Forwarded
		trusted     []netip.Prefix
		field       bool
		req         string
		xff         []string // the values of all X-Forwarded-For fields, joined as one list
		proto, host []string
		forwarded   []string
	}{
		{"append/none", ForwardedAppend, nil, false, plain, []string{"127.0.0.1"}, []string{"http"}, []string{"example.test:8080"}, nil},
		{"append/incoming untrusted", ForwardedAppend, nil, false, incoming, []string{"127.0.0.1"}, []string{"http"}, []string{"example.test:8080"}, nil},
		{"append/incoming, others trusted", ForwardedAppend, elsewhere, false, incoming, []string{"127.0.0.1"}, []string{"http"}, []string{"example.test:8080"}, nil},
		{"append/incoming trusted", ForwardedAppend, loopback, false, incoming, []string{"203.0.113.7", "198.51.100.1", "192.0.2.3", "127.0.0.1"}, []string{"https"}, []string{"orig.example"}, []string{"for=203.0.113.7;proto=https"}},
		{"append/none with Forwarded", ForwardedAppend, nil, true, plain, []string{"127.0.0.1"}, []string{"http"}, []string{"example.test:8080"}, []string{ours}},
		{"append/incoming untrusted with Forwarded", ForwardedAppend, nil, true, incoming, []string{"127.0.0.1"}, []string{"http"}, []string{"example.test:8080"}, []string{ours}},
		{"append/incoming trusted with Forwarded", ForwardedAppend, loopback, true, incoming, []string{"203.0.113.7", "198.51.100.1", "192.0.2.3", "127.0.0.1"}, []string{"https"}, []string{"orig.example"}, []string{"for=203.0.113.7;proto=https, " + ours}},
		{"replace/none", ForwardedReplace, nil, false, plain, []string{"127.0.0.1"}, []string{"http"}, []string{"example.test:8080"}, nil},
		{"replace/incoming trusted", ForwardedReplace, loopback, true, incoming, []string{"127.0.0.1"}, []string{"http"}, []string{"example.test:8080"}, []string{ours}},
		{"off/none", ForwardedOff, nil, true, plain, nil, nil, nil, nil},
		{"off/incoming", ForwardedOff, nil, true, incoming, []string{"203.0.113.7", "198.51.100.1", "192.0.2.3"}, []string{"https"}, []string{"orig.example"}, []string{"for=203.0.113.7;proto=https"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newRecordingBackend(t, nil)
			_, addr := startProxyTo(t, Config{Forwarded: tc.mode, TrustedProxies: tc.trusted, ForwardedField: tc.field}, be)
			c := dialWire(t, addr)
			c.write(tc.req)
			if res, body := c.response("GET"); res.StatusCode != 200 {
				t.Fatalf("got %d %q", res.StatusCode, body)
			}
			r := be.nextRequest(t)
			var xff []string
			for _, v := range r.values("X-Forwarded-For") {
				for item := range strings.SplitSeq(v, ",") {
					xff = append(xff, strings.TrimSpace(item))
				}
			}
			if !slices.Equal(xff, tc.xff) {
				t.Errorf("X-Forwarded-For list %q, want %q", xff, tc.xff)
			}
			if got := r.values("X-Forwarded-Proto"); !slices.Equal(got, tc.proto) {
				t.Errorf("X-Forwarded-Proto %q, want %q", got, tc.proto)
			}
			if got := r.values("X-Forwarded-Host"); !slices.Equal(got, tc.host) {
				t.Errorf("X-Forwarded-Host %q, want %q", got, tc.host)
			}
			if got := r.values("Forwarded"); !slices.Equal(got, tc.forwarded) {
				t.Errorf("Forwarded %q, want %q", got, tc.forwarded)
			}
			if got := r.values("Host"); !slices.Equal(got, []string{"example.test:8080"}) {
				t.Errorf("Host %q, want it kept", got)
			}
			if t.Failed() {
				t.Logf("backend head: %q", r.head)
			}
		})
	}
}

// TestForwardedNodes: the Forwarded field's for= of each kind of client address (RFC 7239 §6).
func TestForwardedNodes(t *testing.T) {
	for _, tc := range []struct{ ip, want string }{
		{"192.0.2.60", `Forwarded: for=192.0.2.60;host="a.example";proto=http` + "\r\n"},
		{"2001:db8:cafe::17", `Forwarded: for="[2001:db8:cafe::17]";host="a.example";proto=http` + "\r\n"},
		{"", `Forwarded: for=unknown;host="a.example";proto=http` + "\r\n"},
	} {
		c := &conn{clientIP: []byte(tc.ip), inflight: &inflight{}}
		c.req.Host = []byte("a.example")
		if got := string(c.appendForwarded(nil, -1)); got != tc.want {
			t.Errorf("client %q: %q, want %q", tc.ip, got, tc.want)
		}
	}
}

// TestRequestTargetAndHostForwardedExactly: the request target reaches the backend byte for byte,
// odd but legal forms included, and the Host field is kept, except that an absolute-form target's
// authority replaces it (RFC 9112 §3.2.2), so that the backend and X-Forwarded-Host agree with
// the target.
func TestRequestTargetAndHostForwardedExactly(t *testing.T) {
	be := newRecordingBackend(t, nil)
	_, addr := startProxyTo(t, Config{}, be)
	for _, tc := range []struct{ method, target, host, want string }{
		{"GET", "/a%2Fb?x=1&y=%zz", "example.test", ""},
		{"GET", "//double", "example.test", ""},
		{"GET", "/p;param/%7E~!$&'()*+,;=:@?q=a+b&q=%20", "Example.TEST:8443", ""},
		{"GET", "http://h/p", "h", ""},
		{"GET", "http://other.example:81/p?q", "example.test", "other.example:81"},
		{"GET", "HTTPS://[::1]:8443", "example.test", "[::1]:8443"},
		{"OPTIONS", "*", "example.test", ""},
		{"DELETE", "/items/%E2%82%AC", "[::1]:8080", ""},
	} {
		if tc.want == "" {
			tc.want = tc.host
		}
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			c := dialWire(t, addr)
			c.write(tc.method + " " + tc.target + " HTTP/1.1\r\nHost: " + tc.host + "\r\n\r\n")
			if res, body := c.response(tc.method); res.StatusCode != 200 {
				t.Fatalf("got %d %q", res.StatusCode, body)
			}
			r := be.nextRequest(t)
			if want := tc.method + " " + tc.target + " HTTP/1.1"; r.line != want {
				t.Errorf("backend request line %q, want %q", r.line, want)
			}
			if got := r.values("Host"); !slices.Equal(got, []string{tc.want}) {
				t.Errorf("backend Host %q, want %q", got, tc.want)
			}
			if got := r.values("X-Forwarded-Host"); !slices.Equal(got, []string{tc.want}) {
				t.Errorf("backend X-Forwarded-Host %q, want %q", got, tc.want)
			}
		})
	}
}

// TestLargeFieldPassesUnchanged: a 200-byte field name with an 8 KiB value passes unchanged, in a
// request and in a response.
func TestLargeFieldPassesUnchanged(t *testing.T) {
	name := "X-" + strings.Repeat("n", 198)
	value := strings.Repeat("v0123456789abcdef=;/ \"", 400)[:8<<10] // ends in '6', not in whitespace
	line := "\r\n" + name + ": " + value + "\r\n"
	be := newRecordingBackend(t, func(r *wireRequest) (string, bool) {
		return "HTTP/1.1 200 OK\r\n" + name + ": " + value + "\r\nContent-Length: 2\r\n\r\nok", false
	})
	_, addr := startProxyTo(t, Config{}, be)
	c := dialWire(t, addr)
	c.write("GET / HTTP/1.1\r\nHost: example.test\r\n" + name + ": " + value + "\r\n\r\n")
	_, head, _ := c.head()
	if !strings.Contains(head, line) {
		t.Errorf("the response head that reached the client lacks the %d-byte field line unchanged", len(line))
	}
	c.readExactly("ok")
	if r := be.nextRequest(t); !strings.Contains(r.head, line) {
		t.Errorf("the request head that reached the backend lacks the %d-byte field line unchanged", len(line))
	}
}

// ---------------------------------------------------------------------------------------------
// Strict framing

// TestStrictFramingRejected: each request that a backend could read differently from the proxy
// (request smuggling), or that breaks a limit, is answered with the right 4xx (or 5xx) and a body
// that says what was wrong, the connection is closed, and the backend never sees it.
func TestStrictFramingRejected(t *testing.T) {
	be := newRecordingBackend(t, nil)
	// No pooling: every forwarded request opens a backend connection of its own, in order, so
	// counting accepts shows whether a rejected request reached the backend.
	_, addr := startProxyTo(t, Config{IdleConnsPerBackend: -1}, be)
	const host = "Host: example.test\r\n"
	var manyFields strings.Builder
	for i := range 100 {
		fmt.Fprintf(&manyFields, "X-Field-%d: %d\r\n", i, i)
	}
	var bigHead strings.Builder
	for i := range 34 {
		fmt.Fprintf(&bigHead, "X-Pad-%d: %s\r\n", i, strings.Repeat("p", 1000))
	}
	for _, tc := range []struct {
		name   string
		req    string
		status int
		reason string // the body must contain it
	}{
		{"CL and TE", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "both Content-Length and Transfer-Encoding"},
		{"TE and CL", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, "both Content-Length and Transfer-Encoding"},
		{"differing CL fields", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "differing Content-Length"},
		{"differing CL list", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5, 6\r\n\r\nhello!", 400, "differing Content-Length"},
		{"signed CL", "POST / HTTP/1.1\r\n" + host + "Content-Length: +5\r\n\r\nhello", 400, "invalid Content-Length"},
		{"hex CL", "POST / HTTP/1.1\r\n" + host + "Content-Length: 0x5\r\n\r\nhello", 400, "invalid Content-Length"},
		{"TE not chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip\r\n\r\nxxxxx", 400, "final coding is not chunked"},
		{"TE chunked not last", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400, "final coding is not chunked"},
		{"TE chunked not last, two fields", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n", 400, "final coding is not chunked"},
		{"TE chunked twice", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400, "chunked"},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "HTTP/1.0"},
		{"bare LF in chunk size", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400, "LF"},
		{"bare LF after chunk data", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", 400, "CRLF"},
		{"chunk size overflow", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\nffffffffffffffff1\r\nx\r\n0\r\n\r\n", 400, "chunk size too large"},
		{"bare LF in the head", "GET / HTTP/1.1\r\n" + host + "X-A: 1\n\r\n", 400, "bare LF"},
		{"obs-fold", "GET / HTTP/1.1\r\n" + host + "X-A: 1\r\n continued\r\n\r\n", 400, "obs-fold"},
		{"space before colon", "GET / HTTP/1.1\r\n" + host + "X-A : 1\r\n\r\n", 400, "whitespace between a field name and the colon"},
		{"space before colon in Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length : 5\r\n\r\nhello", 400, "whitespace between a field name and the colon"},
		{"missing Host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, "missing Host"},
		{"repeated Host", "GET / HTTP/1.1\r\n" + host + "Host: other.example\r\n\r\n", 400, "more than one Host"},
		{"NUL in a value", "GET / HTTP/1.1\r\n" + host + "X-A: a\x00b\r\n\r\n", 400, "NUL"},
		{"CR in a value", "GET / HTTP/1.1\r\n" + host + "X-A: a\rb\r\n\r\n", 400, "bare CR"},
		{"LF in a value", "GET / HTTP/1.1\r\n" + host + "X-A: a\nb: c\r\n\r\n", 400, "bare LF"},
		{"request line over the limit", "GET /" + strings.Repeat("a", 9000) + " HTTP/1.1\r\n" + host + "\r\n", 414, "request line too long"},
		{"head over the limit", "GET / HTTP/1.1\r\n" + host + bigHead.String() + "\r\n", 431, "request head too large"},
		{"too many fields", "GET / HTTP/1.1\r\n" + host + manyFields.String() + "\r\n", 431, "too many header fields"},
		{"unknown expectation", "POST / HTTP/1.1\r\n" + host + "Expect: 200-ok\r\nContent-Length: 5\r\n\r\nhello", 417, "expectation"},
		{"HTTP/2.0", "GET / HTTP/2.0\r\n" + host + "\r\n", 505, "version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := be.accepts.Load()
			c := dialWire(t, addr)
			c.write(tc.req)
			res, body := c.response("POST")
			if res.StatusCode != tc.status || !strings.Contains(body, tc.reason) {
				t.Errorf("got %d %q, want %d with a body naming %q", res.StatusCode, body, tc.status, tc.reason)
			}
			if !res.Close {
				t.Errorf("the rejection does not say Connection: close")
			}
			c.expectClosed()
			// A request after it reaches the backend on a new connection; one more accept than
			// before means the rejected one never got there.
			probe := dialWire(t, addr)
			probe.get("/probe", "GET /probe")
			if n := be.accepts.Load() - before; n != 1 {
				t.Errorf("the backend accepted %d connections for the rejected request and the probe, want 1 (the probe's)", n)
			}
			if r := be.nextRequest(t); r.line != "GET /probe HTTP/1.1" {
				t.Errorf("the backend received %q", r.head)
			}
		})
	}
}

// TestOversizedHeadAnsweredBeforeClose: a client that sends far more head than the limit (its bytes
// still arriving when the proxy gives up) can still read the 431: the proxy must not lose it by
// closing the connection with unread input, which resets it.
func TestOversizedHeadAnsweredBeforeClose(t *testing.T) {
	be := newRecordingBackend(t, nil)
	_, addr := startProxyTo(t, Config{}, be)
	c := dialWire(t, addr)
	var b strings.Builder
	b.WriteString("GET / HTTP/1.1\r\nHost: example.test\r\n")
	for b.Len() < 1<<20 {
		fmt.Fprintf(&b, "X-Pad-%d: %s\r\n", b.Len(), strings.Repeat("p", 1000))
	}
	b.WriteString("\r\n")
	wrote := make(chan error, 1)
	go func() { _, err := io.WriteString(c.nc, b.String()); wrote <- err }()
	res, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("a 1 MiB request head: no response, %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 431 || !strings.Contains(string(body), "too large") {
		t.Errorf("got %d %q, want 431 naming the head size", res.StatusCode, body)
	}
	c.nc.Close()
	waitOn(t, wrote, wireWait, "the client's write ending")
	if n := be.accepts.Load(); n != 0 {
		t.Errorf("the backend accepted %d connections", n)
	}
}

// ---------------------------------------------------------------------------------------------
// Malformed backend responses

// TestMalformedBackendResponse: a response the proxy cannot trust is answered 502, and neither the
// client nor the backend connection is used again.
func TestMalformedBackendResponse(t *testing.T) {
	var big strings.Builder
	for i := range 40 {
		fmt.Fprintf(&big, "X-Big-%d: %s\r\n", i, strings.Repeat("b", 1000))
	}
	var many strings.Builder
	for i := range 101 {
		fmt.Fprintf(&many, "X-Many-%d: %d\r\n", i, i)
	}
	for _, tc := range []struct{ name, resp string }{
		{"bad status code", "HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok"},
		{"no space after the status code", "HTTP/1.1 200OK\r\nContent-Length: 2\r\n\r\nok"},
		{"not HTTP", "ICY 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"HTTP/2.0", "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"status below 100", "HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok"},
		{"CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		{"invalid CL", "HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok"},
		{"negative CL", "HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok"},
		{"differing CL", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"},
		{"bare LF after the status line", "HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok"},
		{"bare LF in a field", "HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok"},
		{"bare LF ending the head", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nok"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 2\r\n\r\nok"},
		{"NUL in a value", "HTTP/1.1 200 OK\r\nX-A: 1\x002\r\nContent-Length: 2\r\n\r\nok"},
		{"head too large", "HTTP/1.1 200 OK\r\n" + big.String() + "Content-Length: 2\r\n\r\nok"},
		{"too many fields", "HTTP/1.1 200 OK\r\n" + many.String() + "Content-Length: 2\r\n\r\nok"},
		{"101 to a request that did not ask to upgrade", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backendClosed := make(chan struct{})
			be := newWireBackend(t, func(s *wireBackend, c net.Conn) {
				br := bufio.NewReader(c)
				if _, err := readWireRequest(br); err != nil {
					return
				}
				if _, err := io.WriteString(c, tc.resp); err != nil {
					close(backendClosed) // reset by the proxy: closed
					return
				}
				// Wait for the proxy to close the connection.
				io.Copy(io.Discard, br)
				close(backendClosed)
			})
			_, addr := startProxyTo(t, Config{}, be)
			c := dialWire(t, addr)
			c.write("GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
			res, body := c.response("GET")
			if res.StatusCode != 502 || body == "" {
				t.Errorf("got %d %q, want 502 with a body", res.StatusCode, body)
			}
			c.expectClosed()
			waitOn(t, backendClosed, promptWait, "the proxy closing the backend connection")
			if n := be.accepts.Load(); n != 1 {
				t.Errorf("the backend accepted %d connections, want 1: a malformed response is not retried", n)
			}
		})
	}
}

// TestHundredFieldsPass: by default a request and a response of 100 header fields each pass whole
// (the 101st is refused, in the tests of malformed heads).
func TestHundredFieldsPass(t *testing.T) {
	var fields strings.Builder
	for i := range 99 {
		fmt.Fprintf(&fields, "X-Field-%d: %d\r\n", i, i)
	}
	be := newRecordingBackend(t, func(r *wireRequest) (string, bool) {
		return "HTTP/1.1 200 OK\r\n" + fields.String() + "Content-Length: 2\r\n\r\nok", false
	})
	_, addr := startProxyTo(t, Config{}, be)
	c := dialWire(t, addr)
	c.write("GET / HTTP/1.1\r\nHost: example.test\r\n" + fields.String() + "\r\n")
	res, body := c.response("GET")
	if res.StatusCode != 200 || body != "ok" {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	r := be.nextRequest(t)
	for i := range 99 {
		name := fmt.Sprintf("X-Field-%d", i)
		if got := r.values(name); !slices.Equal(got, []string{strconv.Itoa(i)}) {
			t.Fatalf("backend %s %q", name, got)
		}
		if got := res.Header.Get(name); got != strconv.Itoa(i) {
			t.Fatalf("client %s %q", name, got)
		}
	}
}
