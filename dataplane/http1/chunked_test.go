package http1

import (
	"bytes"
	"io"
	"net/http/httputil"
	"strings"
	"testing"
)

// decodeResult is what decoding a body gives.
type decodeResult struct {
	data     []byte
	trailers []byte
	consumed int  // bytes of the input taken, up to the end of the body
	done     bool // the body ended
	err      error
}

// decodeSplit feeds in to a fresh decoder in pieces of the given sizes (cycled; the whole input
// when sizes is empty, a zero size meaning an empty call), the way a caller reading a stream does.
func decodeSplit(t testing.TB, in []byte, sizes []int, trailerMax int) decodeResult {
	t.Helper()
	d := ChunkedDecoder{TrailerBytesMax: trailerMax}
	var res decodeResult
	for k := 0; res.consumed < len(in) && !d.Done(); k++ {
		size := len(in) - res.consumed
		if len(sizes) > 0 {
			size = min(sizes[k%len(sizes)], size)
		}
		piece := in[res.consumed : res.consumed+size]
		if size == 0 {
			if n, data, err := d.Decode(piece); n != 0 || data != nil || err != nil {
				t.Fatalf("Decode(empty) = %d, %q, %v", n, data, err)
			}
			continue
		}
		for len(piece) > 0 && !d.Done() {
			n, data, err := d.Decode(piece)
			if n < 0 || n > len(piece) {
				t.Fatalf("Decode consumed %d of %d bytes", n, len(piece))
			}
			if len(data) > 0 && !within(data, piece[:n]) {
				t.Fatalf("data %q is not part of the bytes consumed", data)
			}
			res.data = append(res.data, data...)
			res.consumed += n
			piece = piece[n:]
			if err != nil {
				res.err = err
				if n2, data2, err2 := d.Decode(in[res.consumed:]); n2 != 0 || data2 != nil || err2 != err {
					t.Fatalf("after %v, Decode = %d, %q, %v", err, n2, data2, err2)
				}
				return res
			}
			if n == 0 && !d.Done() {
				t.Fatalf("Decode made no progress on %q", piece)
			}
		}
	}
	res.done = d.Done()
	res.trailers = append([]byte(nil), d.Trailers()...)
	if res.done {
		if n, data, err := d.Decode([]byte("more")); n != 0 || data != nil || err != nil {
			t.Fatalf("after the end, Decode = %d, %q, %v", n, data, err)
		}
	}
	return res
}

func TestChunkedDecoder(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		data     string
		trailers string
		rest     string // what follows the body
	}{
		{"one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello", "", ""},
		{"empty body", "0\r\n\r\n", "", "", ""},
		{"zeros", "000\r\n\r\n", "", "", ""},
		{"two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", "", ""},
		{"lower-case hex", "a\r\n0123456789\r\n0\r\n\r\n", "0123456789", "", ""},
		{"upper-case hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789", "", ""},
		{"mixed-case hex", "1A\r\n" + strings.Repeat("x", 26) + "\r\n0\r\n\r\n", strings.Repeat("x", 26), "", ""},
		{"leading zeros", "005\r\nhello\r\n0\r\n\r\n", "hello", "", ""},
		{"15 digits", "00000000000000F\r\n" + strings.Repeat("y", 15) + "\r\n0\r\n\r\n", strings.Repeat("y", 15), "", ""},
		{"data with CRLF inside", "4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n", "", ""},
		{"binary data", "3\r\n\x00\xff\n\r\n0\r\n\r\n", "\x00\xff\n", "", ""},
		{"extension", "5;name=value\r\nhello\r\n0\r\n\r\n", "hello", "", ""},
		{"extension without a value", "5;x\r\nhello\r\n0;y\r\n\r\n", "hello", "", ""},
		{"quoted extension", "5;a=\"b; c\";d\r\nhello\r\n0\r\n\r\n", "hello", "", ""},
		{"extension with BWS after the ';'", "5; a = b\r\nhello\r\n0\r\n\r\n", "hello", "", ""},
		{"empty extension", "5;\r\nhello\r\n0\r\n\r\n", "hello", "", ""},
		{"long extension", "5;" + strings.Repeat("e", chunkLineBytesMax-2) + "\r\nhello\r\n0\r\n\r\n", "hello", "", ""},
		{"trailer", "0\r\nX-Sum: 1\r\n\r\n", "", "X-Sum: 1\r\n", ""},
		{"trailers verbatim", "1\r\na\r\n0\r\nx-a:1\r\nX-B:  two  words \t\r\nC:\r\n\r\n", "a", "x-a:1\r\nX-B:  two  words \t\r\nC:\r\n", ""},
		{"trailer with obs-text", "0\r\nX: \xe9\r\n\r\n", "", "X: \xe9\r\n", ""},
		{"what follows is not read", "1\r\na\r\n0\r\n\r\n", "a", "", "GET / HTTP/1.1\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in + tt.rest)
			end := len(tt.in)
			whole := decodeSplit(t, in, nil, 0)
			if !whole.done || whole.err != nil || string(whole.data) != tt.data || string(whole.trailers) != tt.trailers ||
				whole.consumed != end {
				t.Fatalf("got done %t err %v data %q trailers %q consumed %d; want %q %q %d",
					whole.done, whole.err, whole.data, whole.trailers, whole.consumed, tt.data, tt.trailers, end)
			}
			// Byte by byte, and in every other piece size, it is the same.
			for size := 0; size <= 7; size++ {
				got := decodeSplit(t, in, []int{size, 1}, 0)
				if !got.done || got.err != nil || !bytes.Equal(got.data, whole.data) ||
					!bytes.Equal(got.trailers, whole.trailers) || got.consumed != whole.consumed {
					t.Fatalf("in pieces of %d: done %t err %v data %q trailers %q consumed %d",
						size, got.done, got.err, got.data, got.trailers, got.consumed)
				}
			}
			checkStdlib(t, in[:whole.consumed], whole.data)
		})
	}
}

