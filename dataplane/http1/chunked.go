package http1

// Chunked body rejections.
var (
	errChunkSize     = bad("malformed chunk size")
	errChunkSizeWS   = bad("whitespace after a chunk size")
	errChunkOverflow = bad("chunk size too large")
	errChunkExt      = bad("malformed chunk extension")
	errChunkLineLong = bad("chunk-size line too long")
	errChunkLineEnd  = bad("bare CR or LF in chunked framing: its lines end in CRLF")
	errChunkDataEnd  = bad("chunk data not followed by CRLF")
	errChunkOverhead = bad("chunked framing too large for the data it carries")
	errTrailer       = bad("malformed trailer field")
	errTrailerLarge  = bad("trailer section too large")
)

const (
	chunkSizeDigitsMax = 15 // 16^15 - 1 bytes is more than any body, and cannot overflow int64
	// chunkLineBytesMax bounds a chunk-size line, extensions included, without its CRLF. net/http
	// reads the line with its CRLF into a 4 KiB buffer: we accept no line that it rejects.
	chunkLineBytesMax = 4094
	// Framing beyond 16 bytes per chunk and twice the chunk's data, net of what earlier chunks left
	// unused, may add up to chunkOverheadBytesMax: it bounds the work a sender can cause per byte of
	// data with tiny chunks and long extensions. It is the budget of net/http (CVE-2023-39326), so
	// that both sides reject the same bodies.
	chunkOverheadBytesMax = 16 << 10
	chunkOverheadPerChunk = 16
)

type chunkState uint8

const (
	chSize chunkState = iota
	chExt
	chSizeLF
	chData
	chDataCR
	chDataLF
	chTrailerStart
	chTrailerLine
	chTrailerLF
	chEndLF
	chDone
)

// ChunkedDecoder decodes a chunked body (RFC 9112 §7.1) as it streams in, without copying its data.
// The zero value is ready for a body whose trailer section may be at most TrailerBytesMax bytes.
//
// It is stricter than RFC 9112 where a laxer reading could differ from a backend's: a chunk size has
// at most 15 hex digits, no whitespace may follow it (not even before a ';', which RFC 9112 writes
// as BWS and net/http rejects), a chunk-size line is at most chunkLineBytesMax bytes, and the framing
// of a body is bounded relative to its data (chunkOverheadBytesMax).
type ChunkedDecoder struct {
	// TrailerBytesMax bounds the trailer section. Zero means 8 KiB.
	TrailerBytesMax int

	state    chunkState
	digits   int
	lineLen  int   // bytes of the current chunk-size line so far, without CRLF
	left     int64 // data bytes left in the current chunk
	overhead int64 // framing bytes over the allowance so far, as net/http counts them
	trailer  []byte
	line     int // start of the current trailer line in trailer
	colon    bool
	err      error // the first error; every later call returns it
}

// Reset makes d ready for a new body, keeping its trailer buffer.
func (d *ChunkedDecoder) Reset() {
	*d = ChunkedDecoder{TrailerBytesMax: d.TrailerBytesMax, trailer: d.trailer[:0]}
}

// Done reports whether the whole body, trailer section included, has been decoded.
func (d *ChunkedDecoder) Done() bool { return d.state == chDone }

// Trailers returns the trailer field lines, each ending in CRLF, without the empty line that ends
// them. It is valid until the next Reset.
func (d *ChunkedDecoder) Trailers() []byte { return d.trailer }

