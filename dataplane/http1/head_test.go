package http1

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
)

// proxyLimits are the proxy's defaults (dataplane/proxy Config).
var proxyLimits = Limits{RequestLineBytesMax: 8 << 10, HeaderBytesMax: 32 << 10, HeadersMax: 100}

// get is a request head with the given header field lines (each without its CRLF).
func get(fields ...string) string { return req("GET / HTTP/1.1", fields...) }

func req(line string, fields ...string) string {
	var b strings.Builder
	b.WriteString(line + "\r\n")
	for _, f := range fields {
		b.WriteString(f + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// checkErr fails t unless err is what a case wants: nil for status 0, ErrIncomplete for status -1,
// else an *Error with that status whose Reason contains reason (ignoring case).
func checkErr(t *testing.T, err error, status int, reason string) {
	t.Helper()
	switch status {
	case 0:
		if err != nil {
			t.Fatalf("got %v, want success", err)
		}
		return
	case -1:
		if err != ErrIncomplete {
			t.Fatalf("got %v, want ErrIncomplete", err)
		}
		return
	}
	var he *Error
	if !errors.As(err, &he) {
		t.Fatalf("got %v, want an *Error with status %d", err, status)
	}
	if he.Status != status {
		t.Fatalf("got status %d (%q), want %d", he.Status, he.Reason, status)
	}
	if !strings.Contains(strings.ToLower(he.Reason), strings.ToLower(reason)) {
		t.Fatalf("got reason %q, want it to say %q", he.Reason, reason)
	}
}

func TestParseRequestRules(t *testing.T) {
	const (
		bothCLTE    = "both Content-Length and Transfer-Encoding"
		clDiffer    = "differing Content-Length"
		clInvalid   = "invalid Content-Length"
		notChunked  = "final coding is not chunked"
		twice       = "chunked applied more than once"
		onlyChunked = "only chunked"
		obsFold     = "obs-fold"
		wsColon     = "whitespace between a field name and the colon"
		bareLF      = "bare LF"
		bareCR      = "bare CR"
		ctl         = "NUL, CR, LF or a control character"
		version     = "malformed HTTP version"
		notSupp     = "version not supported"
	)
	tests := []struct {
		name   string
		in     string
		status int // 0: accepted; -1: ErrIncomplete
		reason string
	}{
		{"plain GET", get("Host: a"), 0, ""},
		{"leading empty lines are ignored", "\r\n\r\n" + get("Host: a"), 0, ""},
		{"bare LF before the request line", "\n" + get("Host: a"), 400, bareLF},
		{"empty line then bare LF", "\r\n\n" + get("Host: a"), 400, bareLF},
		{"bare CR before the request line", "\r" + get("Host: a"), 400, bareCR},

		// Content-Length and Transfer-Encoding (RFC 9112 §6).
		{"CL and TE", get("Host: a", "Content-Length: 5", "Transfer-Encoding: chunked"), 400, bothCLTE},
		{"TE and CL", get("Host: a", "Transfer-Encoding: chunked", "Content-Length: 5"), 400, bothCLTE},
		{"TE and CL 0", get("Host: a", "Transfer-Encoding: chunked", "Content-Length: 0"), 400, bothCLTE},
		{"CL list differs", get("Host: a", "Content-Length: 1, 2"), 400, clDiffer},
		{"CL fields differ", get("Host: a", "Content-Length: 1", "Content-Length: 2"), 400, clDiffer},
		{"CL list then field differ", get("Host: a", "Content-Length: 1, 1", "Content-Length: 2"), 400, clDiffer},
		{"CL negative", get("Host: a", "Content-Length: -1"), 400, clInvalid},
		{"CL plus sign", get("Host: a", "Content-Length: +1"), 400, clInvalid},
		{"CL hex", get("Host: a", "Content-Length: 0x1"), 400, clInvalid},
		{"CL 19 digits", get("Host: a", "Content-Length: 1000000000000000000"), 400, clInvalid},
		{"CL 19 digits with zeros", get("Host: a", "Content-Length: 0000000000000000001"), 400, clInvalid},
		{"CL empty", get("Host: a", "Content-Length:"), 400, clInvalid},
		{"CL blank", get("Host: a", "Content-Length:  \t "), 400, clInvalid},
		{"CL commas only", get("Host: a", "Content-Length: ,,"), 400, clInvalid},
		{"CL space inside", get("Host: a", "Content-Length: 1 2"), 400, clInvalid},
		{"CL decimal point", get("Host: a", "Content-Length: 1.0"), 400, clInvalid},
		{"CL letters", get("Host: a", "Content-Length: five"), 400, clInvalid},
		{"CL 18 digits", get("Host: a", "Content-Length: 999999999999999999"), 0, ""},
		{"CL identical list", get("Host: a", "Content-Length: 5, 5"), 0, ""},
		{"CL identical fields", get("Host: a", "Content-Length: 5", "Content-Length: 5"), 0, ""},
		{"CL identical with zeros", get("Host: a", "Content-Length: 5", "Content-Length: 005"), 0, ""},
		{"TE gzip", get("Host: a", "Transfer-Encoding: gzip"), 400, notChunked},
		{"TE chunked, gzip", get("Host: a", "Transfer-Encoding: chunked, gzip"), 400, notChunked},
		{"TE chunked then gzip field", get("Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: gzip"), 400, notChunked},
		{"TE chunked twice in a list", get("Host: a", "Transfer-Encoding: chunked, chunked"), 400, twice},
		{"TE chunked twice in fields", get("Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), 400, twice},
		{"TE quoted chunked", get("Host: a", `Transfer-Encoding: "chunked"`), 400, notChunked},
		{"TE chunked with a parameter", get("Host: a", "Transfer-Encoding: chunked;x=1"), 400, notChunked},
		{"TE chunked with a space inside", get("Host: a", "Transfer-Encoding: chun ked"), 400, notChunked},
		{"TE identity", get("Host: a", "Transfer-Encoding: identity"), 400, notChunked},
		{"TE xchunked", get("Host: a", "Transfer-Encoding: xchunked"), 400, notChunked},
		{"TE empty", get("Host: a", "Transfer-Encoding:"), 400, notChunked},
		{"TE gzip, chunked", get("Host: a", "Transfer-Encoding: gzip, chunked"), 501, onlyChunked},
		{"TE gzip field then chunked field", get("Host: a", "Transfer-Encoding: gzip", "Transfer-Encoding: chunked"), 501, onlyChunked},
		{"TE chunked", get("Host: a", "Transfer-Encoding: chunked"), 0, ""},
		{"TE Chunked upper case", get("Host: a", "Transfer-Encoding: CHUNKED"), 0, ""},
		{"TE with HTAB before the value", get("Host: a", "Transfer-Encoding: \tchunked"), 0, ""},
		{"TE with empty list elements", get("Host: a", "Transfer-Encoding: , chunked ,"), 0, ""},
		{"TE in HTTP/1.0", req("POST / HTTP/1.0", "Host: a", "Transfer-Encoding: chunked"), 400, "HTTP/1.0"},
		{"TE gzip, chunked in HTTP/1.0", req("POST / HTTP/1.0", "Host: a", "Transfer-Encoding: gzip, chunked"), 400, "HTTP/1.0"},
		{"TE and CL in HTTP/1.0", req("POST / HTTP/1.0", "Host: a", "Content-Length: 5", "Transfer-Encoding: chunked"), 400, "HTTP/1.0"},

		// Field syntax (RFC 9112 §5).
		{"obs-fold with SP", get("Host: a", "X: a", " b"), 400, obsFold},
		{"obs-fold with HTAB", get("Host: a", "X: a", "\tb"), 400, obsFold},
		{"whitespace before the first field", get(" Host: a"), 400, obsFold},
		{"SP before colon", get("Host: a", "Transfer-Encoding : chunked"), 400, wsColon},
		{"HTAB before colon", get("Host: a", "Content-Length\t: 5"), 400, wsColon},
		{"SP before colon in Host", get("Host : a"), 400, wsColon},
		{"empty field name", get("Host: a", ": x"), 400, "field name"},
		{"no colon", get("Host: a", "X-Foo"), 400, "field name"},
		{"separator in name", get("Host: a", "X(y): z"), 400, "field name"},
		{"UTF-8 in name", get("Host: a", "X-\xc3\xa9: z"), 400, "field name"},
		{"NUL in a name", get("Host: a", "X\x00: z"), 400, "field name"},
		{"NUL in a value", get("Host: a", "X: a\x00b"), 400, ctl},
		{"control char in a value", get("Host: a", "X: a\x01b"), 400, ctl},
		{"DEL in a value", get("Host: a", "X: a\x7fb"), 400, ctl},
		{"bare CR in a value", get("Host: a", "X: a\rb"), 400, bareCR},
		{"bare CR ending a value", get("Host: a", "X: a\r"), 400, bareCR},
		{"bare LF inside a value", get("Host: a", "X: a\nb"), 400, bareLF},
		{"bare LF ending a field", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400, bareLF},
		{"bare LF ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400, bareLF},
		{"bare CR ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\rX", 400, bareCR},
		{"obs-text in a value", get("Host: a", "X: caf\xc3\xa9 \x80\xff"), 0, ""},
		{"HTAB inside a value", get("Host: a", "X: a\tb"), 0, ""},
		{"empty value", get("Host: a", "X:"), 0, ""},

		// Host (RFC 9112 §3.2).
		{"missing Host", get("X: a"), 400, "missing Host"},
		{"missing Host in HTTP/1.0", req("GET / HTTP/1.0"), 400, "missing Host"},
		{"two Host fields", get("Host: a", "Host: a"), 400, "more than one Host"},
		{"two Host fields differing in case", get("Host: a", "host: b"), 400, "more than one Host"},
		{"Host with a space", get("Host: a b"), 400, "malformed Host"},
		{"Host with a slash", get("Host: a/b"), 400, "malformed Host"},
		{"Host with userinfo", get("Host: u@a"), 400, "malformed Host"},
		{"Host with a quote", get(`Host: a"b`), 400, "malformed Host"},
		{"Host with HTAB inside", get("Host: a\tb"), 400, "malformed Host"},
		{"Host with obs-text", get("Host: caf\xc3\xa9"), 400, "malformed Host"},
		{"Host with NUL", get("Host: a\x00b"), 400, ctl},
		{"Host with a port", get("Host: example.com:8080"), 0, ""},
		{"Host IPv6 literal", get("Host: [::1]:80"), 0, ""},
		{"Host empty", get("Host:"), 0, ""},

		// Request line (RFC 9112 §3).
		{"NUL in the target", "GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request target"},
		{"NUL in the method", "GE\x00T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "method"},
		{"NUL in the version", "GET / HTTP/1.1\x00\r\nHost: a\r\n\r\n", 400, version},
		{"bare CR in the target", "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400, bareCR},
		{"bare CR in the method", "G\rET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, bareCR},
		{"CR CR LF ending the line", "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", 400, bareCR},
		{"bare LF ending the line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400, bareLF},
		{"bare LF in the target", "GET /\n HTTP/1.1\r\nHost: a\r\n\r\n", 400, bareLF},
		{"HTAB between method and target", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "method"},
		{"two SP before the target", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request target"},
		{"two SP before the version", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400, version},
		{"SP after the version", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, version},
		{"leading SP", " GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "method"},
		{"no version", "GET /\r\nHost: a\r\n\r\n", 400, "request target"},
		{"empty request line", "\r\r\n", 400, bareCR},
		{"space in the target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, version},
		{"DEL in the target", "GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request target"},
		{"obs-text target passes", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 0, ""},
		{"absolute-form target", "GET http://a/b?c HTTP/1.1\r\nHost: a\r\n\r\n", 0, ""},
		{"absolute-form target, HTTPS in capitals", "GET HTTPS://a:8443 HTTP/1.1\r\nHost: b\r\n\r\n", 0, ""},
		{"absolute-form target of another scheme", "GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "scheme"},
		{"absolute-form target with userinfo", "GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "authority"},
		{"absolute-form target without authority", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400, "authority"},
		{"absolute-form target still needs Host", "GET http://a/ HTTP/1.1\r\n\r\n", 400, "missing Host"},
		{"a colon in an origin-form target", "GET /http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 0, ""},
		{"HTTP/2.0", req("GET / HTTP/2.0", "Host: a"), 505, notSupp},
		{"HTTP/1.2", req("GET / HTTP/1.2", "Host: a"), 505, notSupp},
		{"HTTP/0.9", req("GET / HTTP/0.9", "Host: a"), 505, notSupp},
		{"HTTP/3.1", req("GET / HTTP/3.1", "Host: a"), 505, notSupp},
		{"lower-case http", req("GET / http/1.1", "Host: a"), 400, version},
		{"lower-case Http", req("GET / Http/1.1", "Host: a"), 400, version},
		{"HTTP/1", req("GET / HTTP/1", "Host: a"), 400, version},
		{"HTTP/1.10", req("GET / HTTP/1.10", "Host: a"), 400, version},
		{"HTTP/11.1", req("GET / HTTP/11.1", "Host: a"), 400, version},
		{"HTTP/1,1", req("GET / HTTP/1,1", "Host: a"), 400, version},
		{"HTTP/a.b", req("GET / HTTP/a.b", "Host: a"), 400, version},
		{"HTTPS/1.1", req("GET / HTTPS/1.1", "Host: a"), 400, version},
		{"garbage version", req("GET / xyzzy", "Host: a"), 400, version},

		// Expect (RFC 9110 §10.1.1).
		{"Expect 100-continue", get("Host: a", "Expect: 100-continue"), 0, ""},
		{"Expect 100-Continue", get("Host: a", "Expect: 100-Continue"), 0, ""},
		{"Expect other", get("Host: a", "Expect: 200-ok"), 417, "only 100-continue"},
		{"Expect empty", get("Host: a", "Expect:"), 417, "only 100-continue"},
		{"Expect list", get("Host: a", "Expect: 100-continue, x"), 417, "only 100-continue"},

		// Connection.
		{"Connection with a non-token", get("Host: a", "Connection: a b"), 400, "malformed Connection"},
		{"Connection names Content-Length", get("Host: a", "Content-Length: 5", "Connection: close, content-length"), 400, "Connection names Content-Length"},
		{"Connection names Content-Length without one", get("Host: a", "Connection: Content-Length"), 400, "Connection names Content-Length"},
		{"Connection names Host", get("Host: a", "Connection: HOST"), 400, "Connection names Host"},

		// Incomplete heads.
		{"empty", "", -1, ""},
		{"a CR", "\r", -1, ""},
		{"an empty line", "\r\n", -1, ""},
		{"part of the method", "GE", -1, ""},
		{"request line without CRLF", "GET / HTTP/1.1", -1, ""},
		{"request line without LF", "GET / HTTP/1.1\r", -1, ""},
		{"request line only", "GET / HTTP/1.1\r\n", -1, ""},
		{"part of a name", "GET / HTTP/1.1\r\nHo", -1, ""},
		{"a field without CRLF", "GET / HTTP/1.1\r\nHost: a", -1, ""},
		{"a field without LF", "GET / HTTP/1.1\r\nHost: a\r", -1, ""},
		{"no empty line", "GET / HTTP/1.1\r\nHost: a\r\n", -1, ""},
		{"half the empty line", "GET / HTTP/1.1\r\nHost: a\r\n\r", -1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			err := ParseRequest([]byte(tt.in), &proxyLimits, &r)
			checkErr(t, err, tt.status, tt.reason)
			if err == nil && r.HeadLen != len(tt.in) {
				t.Fatalf("HeadLen %d, want %d", r.HeadLen, len(tt.in))
			}
		})
	}
}

func TestParseRequestLimits(t *testing.T) {
	lim := Limits{RequestLineBytesMax: 40, HeaderBytesMax: 100, HeadersMax: 3}
	line := func(n int) string { // a request line of exactly n bytes
		return "GET /" + strings.Repeat("a", n-len("GET / HTTP/1.1")) + " HTTP/1.1"
	}
	head := func(n int) string { // a head of exactly n bytes
		h := get("Host: a", "X: ")
		return get("Host: a", "X: "+strings.Repeat("v", n-len(h)))
	}
	tests := []struct {
		name   string
		in     string
		lim    Limits
		status int
		reason string
	}{
		{"request line at the limit", req(line(40), "Host: a"), lim, 0, ""},
		{"request line over the limit", req(line(41), "Host: a"), lim, 414, "request line too long"},
		{"request line over the limit, incomplete", line(42), lim, 414, "request line too long"},
		{"request line at the limit and its CR, incomplete", line(40) + "\r", lim, -1, ""},
		{"request line over the limit by one, incomplete", line(41), lim, -1, ""},
		{"request line over the limit with a bare LF", line(42) + "\nHost: a\r\n\r\n", lim, 414, "request line too long"},
		// 41 bytes and an LF could have been 40 and a CRLF: the bare LF is found first.
		{"request line over the limit by one with a bare LF", line(41) + "\nHost: a\r\n\r\n", lim, 400, "bare LF"},
		{"request line at the limit with a bare LF", line(41)[:40] + "\nHost: a\r\n\r\n", lim, 400, "bare LF"},
		{"leading empty lines do not count as request line", "\r\n\r\n" + req(line(40), "Host: a"), lim, 0, ""},
		{"request line over the limit after empty lines", "\r\n\r\n" + req(line(41), "Host: a"), lim, 414, "request line too long"},
		{"head at the limit", head(100), lim, 0, ""},
		{"head over the limit by one", head(101), lim, 431, "head too large"},
		{"head over the limit, incomplete", head(101)[:100], lim, 431, "head too large"},
		{"head at the limit, incomplete", head(101)[:99], lim, -1, ""},
		{"head over the limit with a later error", head(101)[:100] + "\x00\x00\r\n\r\n", lim, 431, "head too large"},
		{"leading empty lines count in the head", "\r\n" + head(99), lim, 431, "head too large"},
		{"request line longer than the head limit", req(line(100), "Host: a"), Limits{HeaderBytesMax: 100}, 431, "head too large"},
		{"fields at the limit", get("Host: a", "A: 1", "B: 2"), lim, 0, ""},
		{"fields over the limit", get("Host: a", "A: 1", "B: 2", "C: 3"), lim, 431, "too many header fields"},
		{"no limits", req(line(1000), "Host: a", "A: "+strings.Repeat("x", 10000)), Limits{}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			err := ParseRequest([]byte(tt.in), &tt.lim, &r)
			checkErr(t, err, tt.status, tt.reason)
		})
	}
}

// TestParseRequestPassThrough checks that a parsed head is slices of the input, byte for byte.
func TestParseRequestPassThrough(t *testing.T) {
	name := "X-" + strings.Repeat("N", 198)
	value := strings.Repeat("v\x80 \t!~", 8000/6) + "vv"
	in := "POST /p?q=1&r=%20#f HTTP/1.0\r\nHost: example.com:81\r\n" + name + ":  \t" + value + " \t\r\n" +
		"content-length: 3\r\nConnection: keep-alive\r\n\r\nabc"
	var r Request
	if err := ParseRequest([]byte(in), &proxyLimits, &r); err != nil {
		t.Fatal(err)
	}
	if len(name) != 200 || len(value) != 8000 {
		t.Fatalf("test name %d bytes, value %d bytes", len(name), len(value))
	}
	if got, want := r.HeadLen, len(in)-3; got != want {
		t.Fatalf("HeadLen %d, want %d", got, want)
	}
	if string(r.Method) != "POST" || string(r.Target) != "/p?q=1&r=%20#f" || r.Minor != 0 {
		t.Fatalf("request line %q %q 1.%d", r.Method, r.Target, r.Minor)
	}
	if len(r.Headers) != 4 {
		t.Fatalf("%d headers, want 4", len(r.Headers))
	}
	h := r.Headers[1]
	if string(h.Name) != name || string(h.Value) != value || h.Kind != KindOther || h.Hop {
		t.Fatalf("long field changed: name %d bytes, value %d bytes, kind %d, hop %t",
			len(h.Name), len(h.Value), h.Kind, h.Hop)
	}
	if string(r.Host) != "example.com:81" || r.ContentLength != 3 || r.Chunked || !r.KeepAlive || !r.HasBody() {
		t.Fatalf("host %q, CL %d, chunked %t, keep-alive %t", r.Host, r.ContentLength, r.Chunked, r.KeepAlive)
	}
	if got := r.Headers[2]; string(got.Name) != "content-length" || got.Kind != KindContentLength {
		t.Fatalf("field 2: %q kind %d", got.Name, got.Kind)
	}
	// Every slice points into the input.
	base := []byte(in)
	if err := ParseRequest(base, &proxyLimits, &r); err != nil {
		t.Fatal(err)
	}
	for _, s := range [][]byte{r.Method, r.Target, r.Host, r.Headers[1].Name, r.Headers[1].Value} {
		if !within(s, base[:r.HeadLen]) {
			t.Fatalf("%.20q does not point into the head", s)
		}
	}
}

func TestParseRequestFraming(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		cl        int64
		chunked   bool
		keepAlive bool
		upgrade   string // "" means nil
		expect100 bool
	}{
		{"1.1 GET", get("Host: a"), -1, false, true, "", false},
		{"1.1 close", get("Host: a", "Connection: close"), -1, false, false, "", false},
		{"1.1 Close upper case", get("Host: a", "Connection: CLOSE"), -1, false, false, "", false},
		{"1.1 close in a list", get("Host: a", "Connection: foo, close"), -1, false, false, "", false},
		{"1.1 close in a second field", get("Host: a", "Connection: foo", "Connection: close"), -1, false, false, "", false},
		{"1.1 keep-alive", get("Host: a", "Connection: keep-alive"), -1, false, true, "", false},
		{"1.0 GET", req("GET / HTTP/1.0", "Host: a"), -1, false, false, "", false},
		{"1.0 keep-alive", req("GET / HTTP/1.0", "Host: a", "Connection: keep-alive"), -1, false, true, "", false},
		{"1.0 Keep-Alive", req("GET / HTTP/1.0", "Host: a", "Connection: Keep-Alive"), -1, false, true, "", false},
		{"1.0 keep-alive and close", req("GET / HTTP/1.0", "Host: a", "Connection: keep-alive, close"), -1, false, false, "", false},
		{"1.0 Keep-Alive field only", req("GET / HTTP/1.0", "Host: a", "Keep-Alive: timeout=5"), -1, false, false, "", false},
		{"CL", get("Host: a", "Content-Length: 12"), 12, false, true, "", false},
		{"CL 0", get("Host: a", "Content-Length: 0"), 0, false, true, "", false},
		{"CL with leading zeros", get("Host: a", "Content-Length: 007"), 7, false, true, "", false},
		{"chunked", get("Host: a", "Transfer-Encoding: chunked"), -1, true, true, "", false},
		{"upgrade", get("Host: a", "Connection: Upgrade", "Upgrade: websocket"), -1, false, true, "websocket", false},
		{"upgrade after keep-alive", get("Host: a", "Connection: keep-alive, upgrade", "Upgrade: h2c"), -1, false, true, "h2c", false},
		{"Upgrade without Connection upgrade", get("Host: a", "Upgrade: websocket"), -1, false, true, "", false},
		{"Upgrade with Connection keep-alive", get("Host: a", "Connection: keep-alive", "Upgrade: websocket"), -1, false, true, "", false},
		{"Connection upgrade without Upgrade", get("Host: a", "Connection: upgrade"), -1, false, true, "", false},
		{"Connection upgrade with an empty Upgrade", get("Host: a", "Connection: upgrade", "Upgrade:"), -1, false, true, "", false},
		{"Expect 100-continue", get("Host: a", "Expect: 100-continue", "Content-Length: 1"), 1, false, true, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			if err := ParseRequest([]byte(tt.in), &proxyLimits, &r); err != nil {
				t.Fatal(err)
			}
			if r.ContentLength != tt.cl || r.Chunked != tt.chunked || r.KeepAlive != tt.keepAlive ||
				string(r.Upgrade) != tt.upgrade || (r.Upgrade == nil) != (tt.upgrade == "") || r.Expect100 != tt.expect100 {
				t.Fatalf("got CL %d chunked %t keep-alive %t upgrade %q expect %t, want %d %t %t %q %t",
					r.ContentLength, r.Chunked, r.KeepAlive, r.Upgrade, r.Expect100,
					tt.cl, tt.chunked, tt.keepAlive, tt.upgrade, tt.expect100)
			}
			if r.HasBody() != (tt.chunked || tt.cl > 0) {
				t.Fatalf("HasBody %t", r.HasBody())
			}
		})
	}
}

func TestParseRequestHop(t *testing.T) {
	tests := []struct {
		name   string
		fields []string
		hop    string // the names of the fields that must be Hop, in order, joined by ","
	}{
		{"none", []string{"Host: a", "X: 1"}, ""},
		{"standard hop-by-hop fields",
			[]string{"Host: a", "Connection: close", "Keep-Alive: 5", "Proxy-Connection: x", "TE: trailers", "Upgrade: y", "X: 1"},
			"Connection,Keep-Alive,Proxy-Connection,TE,Upgrade"},
		{"Transfer-Encoding", []string{"Host: a", "Transfer-Encoding: chunked"}, "Transfer-Encoding"},
		{"named fields", []string{"Host: a", "Connection: x-a, X-B", "X-A: 1", "x-b: 2", "X-C: 3"}, "Connection,X-A,x-b"},
		{"named in upper case", []string{"Host: a", "x-secret: 1", "Connection: X-SECRET"}, "x-secret,Connection"},
		{"repeated named fields", []string{"Host: a", "X-A: 1", "Connection: x-a", "X-A: 2"}, "X-A,Connection,X-A"},
		{"several Connection fields", []string{"Host: a", "Connection: x-a", "connection: x-b", "X-A: 1", "X-B: 2"}, "Connection,connection,X-A,X-B"},
		{"empty list elements", []string{"Host: a", "Connection: ,, x-a ,", "X-A: 1"}, "Connection,X-A"},
		{"a long name", []string{"Host: a", "Connection: " + strings.Repeat("X", 100), strings.Repeat("x", 100) + ": 1"},
			"Connection," + strings.Repeat("x", 100)},
		{"a prefix is not a match", []string{"Host: a", "Connection: x-a", "X-AB: 1", "X-: 2"}, "Connection"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			if err := ParseRequest([]byte(get(tt.fields...)), &proxyLimits, &r); err != nil {
				t.Fatal(err)
			}
			var hop []string
			for _, h := range r.Headers {
				if h.Hop {
					hop = append(hop, string(h.Name))
				}
			}
			if got := strings.Join(hop, ","); got != tt.hop {
				t.Fatalf("hop fields %q, want %q", got, tt.hop)
			}
		})
	}
}

func TestParseRequestKinds(t *testing.T) {
	names := map[string]Kind{
		"Host": KindHost, "content-length": KindContentLength, "TRANSFER-ENCODING": KindTransferEncoding,
		"Connection": KindConnection, "Keep-Alive": KindKeepAlive, "Proxy-Connection": KindProxyConnection,
		"te": KindTE, "Upgrade": KindUpgrade, "Expect": KindExpect, "X-Forwarded-For": KindXForwardedFor,
		"X-Forwarded-Proto": KindXForwardedProto, "x-forwarded-host": KindXForwardedHost,
		"Forwarded": KindForwarded, "forwarde": KindOther,
		"Hosts": KindOther, "Content-Lengths": KindOther, "Transfer_Encoding": KindOther, "X": KindOther,
	}
	for name, want := range names {
		if got := classify([]byte(name)); got != want {
			t.Errorf("classify(%q) = %d, want %d", name, got, want)
		}
	}
}

// TestAbsoluteFormHost: the authority of an absolute-form target is the request's host, whatever
// the Host field says (RFC 9112 §3.2.2); an origin-form target keeps the Host field's.
func TestAbsoluteFormHost(t *testing.T) {
	lim := Limits{RequestLineBytesMax: 8192, HeaderBytesMax: 32768, HeadersMax: 100}
	for _, tc := range []struct{ target, host, want string }{
		{"http://a.example:81/p?q", "evil.example", "a.example:81"},
		{"https://[::1]:8443", "x", "[::1]:8443"},
		{"HTTP://b.example?x", "x", "b.example"},
		{"/p", "c.example", "c.example"},
		{"*", "d.example", "d.example"},
	} {
		var r Request
		if err := ParseRequest([]byte("GET "+tc.target+" HTTP/1.1\r\nHost: "+tc.host+"\r\n\r\n"), &lim, &r); err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		if string(r.Host) != tc.want || string(r.Target) != tc.target {
			t.Errorf("%s with Host %s: host %q target %q, want host %q and the target as sent", tc.target, tc.host, r.Host, r.Target, tc.want)
		}
	}
}

// TestParseRequestReuse parses into the same Request twice: nothing of the first head survives.
func TestParseRequestReuse(t *testing.T) {
	r := Request{Headers: make([]Header, 0, 1)}
	first := get("Host: a", "Content-Length: 5", "Expect: 100-continue", "Connection: upgrade", "Upgrade: x", "A: 1")
	if err := ParseRequest([]byte(first), &proxyLimits, &r); err != nil {
		t.Fatal(err)
	}
	second := req("GET / HTTP/1.0", "Host: b")
	if err := ParseRequest([]byte(second), &proxyLimits, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Headers) != 1 || string(r.Host) != "b" || r.ContentLength != -1 || r.Expect100 || r.Upgrade != nil ||
		r.KeepAlive || r.Minor != 0 || r.HeadLen != len(second) {
		t.Fatalf("stale state: %+v", r)
	}
	if err := ParseRequest([]byte("GET / HTTP/1.1\r\n"), &proxyLimits, &r); err != ErrIncomplete {
		t.Fatal(err)
	}
	if r.HeadLen != 0 || len(r.Headers) != 0 {
		t.Fatalf("HeadLen %d and %d headers after ErrIncomplete", r.HeadLen, len(r.Headers))
	}
}

// TestParseRequestPrefixes checks on every case of the rule table that the outcome depends only on
// the bytes needed: every proper prefix of a head gives ErrIncomplete or the head's own *Error.
func TestParseRequestPrefixes(t *testing.T) {
	heads := []string{
		get("Host: a", "Content-Length: 5"),
		"\r\n\r\n" + get("Host: a", "Transfer-Encoding: chunked"),
		get("Host: a", "X: a\x00"),
		get("Host: a", "Transfer-Encoding : chunked"),
		req("GET / HTTP/2.0", "Host: a"),
		get("Host: a", "X: 1", "Y: 2", "Z: 3"),
		"GET /" + strings.Repeat("a", 60) + "\n",
		"GET /" + strings.Repeat("a", 200) + "\x00 HTTP/1.1\r\n",
	}
	lims := []Limits{proxyLimits, {RequestLineBytesMax: 40, HeaderBytesMax: 64, HeadersMax: 2}, {HeaderBytesMax: 30}, {}}
	for _, head := range heads {
		for _, lim := range lims {
			var r Request
			whole := ParseRequest([]byte(head), &lim, &r)
			n := len(head)
			if whole == nil {
				n = r.HeadLen
			}
			for i := 0; i < n; i++ {
				err := ParseRequest([]byte(head[:i]), &lim, &r)
				if err != ErrIncomplete && err != whole {
					t.Fatalf("%+v: %q gives %v, but %q gives %v", lim, head[:i], err, head, whole)
				}
			}
		}
	}
}

func TestEqualFold(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"Content-Length", "content-length", true},
		{"content-length", "content-length", true},
		{"CONTENT-LENGTH", "content-length", true},
		{"Content-Lengt", "content-length", false},
		{"Content_Length", "content-length", false},
		{"\xc3\x89", "\xc3\xa9", false}, // non-ASCII is not folded
		{"", "", true},
	}
	for _, tt := range tests {
		if got := EqualFold([]byte(tt.a), tt.b); got != tt.want {
			t.Errorf("EqualFold(%q, %q) = %t", tt.a, tt.b, got)
		}
		if got := equalFoldBytes([]byte(tt.a), []byte(tt.b)); got != tt.want {
			t.Errorf("equalFoldBytes(%q, %q) = %t", tt.a, tt.b, got)
		}
	}
}

// within reports whether s is empty or lies inside b. The parser makes its slices with two-index
// slicing, so a slice at offset off of b has the capacity cap(b)-off.
func within(s, b []byte) bool {
	if len(s) == 0 {
		return true
	}
	off := cap(b) - cap(s)
	return off >= 0 && off+len(s) <= len(b) && &b[off] == &s[0]
}

func TestAllocsParseRequest(t *testing.T) {
	in := []byte("POST /api/v1/items?id=42 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.0\r\n" +
		"Accept: */*\r\nContent-Type: application/json\r\nContent-Length: 2\r\n" +
		"Connection: Keep-Alive, X-Trace, X-A-Rather-Long-Field-Name-Of-Many-Bytes\r\n" +
		"X-Trace: 1\r\nx-a-rather-long-field-name-of-many-bytes: 2\r\nX-Forwarded-For: 10.0.0.1\r\n" +
		"Expect: 100-continue\r\n\r\n{}")
	r := Request{Headers: make([]Header, 0, 32)}
	bad := []byte(get("Host: a", "Content-Length: 1", "Transfer-Encoding: chunked"))
	allocs := testing.AllocsPerRun(100, func() {
		if err := ParseRequest(in, &proxyLimits, &r); err != nil {
			panic(err)
		}
		if err := ParseRequest(bad, &proxyLimits, &r); err == nil {
			panic("accepted CL and TE")
		}
		if err := ParseRequest(in[:40], &proxyLimits, &r); err != ErrIncomplete {
			panic(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("ParseRequest: %v allocations per run, want 0", allocs)
	}
	if err := ParseRequest(in, &proxyLimits, &r); err != nil || !r.Headers[6].Hop || !r.Headers[7].Hop || r.Headers[8].Hop {
		t.Fatal("the fields named by Connection are not hop-by-hop")
	}
}

func BenchmarkParseRequest(b *testing.B) {
	in := []byte("GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0\r\n" +
		"Accept: text/html\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n")
	r := Request{Headers: make([]Header, 0, 32)}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if err := ParseRequest(in, &proxyLimits, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// TestErrorString pins the form of Error's message.
func TestErrorString(t *testing.T) {
	if got, want := errLineTooLong.Error(), "http1: 414: request line too long"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	for _, e := range []*Error{errHeadTooLarge, errTooManyHeaders} {
		if !bytes.Contains([]byte(e.Error()), []byte(strconv.Itoa(e.Status))) {
			t.Fatalf("%q lacks its status", e.Error())
		}
	}
}