// checkStdlib fails t unless net/http's chunked reader decodes body, which our decoder accepted, to data.
func checkStdlib(t testing.TB, body, data []byte) {
	t.Helper()
	std, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(body)))
	if err != nil {
		t.Fatalf("we accept %.300q, net/http rejects it: %v", body, err)
	}
	if !bytes.Equal(std, data) {
		t.Fatalf("%.300q: we decode %.300q, net/http %.300q", body, data, std)
	}
}

func TestChunkedDecoderRejects(t *testing.T) {
	const (
		size     = "malformed chunk size"
		ws       = "whitespace after a chunk size"
		overflow = "chunk size too large"
		crlf     = "bare CR or LF in chunked framing"
		dataEnd  = "chunk data not followed by CRLF"
		ext      = "malformed chunk extension"
		trailer  = "malformed trailer field"
	)
	// Each of these chunks is 4007 bytes and leaves 4002+2-16-2 = 3986 bytes over the allowance:
	// the fifth size line goes over the budget.
	manyExt := strings.Repeat("1;"+strings.Repeat("e", 4000)+"\r\nx\r\n", 5) + "0\r\n\r\n"
	tests := []struct {
		name       string
		in         string
		trailerMax int
		reason     string
		at         int // where the error is found: bytes consumed before it
	}{
		{"empty size", "\r\n", 0, size, 0},
		{"0x prefix", "0x5\r\nhello\r\n0\r\n\r\n", 0, size, 1},
		{"minus", "-5\r\n", 0, size, 0},
		{"plus", "+5\r\n", 0, size, 0},
		{"not hex", "g\r\n", 0, size, 0},
		{"hex then junk", "5g\r\n", 0, size, 1},
		{"leading space", " 5\r\n", 0, size, 0},
		{"SP after the size", "5 \r\nhello\r\n0\r\n\r\n", 0, ws, 1},
		{"HTAB after the size", "5\t\r\nhello\r\n0\r\n\r\n", 0, ws, 1},
		{"SP before ';'", "5 ;x\r\nhello\r\n0\r\n\r\n", 0, ws, 1},
		{"HTAB before ';'", "5\t;x\r\nhello\r\n0\r\n\r\n", 0, ws, 1},
		{"16 digits", "1000000000000000\r\n", 0, overflow, 15},
		{"16 zeros", "0000000000000000\r\n\r\n", 0, overflow, 15},
		{"huge", "ffffffffffffffffffff\r\n", 0, overflow, 15},
		{"bare LF after the size", "5\nhello\r\n0\r\n\r\n", 0, crlf, 1},
		{"bare CR after the size", "5\rhello\r\n0\r\n\r\n", 0, crlf, 2},
		{"bare LF after an extension", "5;x\nhello\r\n0\r\n\r\n", 0, crlf, 3},
		{"bare CR in an extension", "5;x\ry\r\nhello\r\n0\r\n\r\n", 0, crlf, 4},
		{"NUL in an extension", "5;x\x00\r\nhello\r\n0\r\n\r\n", 0, ext, 3},
		{"control in an extension", "5;\x01\r\n", 0, ext, 2},
		{"extension too long", "5;" + strings.Repeat("e", chunkLineBytesMax-1) + "\r\n", 0, "chunk-size line too long", chunkLineBytesMax},
		{"data too long", "5\r\nhello!\r\n0\r\n\r\n", 0, dataEnd, 8},
		{"data too short", "5\r\nhell\r\n0\r\n\r\n", 0, dataEnd, 8},
		{"bare LF after data", "5\r\nhello\n0\r\n\r\n", 0, dataEnd, 8},
		{"bare CR after data", "5\r\nhello\r0\r\n\r\n", 0, dataEnd, 9},
		{"bare LF ending the body", "0\r\n\n", 0, crlf, 3},
		{"bare CR ending the body", "0\r\n\rX", 0, crlf, 4},
		{"bare LF ending a trailer", "0\r\nX: 1\n\r\n", 0, crlf, 7},
		{"bare CR ending a trailer", "0\r\nX: 1\rY\r\n\r\n", 0, crlf, 8},
		{"bare CR inside a trailer", "0\r\nX: 1\r2\r\n\r\n", 0, crlf, 8},
		{"trailer obs-fold", "0\r\nX: 1\r\n 2\r\n\r\n", 0, trailer, 9},
		{"trailer starting with SP", "0\r\n X: 1\r\n\r\n", 0, trailer, 3},
		{"trailer SP before colon", "0\r\nX : 1\r\n\r\n", 0, trailer, 4},
		{"trailer without colon", "0\r\nX\r\n\r\n", 0, trailer, 4},
		{"trailer empty name", "0\r\n: 1\r\n\r\n", 0, trailer, 3},
		{"trailer NUL in value", "0\r\nX: \x00\r\n\r\n", 0, trailer, 6},
		{"trailer control in value", "0\r\nX: \x1b\r\n\r\n", 0, trailer, 6},
		{"trailer section too large", "0\r\nX-Long: 12\r\n\r\n", 10, "trailer section too large", 13},
		{"too much framing for the data", manyExt, 0, "chunked framing too large", 4*4007 + 4003},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			whole := decodeSplit(t, in, nil, tt.trailerMax)
			checkErr(t, whole.err, 400, tt.reason)
			if whole.consumed != tt.at {
				t.Fatalf("failed after %d bytes, want %d", whole.consumed, tt.at)
			}
			for size := 1; size <= 3; size++ {
				got := decodeSplit(t, in, []int{size}, tt.trailerMax)
				if got.err != whole.err || got.consumed != whole.consumed || !bytes.Equal(got.data, whole.data) {
					t.Fatalf("in pieces of %d: err %v after %d bytes, data %q", size, got.err, got.consumed, got.data)
				}
			}
		})
	}
}