// Decode consumes framing from in until it reaches chunk data, the end of the body, or the end of in.
// It returns the number of bytes of in consumed, and the chunk data among them (a subslice of in,
// possibly empty), which the caller handles before calling again with the rest. Unless it has
// reached the end of the body or fails, it consumes at least one byte of a non-empty in. An error is
// final: every later call returns it, until Reset.
func (d *ChunkedDecoder) Decode(in []byte) (n int, data []byte, err error) {
	if d.err != nil {
		return 0, nil, d.err
	}
	for n < len(in) {
		c := in[n]
		switch d.state {
		case chSize:
			v := unhex(c)
			switch {
			case v >= 0:
				if d.digits == chunkSizeDigitsMax {
					return n, nil, d.fail(errChunkOverflow)
				}
				d.left = d.left<<4 | int64(v)
				d.digits++
			case d.digits == 0:
				return n, nil, d.fail(errChunkSize)
			case c == '\r':
				d.state = chSizeLF
			case c == ';':
				d.state = chExt
			case c == ' ' || c == '\t':
				return n, nil, d.fail(errChunkSizeWS)
			case c == '\n':
				return n, nil, d.fail(errChunkLineEnd)
			default:
				return n, nil, d.fail(errChunkSize)
			}
			d.lineLen++
			n++
		case chExt:
			// chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ), after the first ';'.
			// Extensions are dropped, not forwarded, so any field-value bytes will do.
			switch {
			case c == '\r':
				d.state = chSizeLF
			case c == '\n':
				return n, nil, d.fail(errChunkLineEnd)
			case !valueChar[c]:
				return n, nil, d.fail(errChunkExt)
			default:
				d.lineLen++
				if d.lineLen > chunkLineBytesMax {
					return n, nil, d.fail(errChunkLineLong)
				}
			}
			n++
		case chSizeLF:
			if c != '\n' {
				return n, nil, d.fail(errChunkLineEnd)
			}
			n++
			d.overhead += int64(d.lineLen) + 2 - chunkOverheadPerChunk - 2*d.left
			d.overhead = max(d.overhead, 0)
			if d.overhead > chunkOverheadBytesMax {
				return n - 1, nil, d.fail(errChunkOverhead)
			}
			d.digits, d.lineLen = 0, 0
			if d.left == 0 {
				d.state = chTrailerStart
				d.line = len(d.trailer)
				continue
			}
			d.state = chData
			return n, nil, nil
		case chData:
			k := int64(len(in) - n)
			if k > d.left {
				k = d.left
			}
			data = in[n : n+int(k)]
			n += int(k)
			d.left -= k
			if d.left == 0 {
				d.state = chDataCR
			}
			return n, data, nil
		case chDataCR:
			if c != '\r' {
				return n, nil, d.fail(errChunkDataEnd)
			}
			d.state = chDataLF
			n++
		case chDataLF:
			if c != '\n' {
				return n, nil, d.fail(errChunkDataEnd)
			}
			d.state = chSize
			n++
		case chTrailerStart:
			switch {
			case c == '\r':
				d.state = chEndLF
			case tokenChar[c]:
				d.state, d.colon = chTrailerLine, false
				if err := d.keep(c); err != nil {
					return n, nil, d.fail(err)
				}
			case c == '\n':
				return n, nil, d.fail(errChunkLineEnd)
			default:
				return n, nil, d.fail(errTrailer)
			}
			n++
		case chTrailerLine:
			switch {
			case c == '\r':
				if !d.colon {
					return n, nil, d.fail(errTrailer)
				}
				d.state = chTrailerLF
			case c == '\n':
				return n, nil, d.fail(errChunkLineEnd)
			case !d.colon && c == ':':
				d.colon = true
			case !d.colon && !tokenChar[c]:
				return n, nil, d.fail(errTrailer)
			case d.colon && !valueChar[c]:
				return n, nil, d.fail(errTrailer)
			}
			if err := d.keep(c); err != nil {
				return n, nil, d.fail(err)
			}
			n++
		case chTrailerLF:
			if c != '\n' {
				return n, nil, d.fail(errChunkLineEnd)
			}
			if err := d.keep(c); err != nil {
				return n, nil, d.fail(err)
			}
			d.state = chTrailerStart
			d.line = len(d.trailer)
			n++
		case chEndLF:
			if c != '\n' {
				return n, nil, d.fail(errChunkLineEnd)
			}
			d.state = chDone
			return n + 1, nil, nil
		case chDone:
			return n, nil, nil
		}
	}
	return n, nil, nil
}

func (d *ChunkedDecoder) fail(err error) error {
	d.err = err
	return err
}

func (d *ChunkedDecoder) keep(c byte) error {
	limit := d.TrailerBytesMax
	if limit == 0 {
		limit = 8 << 10
	}
	if len(d.trailer) >= limit {
		return errTrailerLarge
	}
	d.trailer = append(d.trailer, c)
	return nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// Reframe decodes the chunked body bytes buffered in in, consuming them, and appends the body to
// dst. When chunked, it is framed anew: a chunk of our own for each piece of data that Decode
// returns (extensions dropped), then, once the body ends, the last chunk, the trailers and the
// empty line; when not, the data alone, for a receiver that takes no chunked framing (HTTP/1.0).
// It stops at the end of the body or of in, and returns dst and the bytes of data it appended. On
// an error, what was decoded before it is appended. It allocates only to grow dst.
func (d *ChunkedDecoder) Reframe(dst []byte, in *Buffer, chunked bool) (out []byte, data int, err error) {
	for in.Len() > 0 && !d.Done() {
		n, b, err := d.Decode(in.Buffered())
		if err != nil {
			return dst, data, err
		}
		if len(b) > 0 {
			data += len(b)
			if chunked {
				dst = AppendChunkHeader(dst, len(b))
			}
			dst = append(dst, b...)
			if chunked {
				dst = append(dst, '\r', '\n')
			}
		}
		in.Consume(n)
	}
	if d.Done() && chunked {
		dst = append(dst, "0\r\n"...)
		dst = append(dst, d.trailer...)
		dst = append(dst, '\r', '\n')
	}
	return dst, data, nil
}

// AppendChunkHeader appends the size line of a chunk of n > 0 bytes.
func AppendChunkHeader(b []byte, n int) []byte {
	const hexdigits = "0123456789abcdef"
	var tmp [16]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = hexdigits[n&0xf]
		n >>= 4
		if n == 0 {
			break
		}
	}
	b = append(b, tmp[i:]...)
	return append(b, '\r', '\n')
}
