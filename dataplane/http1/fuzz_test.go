package http1

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"slices"
	"testing"
)

// The fuzz targets run their committed seed corpora (testdata/fuzz/<FuzzName>) on every `go test`;
// `make fuzz` explores from there.

// prefixesChecked bounds the prefixes a fuzz target re-parses: all of them for a short input, then
// the first and last ones, with a stride between.
const prefixesChecked = 1024

func prefixes(n int) []int {
	if n <= prefixesChecked {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	var out []int
	for i := 0; i < n; i++ {
		if i < prefixesChecked/2 || i >= n-prefixesChecked/4 || i%(n/(prefixesChecked/4)) == 0 {
			out = append(out, i)
		}
	}
	return out
}

func FuzzParseRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte, lineMax, headMax uint16, fieldsMax uint8) {
		lim := Limits{RequestLineBytesMax: int(lineMax), HeaderBytesMax: int(headMax), HeadersMax: int(fieldsMax)}
		var r Request
		err := ParseRequest(in, &lim, &r)
		checkOutcome(t, err, 400, 414, 417, 431, 501, 505)
		if err == nil {
			checkRequest(t, in, &lim, &r)
		}

		// Parsing the head alone gives the same request; the bytes after it change nothing.
		if err == nil {
			var alone Request
			if err2 := ParseRequest(in[:r.HeadLen:r.HeadLen], &lim, &alone); err2 != nil {
				t.Fatalf("the head alone: %v", err2)
			}
			if !sameRequest(&r, &alone) {
				t.Fatalf("the head alone parses differently:\n%+v\n%+v", r, alone)
			}
		}

		// The outcome depends only on the bytes needed: no prefix is accepted, and a prefix that is
		// rejected is rejected for the same reason as the whole.
		n := len(in)
		if err == nil {
			n = r.HeadLen
		}
		var p Request
		for _, i := range prefixes(n) {
			if perr := ParseRequest(in[:i], &lim, &p); perr != ErrIncomplete && perr != err {
				t.Fatalf("%d-byte prefix: %v; the whole input (%d bytes): %v", i, perr, len(in), err)
			}
		}

		if err == nil {
			compareNetHTTPRequest(t, in[:r.HeadLen], &r)
		}
	})
}

// checkOutcome fails t unless err is nil, ErrIncomplete or an *Error with one of statuses and a reason.
func checkOutcome(t *testing.T, err error, statuses ...int) {
	t.Helper()
	if err == nil || err == ErrIncomplete {
		return
	}
	var he *Error
	if !errors.As(err, &he) {
		t.Fatalf("error %v is not an *Error", err)
	}
	if !slices.Contains(statuses, he.Status) || he.Reason == "" {
		t.Fatalf("error %v: status not in %v, or no reason", err, statuses)
	}
}

func checkRequest(t *testing.T, in []byte, lim *Limits, r *Request) {
	t.Helper()
	if r.HeadLen < len("A / HTTP/1.1\r\n\r\n") || r.HeadLen > len(in) {
		t.Fatalf("HeadLen %d of %d bytes", r.HeadLen, len(in))
	}
	head := in[:r.HeadLen]
	if !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		t.Fatalf("head %q does not end in an empty line", head)
	}
	if lim.HeaderBytesMax > 0 && r.HeadLen > lim.HeaderBytesMax {
		t.Fatalf("HeadLen %d over HeaderBytesMax %d", r.HeadLen, lim.HeaderBytesMax)
	}
	if lim.HeadersMax > 0 && len(r.Headers) > lim.HeadersMax {
		t.Fatalf("%d fields over HeadersMax %d", len(r.Headers), lim.HeadersMax)
	}
	if lim.RequestLineBytesMax > 0 && len(r.Method)+len(r.Target)+10 > lim.RequestLineBytesMax {
		t.Fatalf("request line over RequestLineBytesMax %d", lim.RequestLineBytesMax)
	}
	for _, s := range [][]byte{r.Method, r.Target, r.Host, r.Upgrade} {
		if !within(s, head) {
			t.Fatalf("%q does not lie inside the head", s)
		}
	}
	if len(r.Method) == 0 || !isToken(r.Method) {
		t.Fatalf("method %q is not a token", r.Method)
	}
	if len(r.Target) == 0 || bytes.ContainsFunc(r.Target, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
		t.Fatalf("target %q", r.Target)
	}
	if r.Minor != 0 && r.Minor != 1 {
		t.Fatalf("minor version %d", r.Minor)
	}
	checkFields(t, head, r.Headers, &r.framing)
	hosts := 0
	for _, h := range r.Headers {
		if h.Kind == KindHost {
			hosts++
			if !bytes.Equal(h.Value, r.Host) {
				t.Fatalf("Host %q, field %q", r.Host, h.Value)
			}
		}
		if h.Kind == KindHost && h.Hop || h.Kind == KindContentLength && h.Hop {
			t.Fatalf("%s is hop-by-hop: the next hop would not get it", h.Name)
		}
	}
	if hosts != 1 {
		t.Fatalf("%d Host fields", hosts)
	}
	if r.Minor == 0 && r.Chunked {
		t.Fatal("chunked HTTP/1.0 request")
	}
}