func TestChunkedTrailerLimit(t *testing.T) {
	const body = "0\r\nX-Long: 12\r\n\r\n" // a trailer section of 12 bytes
	for _, tt := range []struct {
		max int
		ok  bool
	}{{11, false}, {12, true}, {0, true}} {
		got := decodeSplit(t, []byte(body), nil, tt.max)
		if got.done != tt.ok {
			t.Errorf("TrailerBytesMax %d: done %t, err %v", tt.max, got.done, got.err)
		}
	}
	// The default is 8 KiB.
	long := "0\r\nX: " + strings.Repeat("v", 8<<10) + "\r\n\r\n"
	got := decodeSplit(t, []byte(long), nil, 0)
	checkErr(t, got.err, 400, "trailer section too large")
}

// TestChunkedOverhead pins the framing budget: tiny chunks are fine, long extensions on them are not.
func TestChunkedOverhead(t *testing.T) {
	var tiny bytes.Buffer
	for range 100000 {
		tiny.WriteString("1\r\nx\r\n")
	}
	tiny.WriteString("0\r\n\r\n")
	if got := decodeSplit(t, tiny.Bytes(), nil, 0); !got.done || len(got.data) != 100000 {
		t.Fatalf("one-byte chunks: done %t err %v", got.done, got.err)
	}
	// Each "1;<ext>\r\nx\r\n" leaves len(ext)+3+2-16-2 bytes over the allowance.
	ext := strings.Repeat("e", 1000)
	perChunk := len("1;"+ext) + 2 - 16 - 2
	n := chunkOverheadBytesMax / perChunk // within the budget
	body := strings.Repeat("1;"+ext+"\r\nx\r\n", n) + "0\r\n\r\n"
	if got := decodeSplit(t, []byte(body), nil, 0); !got.done {
		t.Fatalf("%d chunks with 1000-byte extensions: %v", n, got.err)
	}
	checkStdlib(t, []byte(body), bytes.Repeat([]byte("x"), n))
	body = strings.Repeat("1;"+ext+"\r\nx\r\n", n+1) + "0\r\n\r\n"
	got := decodeSplit(t, []byte(body), nil, 0)
	checkErr(t, got.err, 400, "chunked framing too large")
	if _, err := io.ReadAll(httputil.NewChunkedReader(strings.NewReader(body))); err == nil {
		t.Fatal("net/http accepts what we reject as too much framing: the budgets drifted apart")
	}
	// The allowance does not carry over: a large chunk does not pay for the extensions of later ones.
	body = "800;" + strings.Repeat("e", 4000) + "\r\n" + strings.Repeat("d", 0x800) + "\r\n" + body
	if got := decodeSplit(t, []byte(body), nil, 0); got.err == nil {
		t.Fatalf("the allowance carried over: a body with too much framing at its end was accepted")
	}
}

