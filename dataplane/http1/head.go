package http1

import (
	"bytes"
	"errors"
	"strconv"
)

// ErrIncomplete says that the buffer holds the beginning of a head, within the limits, but not its
// end: read more and parse again.
var ErrIncomplete = errors.New("http1: incomplete head")

// Error is a message that cannot be accepted: Status is what a server answers (400, 414, 417, 431,
// 501, 505), Reason says what was wrong. On a response, any Error means 502 to the proxy's client.
type Error struct {
	Status int
	Reason string
}

func (e *Error) Error() string { return "http1: " + strconv.Itoa(e.Status) + ": " + e.Reason }

func bad(reason string) *Error { return &Error{Status: 400, Reason: reason} }

// The rejections are values made once: parsing allocates nothing, also when it fails.
var (
	errBareLF          = bad("bare LF in the head")
	errBareCR          = bad("bare CR in the head")
	errMethod          = bad("malformed method")
	errTarget          = bad("malformed request target")
	errVersion         = bad("malformed HTTP version")
	errVersionNotSupp  = &Error{Status: 505, Reason: "HTTP version not supported: only HTTP/1.0 and HTTP/1.1"}
	errLineTooLong     = &Error{Status: 414, Reason: "request line too long"}
	errHeadTooLarge    = &Error{Status: 431, Reason: "request head too large"}
	errTooManyHeaders  = &Error{Status: 431, Reason: "too many header fields"}
	errObsFold         = bad("obsolete line folding (obs-fold) in a header field")
	errSpaceBeforeCol  = bad("whitespace between a field name and the colon")
	errFieldName       = bad("malformed header field name")
	errFieldValue      = bad("NUL, CR, LF or a control character in a header field value")
	errNoHost          = bad("missing Host header")
	errManyHost        = bad("more than one Host header")
	errHostValue       = bad("malformed Host header")
	errScheme          = bad("request target: an absolute-form scheme other than http or https")
	errAuthority       = bad("request target: malformed authority (host and port only)")
	errCLInvalid       = bad("invalid Content-Length")
	errCLDiffer        = bad("differing Content-Length values")
	errCLAndTE         = bad("both Content-Length and Transfer-Encoding")
	errTENotChunked    = bad("Transfer-Encoding whose final coding is not chunked")
	errTEChunkedTwice  = bad("chunked applied more than once")
	errTEHTTP10        = bad("Transfer-Encoding in an HTTP/1.0 message")
	errTENotSupp       = &Error{Status: 501, Reason: "transfer coding not supported: only chunked"}
	errConnection      = bad("malformed Connection header")
	errConnectionCL    = bad("Connection names Content-Length, which the next hop needs")
	errConnectionHost  = bad("Connection names Host, which the next hop needs")
	errExpect          = &Error{Status: 417, Reason: "unsupported expectation: only 100-continue"}
	errStatusLine      = bad("malformed status line")
	errStatusCode      = bad("status code outside 100-599")
	errRespHeadTooLong = &Error{Status: 502, Reason: "response head too large"}
	errRespTooMany     = &Error{Status: 502, Reason: "too many response header fields"}
)

// Limits bound a head. A zero field is no bound of that kind, which only tests should rely on.
type Limits struct {
	// RequestLineBytesMax bounds the request line without its CRLF (414 past it).
	RequestLineBytesMax int
	// HeaderBytesMax bounds the whole head with its CRLFs, empty lines before a request line
	// included (431 past it). A parser never looks past it.
	HeaderBytesMax int
	// HeadersMax bounds the number of header fields (431 past it).
	HeadersMax int
}

// Kind names the header fields that the proxy treats specially. Everything else is KindOther.
type Kind uint8

const (
	KindOther Kind = iota
	KindHost
	KindContentLength
	KindTransferEncoding
	KindConnection
	KindKeepAlive
	KindProxyConnection
	KindTE
	KindUpgrade
	KindExpect
	KindXForwardedFor
	KindXForwardedProto
	KindXForwardedHost
	KindForwarded
)

// Header is one field line of a head. Name and Value point into the parsed buffer; Value has no
// leading or trailing whitespace.
type Header struct {
	Name, Value []byte
	Kind        Kind
	// Hop says the field is hop-by-hop: Connection, Keep-Alive, Proxy-Connection, TE,
	// Transfer-Encoding, Upgrade, and every field that a Connection header names.
	Hop bool
}

