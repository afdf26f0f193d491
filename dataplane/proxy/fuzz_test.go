package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// seqBackend is a net/http-parsing backend (a different parser from the proxy's, as a real backend
// would be) that answers each request with its sequence number.
type seqBackend struct {
	ln   net.Listener
	seen atomic.Int64
	wg   sync.WaitGroup
}

func newSeqBackend(tb testing.TB) *seqBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &seqBackend{ln: ln}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					c.SetDeadline(time.Now().Add(5 * time.Second))
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if _, err := io.Copy(io.Discard, req.Body); err != nil {
						return
					}
					n := b.seen.Add(1)
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Seq: %d\r\nContent-Length: 2\r\n\r\nok", n)
				}
			}()
		}
	}()
	tb.Cleanup(func() { ln.Close(); b.wg.Wait() })
	return b
}

// FuzzProxyDesync sends arbitrary bytes through the proxy and checks that the proxy and a backend
// with another parser agree on where requests begin and end: every request the backend answered
// reaches the client as a well-formed response, so no input smuggled a request past the proxy's
// framing, and the proxy stays up.
func FuzzProxyDesync(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 30\r\n\r\nGET /hidden HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	be := newSeqBackend(f)
	_, addr := startProxy(f, Config{ClientTimeout: time.Second, BackendTimeout: time.Second, IdleTimeout: time.Second}, be.ln.Addr().String())
	f.Fuzz(func(t *testing.T, in []byte) {
		before := be.seen.Load()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("the proxy is not accepting: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(in); err != nil && !errors.Is(err, net.ErrClosed) {
			// The proxy may have answered and closed before taking all of the input.
			t.Logf("write: %v", err)
		}
		c.(*net.TCPConn).CloseWrite()
		br := bufio.NewReader(c)
		forwarded := 0
		for {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				if errors.Is(err, io.EOF) || isReset(err) {
					break
				}
				t.Fatalf("malformed response from the proxy: %v", err)
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil && !isReset(err) {
				t.Fatalf("response body: %v", err)
			}
			resp.Body.Close()
			if s := resp.Header.Get("X-Seq"); s != "" {
				if _, err := strconv.Atoi(s); err != nil {
					t.Fatalf("X-Seq %q", s)
				}
				forwarded++
			}
		}
		// Every request that the backend answered for this connection came back to the client.
		// (The proxy answers a request only after the backend's response, and closes on anything
		// it cannot forward, so the backend can have seen no more requests than were forwarded.)
		if seen := int(be.seen.Load() - before); seen > forwarded {
			t.Fatalf("the backend saw %d requests, the client got %d responses: requests smuggled past the proxy's framing", seen, forwarded)
		}
	})
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout() || errors.Is(err, io.ErrUnexpectedEOF)
}
