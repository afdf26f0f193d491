package http1

import "bytes"

// Response is a parsed response head.
type Response struct {
	Minor   int
	Status  int
	Reason  []byte
	Headers []Header
	framing
	// HeadLen is the number of bytes of the head, its final CRLF included.
	HeadLen int
}

// ParseResponse parses the response head at the start of b into r, reusing r.Headers' array. Every
// *Error it returns has Status 502 or means that the proxy must answer 502. Like ParseRequest, its
// outcome depends only on the bytes it needs, and it looks at no more than HeaderBytesMax of them.
func ParseResponse(b []byte, lim *Limits, r *Response) error {
	r.Headers = r.Headers[:0]
	r.Minor, r.Status, r.HeadLen = 0, 0, 0
	r.Reason, r.framing = nil, framing{ContentLength: -1}
	view, capped := capHead(b, lim)
	err := parseResponse(view, lim, r)
	if err == ErrIncomplete && capped {
		return errRespHeadTooLong
	}
	return err
}

func parseResponse(b []byte, lim *Limits, r *Response) error {
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		return ErrIncomplete
	}
	if nl == 0 || b[nl-1] != '\r' {
		return errBareLF
	}
	line := b[:nl-1]
	// status-line = HTTP-version SP status-code SP [ reason-phrase ]; a missing last SP is tolerated.
	if len(line) < 12 || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return errStatusLine
	}
	minor, err := parseVersion(line[:8])
	if err != nil {
		return errStatusLine
	}
	status := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return errStatusLine
		}
		status = status*10 + int(c-'0')
	}
	// RFC 9110 §15: codes outside 100-599 are invalid; a client treats them as 5xx.
	if status < 100 || status > 599 {
		return errStatusCode
	}
	if len(line) > 12 {
		for _, c := range line[13:] {
			if !valueChar[c] {
				return errStatusLine
			}
		}
		r.Reason = line[13:]
	}
	r.Minor, r.Status = minor, status
	n, err := parseFields(b, nl+1, lim, &r.Headers, errRespTooMany)
	if err != nil {
		return err
	}
	r.HeadLen = n
	return r.framing.interpret(r.Headers, minor, true)
}

// BodyKind says how a response body is delimited.
type BodyKind uint8

const (
	BodyNone    BodyKind = iota // no body: HEAD, 1xx, 204, 304, or Content-Length: 0
	BodyLength                  // Content-Length bytes
	BodyChunked                 // chunked
	BodyClose                   // everything until the backend closes the connection
)

// Body says how the body of r, the response to a request of method, is delimited (RFC 9112 §6.3).
func (r *Response) Body(method []byte) BodyKind {
	switch {
	case r.Status < 200, r.Status == 204, r.Status == 304, string(method) == "HEAD":
		return BodyNone
	case string(method) == "CONNECT" && r.Status < 300:
		return BodyClose
	case r.Chunked:
		return BodyChunked
	case r.ContentLength == 0:
		return BodyNone
	case r.ContentLength > 0:
		return BodyLength
	}
	return BodyClose
}