func TestChunkedDecoderReset(t *testing.T) {
	var d ChunkedDecoder
	if _, _, err := d.Decode([]byte("z")); err == nil {
		t.Fatal("accepted z")
	}
	if _, _, err := d.Decode([]byte("0\r\n\r\n")); err == nil {
		t.Fatal("an error is not final")
	}
	d.Reset()
	in := []byte("0\r\nA: 1\r\n\r\n")
	for off := 0; off < len(in); {
		n, _, err := d.Decode(in[off:])
		if err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if !d.Done() || string(d.Trailers()) != "A: 1\r\n" {
		t.Fatalf("done %t trailers %q", d.Done(), d.Trailers())
	}
	d.Reset()
	if d.Done() || len(d.Trailers()) != 0 {
		t.Fatalf("after Reset: done %t trailers %q", d.Done(), d.Trailers())
	}
}

func TestAppendChunkHeader(t *testing.T) {
	tests := []struct {
		n    int
		want string
	}{
		{1, "1\r\n"},
		{10, "a\r\n"},
		{16, "10\r\n"},
		{255, "ff\r\n"},
		{4096, "1000\r\n"},
		{1<<31 - 1, "7fffffff\r\n"},
	}
	for _, tt := range tests {
		got := AppendChunkHeader([]byte("x"), tt.n)
		if string(got) != "x"+tt.want {
			t.Errorf("AppendChunkHeader(%d) = %q, want %q", tt.n, got[1:], tt.want)
		}
	}
	// What it writes, the decoder reads.
	var b []byte
	var want []byte
	for _, n := range []int{1, 15, 16, 300} {
		data := bytes.Repeat([]byte{byte(n)}, n)
		b = AppendChunkHeader(b, n)
		b = append(append(b, data...), "\r\n"...)
		want = append(want, data...)
	}
	b = append(b, "0\r\n\r\n"...)
	got := decodeSplit(t, b, nil, 0)
	if !got.done || !bytes.Equal(got.data, want) {
		t.Fatalf("round trip: done %t err %v", got.done, got.err)
	}
}

func TestAllocsChunkedDecoder(t *testing.T) {
	in := []byte("5;ext=1\r\nhello\r\n1A\r\n" + strings.Repeat("z", 26) + "\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\n")
	d := ChunkedDecoder{}
	var sum int
	allocs := testing.AllocsPerRun(100, func() {
		d.Reset()
		for off := 0; !d.Done(); {
			n, data, err := d.Decode(in[off:])
			if err != nil {
				panic(err)
			}
			sum += len(data)
			off += n
		}
		var bad ChunkedDecoder
		if _, _, err := bad.Decode([]byte("5 \r\n")); err == nil {
			panic("accepted whitespace")
		}
	})
	if allocs != 0 {
		t.Fatalf("ChunkedDecoder: %v allocations per run, want 0", allocs)
	}
	if sum == 0 {
		t.Fatal("no data")
	}
}

func BenchmarkChunkedDecoder(b *testing.B) {
	var body bytes.Buffer
	for range 64 {
		body.Write(AppendChunkHeader(nil, 1000))
		body.Write(bytes.Repeat([]byte("d"), 1000))
		body.WriteString("\r\n")
	}
	body.WriteString("0\r\n\r\n")
	in := body.Bytes()
	var d ChunkedDecoder
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		d.Reset()
		for off := 0; !d.Done(); {
			n, _, err := d.Decode(in[off:])
			if err != nil {
				b.Fatal(err)
			}
			off += n
		}
	}
}