func classify(name []byte) Kind {
	switch len(name) {
	case 2:
		if EqualFold(name, "te") {
			return KindTE
		}
	case 4:
		if EqualFold(name, "host") {
			return KindHost
		}
	case 6:
		if EqualFold(name, "expect") {
			return KindExpect
		}
	case 7:
		if EqualFold(name, "upgrade") {
			return KindUpgrade
		}
	case 9:
		if EqualFold(name, "forwarded") {
			return KindForwarded
		}
	case 10:
		if EqualFold(name, "connection") {
			return KindConnection
		}
		if EqualFold(name, "keep-alive") {
			return KindKeepAlive
		}
	case 14:
		if EqualFold(name, "content-length") {
			return KindContentLength
		}
	case 15:
		if EqualFold(name, "x-forwarded-for") {
			return KindXForwardedFor
		}
	case 16:
		if EqualFold(name, "x-forwarded-host") {
			return KindXForwardedHost
		}
		if EqualFold(name, "proxy-connection") {
			return KindProxyConnection
		}
	case 17:
		if EqualFold(name, "transfer-encoding") {
			return KindTransferEncoding
		}
		if EqualFold(name, "x-forwarded-proto") {
			return KindXForwardedProto
		}
	}
	return KindOther
}

// framing is what the header fields of a head say about its body and its connection.
type framing struct {
	ContentLength int64 // -1 when there is no Content-Length
	Chunked       bool
	KeepAlive     bool   // the sender keeps the connection open after this message
	Upgrade       []byte // the Upgrade value when Connection lists "upgrade", else nil
}

// Request is a parsed request head.
type Request struct {
	Method, Target []byte
	Minor          int // 0 for HTTP/1.0, 1 for HTTP/1.1
	Headers        []Header
	Host           []byte
	Expect100      bool
	framing
	// HeadLen is the number of bytes of the head, its final CRLF included.
	HeadLen int
}

// HasBody reports whether a body follows the head.
func (r *Request) HasBody() bool { return r.Chunked || r.ContentLength > 0 }

// ParseRequest parses the request head at the start of b into r, reusing r.Headers' array.
//
// The outcome depends only on the bytes it needs: when a prefix of b gives an *Error, so does b, and
// the same one. Limits are decided in byte order: once b holds HeaderBytesMax bytes without the end
// of the head, the answer is 431, whatever follows.
func ParseRequest(b []byte, lim *Limits, r *Request) error {
	r.Headers = r.Headers[:0]
	r.Method, r.Target, r.Minor, r.HeadLen = nil, nil, 0, 0
	r.Host, r.Expect100, r.framing = nil, false, framing{ContentLength: -1}
	view, capped := capHead(b, lim)
	err := parseRequest(view, lim, r)
	if err == ErrIncomplete && capped {
		return errHeadTooLarge
	}
	return err
}

// capHead cuts b to HeaderBytesMax bytes, so that nothing past the limit is ever looked at. capped
// says that a head not complete within the result is over the limit.
func capHead(b []byte, lim *Limits) (view []byte, capped bool) {
	if lim.HeaderBytesMax > 0 && len(b) >= lim.HeaderBytesMax {
		return b[:lim.HeaderBytesMax], true
	}
	return b, false
}

func parseRequest(b []byte, lim *Limits, r *Request) error {
	// RFC 9112 §2.2: a server SHOULD ignore empty lines received before the request line.
	start := 0
	for start+1 < len(b) && b[start] == '\r' && b[start+1] == '\n' {
		start += 2
	}
	if start < len(b) && b[start] == '\n' {
		return errBareLF
	}
	nl := bytes.IndexByte(b[start:], '\n')
	// The line may take RequestLineBytesMax bytes and its CR: one byte more without an LF is 414.
	if lim.RequestLineBytesMax > 0 && (nl < 0 && len(b)-start > lim.RequestLineBytesMax+1 ||
		nl > lim.RequestLineBytesMax+1) {
		return errLineTooLong
	}
	if nl < 0 {
		return ErrIncomplete
	}
	line := b[start : start+nl]
	if len(line) == 0 || line[len(line)-1] != '\r' {
		return errBareLF
	}
	line = line[:len(line)-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return errBareCR
	}
	if err := parseRequestLine(line, r); err != nil {
		return err
	}
	n, err := parseFields(b, start+nl+1, lim, &r.Headers, errTooManyHeaders)
	if err != nil {
		return err
	}
	r.HeadLen = n
	return r.interpret()
}

func parseRequestLine(line []byte, r *Request) error {
	i := 0
	for i < len(line) && tokenChar[line[i]] {
		i++
	}
	if i == 0 || i == len(line) || line[i] != ' ' {
		return errMethod
	}
	r.Method = line[:i]
	j := i + 1
	for j < len(line) && targetChar[line[j]] {
		j++
	}
	if j == i+1 || j == len(line) || line[j] != ' ' {
		return errTarget
	}
	r.Target = line[i+1 : j]
	minor, err := parseVersion(line[j+1:])
	if err != nil {
		return err
	}
	r.Minor = minor
	return nil
}