// checkFields checks what every accepted head, request or response, must satisfy.
func checkFields(t *testing.T, head []byte, hs []Header, f *framing) {
	t.Helper()
	te := false
	for _, h := range hs {
		if !within(h.Name, head) || !within(h.Value, head) {
			t.Fatalf("field %q: %q does not lie inside the head", h.Name, h.Value)
		}
		if len(h.Name) == 0 || !isToken(h.Name) {
			t.Fatalf("field name %q is not a token", h.Name)
		}
		for _, c := range h.Value {
			if c == '\r' || c == '\n' || c == 0 || !valueChar[c] {
				t.Fatalf("field %s: value %q has a %q", h.Name, h.Value, c)
			}
		}
		if len(h.Value) > 0 && (isOWS(h.Value[0]) || isOWS(h.Value[len(h.Value)-1])) {
			t.Fatalf("field %s: value %q is not trimmed", h.Name, h.Value)
		}
		if h.Kind != classify(h.Name) {
			t.Fatalf("field %s: kind %d", h.Name, h.Kind)
		}
		te = te || h.Kind == KindTransferEncoding
	}
	if f.ContentLength >= 0 && f.Chunked {
		t.Fatalf("both Content-Length %d and chunked", f.ContentLength)
	}
	if f.ContentLength < -1 {
		t.Fatalf("Content-Length %d", f.ContentLength)
	}
	if te != f.Chunked {
		t.Fatalf("Transfer-Encoding present %t, chunked %t", te, f.Chunked)
	}
	if f.Upgrade != nil && len(f.Upgrade) == 0 {
		t.Fatal("empty Upgrade")
	}
}

func isToken(b []byte) bool {
	for _, c := range b {
		if !tokenChar[c] {
			return false
		}
	}
	return true
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

func sameRequest(a, b *Request) bool {
	return bytes.Equal(a.Method, b.Method) && bytes.Equal(a.Target, b.Target) && a.Minor == b.Minor &&
		bytes.Equal(a.Host, b.Host) && a.Expect100 == b.Expect100 && a.HeadLen == b.HeadLen &&
		sameFraming(&a.framing, &b.framing) && sameHeaders(a.Headers, b.Headers)
}

func sameFraming(a, b *framing) bool {
	return a.ContentLength == b.ContentLength && a.Chunked == b.Chunked && a.KeepAlive == b.KeepAlive &&
		bytes.Equal(a.Upgrade, b.Upgrade) && (a.Upgrade == nil) == (b.Upgrade == nil)
}

func sameHeaders(a, b []Header) bool {
	return slices.EqualFunc(a, b, func(x, y Header) bool {
		return bytes.Equal(x.Name, y.Name) && bytes.Equal(x.Value, y.Value) && x.Kind == y.Kind && x.Hop == y.Hop
	})
}

// compareNetHTTPRequest checks that when net/http also accepts a head we accepted, it reads the same
// request line, Host, framing and persistence from it: a request the proxy forwards must mean the
// same to a backend.
func compareNetHTTPRequest(t *testing.T, head []byte, r *Request) {
	t.Helper()
	g, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
	if err != nil {
		return // stricter there; not our concern here
	}
	if g.Method != string(r.Method) || g.RequestURI != string(r.Target) || g.ProtoMinor != r.Minor {
		t.Fatalf("net/http reads %q %q 1.%d, we %q %q 1.%d", g.Method, g.RequestURI, g.ProtoMinor, r.Method, r.Target, r.Minor)
	}
	if r.Target[0] == '/' && g.Host != string(r.Host) {
		t.Fatalf("net/http reads Host %q, we %q", g.Host, r.Host)
	}
	switch {
	case r.Chunked:
		if g.ContentLength != -1 || !slices.Equal(g.TransferEncoding, []string{"chunked"}) {
			t.Fatalf("we read chunked, net/http CL %d TE %q", g.ContentLength, g.TransferEncoding)
		}
	case r.ContentLength >= 0:
		if g.ContentLength != r.ContentLength || len(g.TransferEncoding) != 0 {
			t.Fatalf("we read Content-Length %d, net/http CL %d TE %q", r.ContentLength, g.ContentLength, g.TransferEncoding)
		}
	default:
		if g.ContentLength != 0 || len(g.TransferEncoding) != 0 {
			t.Fatalf("we read no body, net/http CL %d TE %q", g.ContentLength, g.TransferEncoding)
		}
	}
	if g.Close == r.KeepAlive {
		t.Fatalf("net/http reads close %t, we keep-alive %t", g.Close, r.KeepAlive)
	}
}

func FuzzParseResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte, headMax uint16, fieldsMax uint8) {
		lim := Limits{HeaderBytesMax: int(headMax), HeadersMax: int(fieldsMax)}
		var r Response
		err := ParseResponse(in, &lim, &r)
		checkOutcome(t, err, 400, 501, 502)
		if err == nil {
			head := in[:r.HeadLen]
			if r.HeadLen < len("HTTP/1.1 200\r\n\r\n") || r.HeadLen > len(in) || !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
				t.Fatalf("HeadLen %d of %d bytes", r.HeadLen, len(in))
			}
			if lim.HeaderBytesMax > 0 && r.HeadLen > lim.HeaderBytesMax ||
				lim.HeadersMax > 0 && len(r.Headers) > lim.HeadersMax {
				t.Fatalf("over the limits: %d bytes, %d fields", r.HeadLen, len(r.Headers))
			}
			if r.Status < 100 || r.Status > 599 || r.Minor > 1 || !within(r.Reason, head) {
				t.Fatalf("status line %d %q 1.%d", r.Status, r.Reason, r.Minor)
			}
			checkFields(t, head, r.Headers, &r.framing)
			for _, m := range []string{"GET", "HEAD", "CONNECT", "POST"} {
				k := r.Body([]byte(m))
				if k == BodyChunked && !r.Chunked || k == BodyLength && r.ContentLength <= 0 {
					t.Fatalf("Body(%s) = %d with CL %d chunked %t", m, k, r.ContentLength, r.Chunked)
				}
			}
			var alone Response
			if err2 := ParseResponse(in[:r.HeadLen:r.HeadLen], &lim, &alone); err2 != nil {
				t.Fatalf("the head alone: %v", err2)
			}
			if alone.Status != r.Status || !bytes.Equal(alone.Reason, r.Reason) || alone.Minor != r.Minor ||
				alone.HeadLen != r.HeadLen || !sameFraming(&alone.framing, &r.framing) || !sameHeaders(alone.Headers, r.Headers) {
				t.Fatalf("the head alone parses differently:\n%+v\n%+v", r, alone)
			}
		}
		n := len(in)
		if err == nil {
			n = r.HeadLen
		}
		var p Response
		for _, i := range prefixes(n) {
			if perr := ParseResponse(in[:i], &lim, &p); perr != ErrIncomplete && perr != err {
				t.Fatalf("%d-byte prefix: %v; the whole input (%d bytes): %v", i, perr, len(in), err)
			}
		}
	})
}