// TestReframe: a chunked body, fed in pieces, comes out framed anew (extensions dropped, one chunk
// per piece of data, trailers kept) or as its data alone; what follows the body stays in the buffer;
// a malformed body keeps what was decoded before the error, and the bytes of the call that failed
// stay in the buffer.
func TestReframe(t *testing.T) {
	body := "5;ext=1\r\nhello\r\n1A\r\n" + strings.Repeat("z", 26) + "\r\n0\r\nX-Sum: 1\r\n\r\n"
	tests := []struct {
		what    string
		in      string
		pieces  int // bytes fed at a time; 0: all at once
		chunked bool
		want    string
		data    int
		left    string // in the buffer afterwards
		err     bool
	}{
		{what: "whole", in: body + "GET", chunked: true,
			want: "5\r\nhello\r\n1a\r\n" + strings.Repeat("z", 26) + "\r\n0\r\nX-Sum: 1\r\n\r\n", data: 31, left: "GET"},
		{what: "in pieces of 7", in: body, pieces: 7, chunked: true,
			want: "5\r\nhello\r\n1\r\nz\r\n7\r\nzzzzzzz\r\n7\r\nzzzzzzz\r\n7\r\nzzzzzzz\r\n4\r\nzzzz\r\n0\r\nX-Sum: 1\r\n\r\n", data: 31},
		{what: "raw", in: body + "GET", chunked: false, want: "hello" + strings.Repeat("z", 26), data: 31, left: "GET"},
		{what: "malformed", in: "5\r\nhello\r\nzz\r\n", chunked: true, want: "5\r\nhello\r\n", data: 5, left: "\r\nzz\r\n", err: true},
	}
	for _, tt := range tests {
		var d ChunkedDecoder
		in := Buffer{Buf: make([]byte, 256)}
		var out []byte
		var data int
		var err error
		for src := tt.in; err == nil && !d.Done(); {
			k := len(src)
			if tt.pieces > 0 {
				k = min(k, tt.pieces)
			}
			in.W += copy(in.Space(), src[:k])
			src = src[k:]
			var n int
			out, n, err = d.Reframe(out, &in, tt.chunked)
			data += n
			if k == 0 && !d.Done() && err == nil {
				t.Fatalf("%s: the body did not end", tt.what)
			}
		}
		if (err != nil) != tt.err || string(out) != tt.want || data != tt.data || string(in.Buffered()) != tt.left {
			t.Errorf("%s: %q, %d bytes of data, %q left, error %v; want %q, %d, %q, error %v",
				tt.what, out, data, in.Buffered(), err, tt.want, tt.data, tt.left, tt.err)
		}
	}
}

func TestAllocsReframe(t *testing.T) {
	body := []byte("5;ext=1\r\nhello\r\n1A\r\n" + strings.Repeat("z", 26) + "\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\n")
	var d ChunkedDecoder
	in := Buffer{Buf: make([]byte, len(body))}
	dst := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		d.Reset()
		in.R, in.W = 0, copy(in.Buf, body)
		var err error
		if dst, _, err = d.Reframe(dst[:0], &in, true); err != nil || !d.Done() {
			panic(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Reframe: %v allocations per run, want 0", allocs)
	}
}

// BenchmarkReframe re-frames a body of three chunks, 1 KiB of data, with a trailer.
func BenchmarkReframe(b *testing.B) {
	body := []byte("5;ext=1\r\nhello\r\n400\r\n" + strings.Repeat("z", 1024) + "\r\n1A\r\n" + strings.Repeat("z", 26) + "\r\n0\r\nX-Sum: 1\r\n\r\n")
	var d ChunkedDecoder
	in := Buffer{Buf: make([]byte, len(body))}
	dst := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		d.Reset()
		in.R, in.W = 0, copy(in.Buf, body)
		dst, _, _ = d.Reframe(dst[:0], &in, true)
	}
}