// parseVersion accepts HTTP/1.0 and HTTP/1.1; another well-formed version is 505.
func parseVersion(v []byte) (int, error) {
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' {
		return 0, errVersion
	}
	major, minor := v[5], v[7]
	if major < '0' || major > '9' || minor < '0' || minor > '9' {
		return 0, errVersion
	}
	if major != '1' || minor > '1' {
		return 0, errVersionNotSupp
	}
	return int(minor - '0'), nil
}

// parseFields parses header field lines from b[i:] up to and including the empty line that ends the
// head, appending to *hs, and returns the offset just past the head. It returns ErrIncomplete when b
// ends first: the caller has cut b at HeaderBytesMax and knows what that means. More than
// HeadersMax fields is tooMany.
func parseFields(b []byte, i int, lim *Limits, hs *[]Header, tooMany *Error) (int, error) {
	for {
		if i >= len(b) {
			return 0, ErrIncomplete
		}
		switch b[i] {
		case '\r':
			if i+1 >= len(b) {
				return 0, ErrIncomplete
			}
			if b[i+1] != '\n' {
				return 0, errBareCR
			}
			markConnection(*hs)
			return i + 2, nil
		case '\n':
			return 0, errBareLF
		case ' ', '\t':
			return 0, errObsFold
		}
		nameEnd := i
		for nameEnd < len(b) && tokenChar[b[nameEnd]] {
			nameEnd++
		}
		if nameEnd == len(b) {
			return 0, ErrIncomplete
		}
		switch b[nameEnd] {
		case ':':
		case ' ', '\t':
			return 0, errSpaceBeforeCol
		default:
			return 0, errFieldName
		}
		if nameEnd == i {
			return 0, errFieldName
		}
		nl := bytes.IndexByte(b[nameEnd:], '\n')
		if nl < 0 {
			return 0, ErrIncomplete
		}
		end := nameEnd + nl // index of '\n'
		if b[end-1] != '\r' {
			return 0, errBareLF
		}
		value := b[nameEnd+1 : end-1]
		for _, c := range value {
			if !valueChar[c] {
				if c == '\r' {
					return 0, errBareCR
				}
				return 0, errFieldValue
			}
		}
		if lim.HeadersMax > 0 && len(*hs) >= lim.HeadersMax {
			return 0, tooMany
		}
		name := b[i:nameEnd]
		*hs = append(*hs, Header{Name: name, Value: trimOWS(value), Kind: classify(name)})
		i = end + 1
	}
}

// markConnection sets Hop on the hop-by-hop fields, and on every field a Connection header names.
// Whether the Connection tokens are well formed, and whether they name a field that must not be
// dropped, is for framing.interpret to judge.
func markConnection(hs []Header) {
	named := false
	for k := range hs {
		switch hs[k].Kind {
		case KindConnection:
			named = true
			hs[k].Hop = true
		case KindKeepAlive, KindProxyConnection, KindTE, KindTransferEncoding, KindUpgrade:
			hs[k].Hop = true
		}
	}
	if !named {
		return
	}
	for k := range hs {
		if hs[k].Kind != KindConnection {
			continue
		}
		rest := hs[k].Value
		for {
			tok, r, ok := nextListItem(rest)
			if !ok {
				break
			}
			rest = r
			for m := range hs {
				if equalFoldBytes(hs[m].Name, tok) {
					hs[m].Hop = true
				}
			}
		}
	}
}

// interpret checks the request's framing fields and fills r's framing, Host and Expect100.
func (r *Request) interpret() error {
	hosts := 0
	for k := range r.Headers {
		h := &r.Headers[k]
		switch h.Kind {
		case KindHost:
			hosts++
			for _, c := range h.Value {
				if !hostChar[c] {
					return errHostValue
				}
			}
			r.Host = h.Value
		case KindExpect:
			if !EqualFold(h.Value, "100-continue") {
				return errExpect
			}
			// RFC 9110 §10.1.1: a server ignores 100-continue from an HTTP/1.0 client.
			r.Expect100 = r.Minor == 1
		}
	}
	if hosts == 0 {
		return errNoHost
	}
	if hosts > 1 {
		return errManyHost
	}
	// RFC 9112 §3.2.2: the authority of an absolute-form target replaces the Host field, which a
	// client must still send.
	if auth, absolute, err := absoluteAuthority(r.Target); err != nil {
		return err
	} else if absolute {
		r.Host = auth
	}
	if err := r.framing.interpret(r.Headers, r.Minor, false); err != nil {
		return err
	}
	return nil
}