func FuzzChunkedDecoder(f *testing.F) {
	f.Fuzz(func(t *testing.T, body, cuts []byte, trailerMax uint8) {
		tmax := int(trailerMax) // zero is the default, 8 KiB
		whole := decodeSplit(t, body, nil, tmax)
		checkOutcome(t, whole.err, 400)
		switch {
		case whole.err != nil:
			if whole.done {
				t.Fatal("done and failed")
			}
		case whole.done:
			if whole.consumed > len(body) {
				t.Fatalf("consumed %d of %d bytes", whole.consumed, len(body))
			}
			// The trailers are the bytes before the final CRLF, verbatim, within the bound.
			tr := whole.trailers
			if !bytes.HasSuffix(body[:whole.consumed], append(append([]byte(nil), tr...), '\r', '\n')) {
				t.Fatalf("trailers %q are not the end of the body %q", tr, body[:whole.consumed])
			}
			if limit := orDefault(tmax, 8<<10); len(tr) > limit {
				t.Fatalf("%d bytes of trailers over %d", len(tr), limit)
			}
			if len(tr) > 0 && !bytes.HasSuffix(tr, []byte("\r\n")) {
				t.Fatalf("trailers %q do not end in CRLF", tr)
			}
			checkStdlib(t, body[:whole.consumed], whole.data)
		default:
			if whole.consumed != len(body) {
				t.Fatalf("waiting for more with %d of %d bytes consumed", whole.consumed, len(body))
			}
		}

		// In pieces whose sizes come from cuts (byte by byte without cuts), the outcome is the same.
		sizes := []int{1}
		if len(cuts) > 0 {
			sizes = sizes[:0]
			for _, c := range cuts {
				sizes = append(sizes, int(c%64))
			}
			if !slices.ContainsFunc(sizes, func(s int) bool { return s > 0 }) {
				sizes = append(sizes, 1)
			}
		}
		split := decodeSplit(t, body, sizes, tmax)
		if split.err != whole.err || split.done != whole.done || split.consumed != whole.consumed ||
			!bytes.Equal(split.data, whole.data) || !bytes.Equal(split.trailers, whole.trailers) {
			t.Fatalf("in pieces %v: done %t err %v consumed %d data %q trailers %q;\n"+
				"whole: done %t err %v consumed %d data %q trailers %q", sizes,
				split.done, split.err, split.consumed, split.data, split.trailers,
				whole.done, whole.err, whole.consumed, whole.data, whole.trailers)
		}
	})
}

// orDefault returns v, or def when v is zero.
func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
