package http1

import (
	"strings"
	"testing"
)

func resp(line string, fields ...string) string { return req(line, fields...) }

func TestParseResponseRules(t *testing.T) {
	const statusLine = "malformed status line"
	tests := []struct {
		name   string
		in     string
		lim    *Limits // nil means proxyLimits
		status int     // 0: accepted; -1: ErrIncomplete
		reason string
		code   int    // the status code, when accepted
		phrase string // the reason phrase, when accepted
	}{
		{"200 OK", resp("HTTP/1.1 200 OK", "Content-Length: 0"), nil, 0, "", 200, "OK"},
		{"1.0 404", resp("HTTP/1.0 404 Not Found"), nil, 0, "", 404, "Not Found"},
		{"empty reason", resp("HTTP/1.1 204 "), nil, 0, "", 204, ""},
		{"no reason and no SP", resp("HTTP/1.1 304"), nil, 0, "", 304, ""},
		{"reason with HTAB and obs-text", resp("HTTP/1.1 200 \tO K \xe9"), nil, 0, "", 200, "\tO K \xe9"},
		{"100", resp("HTTP/1.1 100 Continue"), nil, 0, "", 100, "Continue"},
		{"599", resp("HTTP/1.1 599 X"), nil, 0, "", 599, "X"},
		{"no Host needed", resp("HTTP/1.1 200 OK", "Server: x"), nil, 0, "", 200, "OK"},

		{"two-digit status", resp("HTTP/1.1 20 OK"), nil, 400, statusLine, 0, ""},
		{"four-digit status", resp("HTTP/1.1 2000 OK"), nil, 400, statusLine, 0, ""},
		{"no SP before the reason", resp("HTTP/1.1 200OK"), nil, 400, statusLine, 0, ""},
		{"two SP before the status", resp("HTTP/1.1  200 OK"), nil, 400, statusLine, 0, ""},
		{"HTAB before the status", resp("HTTP/1.1\t200 OK"), nil, 400, statusLine, 0, ""},
		{"letters for the status", resp("HTTP/1.1 2x0 OK"), nil, 400, statusLine, 0, ""},
		{"status 099", resp("HTTP/1.1 099 X"), nil, 400, "outside 100-599", 0, ""},
		{"status 000", resp("HTTP/1.1 000 X"), nil, 400, "outside 100-599", 0, ""},
		{"status 600", resp("HTTP/1.1 600 X"), nil, 400, "outside 100-599", 0, ""},
		{"status 999", resp("HTTP/1.1 999 X"), nil, 400, "outside 100-599", 0, ""},
		{"HTTP/2", resp("HTTP/2 200 OK"), nil, 400, statusLine, 0, ""},
		{"HTTP/2.0", resp("HTTP/2.0 200 OK"), nil, 400, statusLine, 0, ""},
		{"HTTP/1.2", resp("HTTP/1.2 200 OK"), nil, 400, statusLine, 0, ""},
		{"lower-case version", resp("http/1.1 200 OK"), nil, 400, statusLine, 0, ""},
		{"ICY", resp("ICY 200 OK"), nil, 400, statusLine, 0, ""},
		{"bare CR in the reason", resp("HTTP/1.1 200 O\rK"), nil, 400, statusLine, 0, ""},
		{"NUL in the reason", resp("HTTP/1.1 200 O\x00K"), nil, 400, statusLine, 0, ""},
		{"bare LF ending the status line", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", nil, 400, "bare LF", 0, ""},
		{"bare LF first", "\nHTTP/1.1 200 OK\r\n\r\n", nil, 400, "bare LF", 0, ""},
		{"empty line before the status line", "\r\nHTTP/1.1 200 OK\r\n\r\n", nil, 400, statusLine, 0, ""},
		{"obs-fold", resp("HTTP/1.1 200 OK", "X: a", " b"), nil, 400, "obs-fold", 0, ""},
		{"SP before colon", resp("HTTP/1.1 200 OK", "Content-Length : 5"), nil, 400, "whitespace between", 0, ""},
		{"NUL in a value", resp("HTTP/1.1 200 OK", "X: \x00"), nil, 400, "NUL", 0, ""},
		{"bare LF in the fields", "HTTP/1.1 200 OK\r\nX: a\n\r\n", nil, 400, "bare LF", 0, ""},
		{"CL and TE", resp("HTTP/1.1 200 OK", "Content-Length: 5", "Transfer-Encoding: chunked"), nil, 400, "both Content-Length and Transfer-Encoding", 0, ""},
		{"CL differ", resp("HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: 6"), nil, 400, "differing Content-Length", 0, ""},
		{"CL invalid", resp("HTTP/1.1 200 OK", "Content-Length: -5"), nil, 400, "invalid Content-Length", 0, ""},
		{"TE gzip", resp("HTTP/1.1 200 OK", "Transfer-Encoding: gzip"), nil, 501, "only chunked", 0, ""},
		{"TE gzip, chunked", resp("HTTP/1.1 200 OK", "Transfer-Encoding: gzip, chunked"), nil, 501, "only chunked", 0, ""},
		{"TE chunked, gzip", resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked, gzip"), nil, 400, "final coding is not chunked", 0, ""},
		{"TE in HTTP/1.0", resp("HTTP/1.0 200 OK", "Transfer-Encoding: chunked"), nil, 400, "HTTP/1.0", 0, ""},
		{"Connection names Content-Length", resp("HTTP/1.1 200 OK", "Content-Length: 5", "Connection: Content-Length"), nil, 400, "Connection names Content-Length", 0, ""},
		{"Connection names Host", resp("HTTP/1.1 200 OK", "Connection: host", "Host: x"), nil, 0, "", 200, "OK"},
		{"head too large", resp("HTTP/1.1 200 OK", "X: "+strings.Repeat("x", 100)), &Limits{HeaderBytesMax: 100}, 502, "response head too large", 0, ""},
		{"head too large, incomplete", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("x", 100), &Limits{HeaderBytesMax: 100}, 502, "response head too large", 0, ""},
		{"status line too large", "HTTP/1.1 200 " + strings.Repeat("x", 100), &Limits{HeaderBytesMax: 100}, 502, "response head too large", 0, ""},
		{"too many fields", resp("HTTP/1.1 200 OK", "A: 1", "B: 2", "C: 3"), &Limits{HeadersMax: 2}, 502, "too many response header fields", 0, ""},
		{"fields at the limit", resp("HTTP/1.1 200 OK", "A: 1", "B: 2"), &Limits{HeadersMax: 2}, 0, "", 200, "OK"},

		{"empty", "", nil, -1, "", 0, ""},
		{"part of the status line", "HTTP/1.1 200", nil, -1, "", 0, ""},
		{"status line only", "HTTP/1.1 200 OK\r\n", nil, -1, "", 0, ""},
		{"no empty line", "HTTP/1.1 200 OK\r\nA: 1\r\n", nil, -1, "", 0, ""},
		{"half the empty line", "HTTP/1.1 200 OK\r\nA: 1\r\n\r", nil, -1, "", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := tt.lim
			if lim == nil {
				lim = &proxyLimits
			}
			var r Response
			err := ParseResponse([]byte(tt.in), lim, &r)
			checkErr(t, err, tt.status, tt.reason)
			if err != nil {
				return
			}
			if r.Status != tt.code || string(r.Reason) != tt.phrase || r.HeadLen != len(tt.in) {
				t.Fatalf("got %d %q, HeadLen %d; want %d %q, %d", r.Status, r.Reason, r.HeadLen, tt.code, tt.phrase, len(tt.in))
			}
		})
	}
}

func TestResponseBody(t *testing.T) {
	tests := []struct {
		name   string
		head   string
		method string
		want   BodyKind
	}{
		{"200 with CL", resp("HTTP/1.1 200 OK", "Content-Length: 5"), "GET", BodyLength},
		{"200 with CL 0", resp("HTTP/1.1 200 OK", "Content-Length: 0"), "GET", BodyNone},
		{"200 chunked", resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked"), "GET", BodyChunked},
		{"200 without framing", resp("HTTP/1.1 200 OK"), "GET", BodyClose},
		{"1.0 200 without framing", resp("HTTP/1.0 200 OK"), "GET", BodyClose},
		{"HEAD with CL", resp("HTTP/1.1 200 OK", "Content-Length: 5"), "HEAD", BodyNone},
		{"HEAD chunked", resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked"), "HEAD", BodyNone},
		{"HEAD without framing", resp("HTTP/1.1 200 OK"), "HEAD", BodyNone},
		{"100", resp("HTTP/1.1 100 Continue"), "POST", BodyNone},
		{"101", resp("HTTP/1.1 101 Switching Protocols", "Connection: upgrade", "Upgrade: websocket"), "GET", BodyNone},
		{"103 with CL", resp("HTTP/1.1 103 Early Hints", "Content-Length: 5"), "GET", BodyNone},
		{"204 with CL", resp("HTTP/1.1 204 No Content", "Content-Length: 5"), "GET", BodyNone},
		{"204 chunked", resp("HTTP/1.1 204 No Content", "Transfer-Encoding: chunked"), "GET", BodyNone},
		{"304 with CL", resp("HTTP/1.1 304 Not Modified", "Content-Length: 5"), "GET", BodyNone},
		{"304 without framing", resp("HTTP/1.1 304 Not Modified"), "GET", BodyNone},
		{"205 with CL 0", resp("HTTP/1.1 205 Reset Content", "Content-Length: 0"), "POST", BodyNone},
		{"CONNECT 200", resp("HTTP/1.1 200 Connection established", "Content-Length: 5"), "CONNECT", BodyClose},
		{"CONNECT 407 with CL", resp("HTTP/1.1 407 Proxy Authentication Required", "Content-Length: 5"), "CONNECT", BodyLength},
		{"404 chunked", resp("HTTP/1.1 404 Not Found", "Transfer-Encoding: chunked"), "GET", BodyChunked},
		{"lower-case head is not HEAD", resp("HTTP/1.1 200 OK", "Content-Length: 5"), "head", BodyLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Response
			if err := ParseResponse([]byte(tt.head), &proxyLimits, &r); err != nil {
				t.Fatal(err)
			}
			if got := r.Body([]byte(tt.method)); got != tt.want {
				t.Fatalf("Body(%s) = %d, want %d", tt.method, got, tt.want)
			}
		})
	}
}

func TestParseResponseFraming(t *testing.T) {
	tests := []struct {
		name      string
		head      string
		cl        int64
		keepAlive bool
		hop       string
	}{
		{"1.1", resp("HTTP/1.1 200 OK", "Content-Length: 3"), 3, true, ""},
		{"1.1 close", resp("HTTP/1.1 200 OK", "Connection: close"), -1, false, "Connection"},
		{"1.0", resp("HTTP/1.0 200 OK"), -1, false, ""},
		{"1.0 keep-alive", resp("HTTP/1.0 200 OK", "Connection: keep-alive", "Keep-Alive: timeout=5"), -1, true, "Connection,Keep-Alive"},
		{"named field", resp("HTTP/1.1 200 OK", "Connection: x-a", "X-A: 1", "X-B: 2"), -1, true, "Connection,X-A"},
		{"identical CL", resp("HTTP/1.1 200 OK", "Content-Length: 3", "Content-Length: 3, 3"), 3, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Response
			if err := ParseResponse([]byte(tt.head), &proxyLimits, &r); err != nil {
				t.Fatal(err)
			}
			var hop []string
			for _, h := range r.Headers {
				if h.Hop {
					hop = append(hop, string(h.Name))
				}
			}
			if r.ContentLength != tt.cl || r.KeepAlive != tt.keepAlive || strings.Join(hop, ",") != tt.hop {
				t.Fatalf("CL %d keep-alive %t hop %q, want %d %t %q", r.ContentLength, r.KeepAlive, hop, tt.cl, tt.keepAlive, tt.hop)
			}
		})
	}
}

func TestAllocsParseResponse(t *testing.T) {
	in := []byte("HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Type: text/html\r\n" +
		"Content-Length: 5\r\nConnection: Keep-Alive, X-Internal\r\nX-Internal: 1\r\nCache-Control: no-cache\r\n\r\nhello")
	chunked := []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
	r := Response{Headers: make([]Header, 0, 32)}
	allocs := testing.AllocsPerRun(100, func() {
		if err := ParseResponse(in, &proxyLimits, &r); err != nil || r.Body([]byte("GET")) != BodyLength {
			panic(err)
		}
		if err := ParseResponse(chunked, &proxyLimits, &r); err != nil || r.Body([]byte("GET")) != BodyChunked {
			panic(err)
		}
		if err := ParseResponse(in[:30], &proxyLimits, &r); err != ErrIncomplete {
			panic(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("ParseResponse: %v allocations per run, want 0", allocs)
	}
}

func BenchmarkParseResponse(b *testing.B) {
	in := []byte("HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Type: text/html\r\n" +
		"Content-Length: 5\r\nCache-Control: no-cache\r\n\r\nhello")
	r := Response{Headers: make([]Header, 0, 32)}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if err := ParseResponse(in, &proxyLimits, &r); err != nil {
			b.Fatal(err)
		}
	}
}