// absoluteAuthority returns the authority of an absolute-form target (scheme "://" authority
// ...): absolute says the target has that form. Only http and https are accepted, and an authority
// must be a host and an optional port: userinfo (RFC 9110 §4.2.4) is refused.
func absoluteAuthority(target []byte) (auth []byte, absolute bool, err error) {
	i := 0
	for i < len(target) && (schemeChar[target[i]] || i > 0 && ('0' <= target[i] && target[i] <= '9' || target[i] == '+' || target[i] == '-' || target[i] == '.')) {
		i++
	}
	if i == 0 || len(target) < i+3 || string(target[i:i+3]) != "://" {
		return nil, false, nil
	}
	if !EqualFold(target[:i], "http") && !EqualFold(target[:i], "https") {
		return nil, true, errScheme
	}
	rest := target[i+3:]
	j := 0
	for j < len(rest) && rest[j] != '/' && rest[j] != '?' && rest[j] != '#' {
		if !hostChar[rest[j]] {
			return nil, true, errAuthority
		}
		j++
	}
	if j == 0 {
		return nil, true, errAuthority
	}
	return rest[:j], true, nil
}

// interpret fills f from the Content-Length, Transfer-Encoding and Connection fields of hs.
func (f *framing) interpret(hs []Header, minor int, response bool) error {
	f.ContentLength = -1
	f.KeepAlive = minor == 1
	te, upgradeToken, closeToken := false, false, false
	var upgrade []byte
	for k := range hs {
		h := &hs[k]
		switch h.Kind {
		case KindContentLength:
			rest := h.Value
			seen := false
			for {
				item, r, ok := nextListItem(rest)
				if !ok {
					break
				}
				rest, seen = r, true
				n, ok := parseContentLength(item)
				if !ok {
					return errCLInvalid
				}
				if f.ContentLength >= 0 && f.ContentLength != n {
					return errCLDiffer
				}
				f.ContentLength = n
			}
			if !seen {
				return errCLInvalid
			}
		case KindTransferEncoding:
			if minor == 0 {
				return errTEHTTP10 // RFC 9112 §6.1: the framing is faulty, whatever the codings
			}
			te = true
			rest := h.Value
			for {
				item, r, ok := nextListItem(rest)
				if !ok {
					break
				}
				rest = r
				if f.Chunked {
					// Something follows chunked: chunked is not the final coding.
					if EqualFold(item, "chunked") {
						return errTEChunkedTwice
					}
					return errTENotChunked
				}
				if EqualFold(item, "chunked") {
					f.Chunked = true
				} else if !response {
					// A coding other than chunked: unless chunked follows, the final one is not
					// chunked; if it does, it is a coding this proxy does not forward.
					if chunkedFollows(rest, hs[k+1:]) {
						return errTENotSupp
					}
					return errTENotChunked
				} else {
					return errTENotSupp
				}
			}
		case KindConnection:
			rest := h.Value
			for {
				item, r, ok := nextListItem(rest)
				if !ok {
					break
				}
				rest = r
				for _, c := range item {
					if !tokenChar[c] {
						return errConnection
					}
				}
				switch {
				case EqualFold(item, "close"):
					closeToken = true
				case EqualFold(item, "keep-alive"):
					if minor == 0 {
						f.KeepAlive = true
					}
				case EqualFold(item, "upgrade"):
					upgradeToken = true
				case EqualFold(item, "content-length"):
					// Dropping Content-Length as hop-by-hop would send the body unframed.
					return errConnectionCL
				case !response && EqualFold(item, "host"):
					return errConnectionHost
				}
			}
		case KindUpgrade:
			upgrade = h.Value
		}
	}
	if te {
		if !f.Chunked {
			return errTENotChunked
		}
		if f.ContentLength >= 0 {
			return errCLAndTE
		}
	}
	if closeToken {
		f.KeepAlive = false
	}
	if upgradeToken && len(upgrade) > 0 {
		f.Upgrade = upgrade
	}
	return nil
}

// chunkedFollows reports whether "chunked" appears in the rest of this Transfer-Encoding value or in
// a later Transfer-Encoding field.
func chunkedFollows(rest []byte, later []Header) bool {
	for {
		item, r, ok := nextListItem(rest)
		if !ok {
			break
		}
		if EqualFold(item, "chunked") {
			return true
		}
		rest = r
	}
	for k := range later {
		if later[k].Kind == KindTransferEncoding && chunkedFollows(later[k].Value, nil) {
			return true
		}
	}
	return false
}

// parseContentLength parses 1*DIGIT, at most 18 digits so that it never overflows an int64.
func parseContentLength(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
