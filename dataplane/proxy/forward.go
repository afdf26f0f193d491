package proxy

import (
	"bytes"
	"errors"
	"strconv"
	"time"

	"github.com/xlbproxy/xlb/dataplane/http1"
	"github.com/xlbproxy/xlb/dataplane/upstream"
)

// appendRequestHead appends the head that goes to the backend: the request line byte for byte (as
// HTTP/1.1), every end-to-end field as received, one Content-Length, our own framing and
// X-Forwarded-* fields.
func (c *conn) appendRequestHead(b []byte) []byte {
	r, mode, field := &c.req, c.p.cfg.Forwarded, c.p.cfg.ForwardedField
	if mode == ForwardedAppend && !c.trusted {
		mode = ForwardedReplace
	}
	b = append(b, r.Method...)
	b = append(b, ' ')
	b = append(b, r.Target...)
	b = append(b, " HTTP/1.1\r\n"...)
	xff, fwd, proto, host := -1, -1, false, false
	cl := false
	for i := range r.Headers {
		h := &r.Headers[i]
		if h.Hop {
			continue
		}
		switch h.Kind {
		case http1.KindContentLength:
			// One field with one value, however the client repeated it.
			if cl {
				continue
			}
			cl = true
			b = append(b, h.Name...)
			b = append(b, ": "...)
			b = strconv.AppendInt(b, r.ContentLength, 10)
			b = append(b, "\r\n"...)
			continue
		case http1.KindHost:
			// The authority of an absolute-form target, when there is one.
			b = appendField(b, h.Name, r.Host)
			continue
		case http1.KindOther:
			if c.stickyOn != nil && isCookie(h) {
				b = appendCookieField(b, h, c.stickyOn.name)
				continue
			}
		case http1.KindForwarded:
			if mode == ForwardedReplace {
				continue
			}
			if mode == ForwardedAppend && field {
				if fwd < 0 {
					fwd = i
				}
				continue
			}
		case http1.KindXForwardedFor:
			if mode == ForwardedAppend {
				if xff < 0 {
					xff = i
				}
				continue
			}
			if mode == ForwardedReplace {
				continue
			}
		case http1.KindXForwardedProto:
			proto = true
			if mode == ForwardedReplace {
				continue
			}
		case http1.KindXForwardedHost:
			host = true
			if mode == ForwardedReplace {
				continue
			}
		}
		b = appendField(b, h.Name, h.Value)
	}
	if r.Chunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	if c.upgrading() {
		b = append(b, "Connection: upgrade\r\nUpgrade: "...)
		b = append(b, c.upgrade...)
		b = append(b, "\r\n"...)
	}
	if mode != ForwardedOff {
		b = append(b, "X-Forwarded-For: "...)
		if xff >= 0 {
			// Every X-Forwarded-For the client sent, in order, then the client's address.
			for i := xff; i < len(r.Headers); i++ {
				if h := &r.Headers[i]; h.Kind == http1.KindXForwardedFor && !h.Hop && len(h.Value) > 0 {
					b = append(b, h.Value...)
					b = append(b, ", "...)
				}
			}
		}
		b = append(b, c.clientIP...)
		b = append(b, "\r\n"...)
		if !proto || mode == ForwardedReplace {
			if c.tls != nil {
				b = append(b, "X-Forwarded-Proto: https\r\n"...)
			} else {
				b = append(b, "X-Forwarded-Proto: http\r\n"...)
			}
		}
		if !host || mode == ForwardedReplace {
			b = append(b, "X-Forwarded-Host: "...)
			b = append(b, r.Host...)
			b = append(b, "\r\n"...)
		}
		if field {
			b = c.appendForwarded(b, fwd)
		}
	}
	return append(b, "\r\n"...)
}

// appendForwarded appends the RFC 7239 Forwarded field: the trusted client's Forwarded elements
// from field index from on (none when from < 0), then this hop's.
func (c *conn) appendForwarded(b []byte, from int) []byte {
	r := &c.req
	b = append(b, "Forwarded: "...)
	if from >= 0 {
		for i := from; i < len(r.Headers); i++ {
			if h := &r.Headers[i]; h.Kind == http1.KindForwarded && !h.Hop && len(h.Value) > 0 {
				b = append(b, h.Value...)
				b = append(b, ", "...)
			}
		}
	}
	b = append(b, "for="...)
	switch ip := c.clientIP; {
	case len(ip) == 0:
		b = append(b, "unknown"...)
	case bytes.IndexByte(ip, ':') >= 0:
		// An IPv6 address is a quoted, bracketed string (RFC 7239 §6).
		b = append(b, `"[`...)
		b = append(b, ip...)
		b = append(b, `]"`...)
	default:
		b = append(b, ip...)
	}
	// A host with a port has a colon, which a token cannot hold; hostChar admits no quote or
	// backslash, so quoting needs no escapes.
	b = append(b, `;host="`...)
	b = append(b, r.Host...)
	b = append(b, `";proto=http`...)
	if c.tls != nil {
		b = append(b, 's')
	}
	return append(b, "\r\n"...)
}

// upgrading reports whether the request asks for a protocol switch that the proxy will tunnel: an
// Upgrade request without a body that offers a protocol Config.UpgradeProtocols allows.
func (c *conn) upgrading() bool { return len(c.upgrade) > 0 }

// upgradeOffer appends to dst the request's Upgrade offers that Config.UpgradeProtocols allows,
// comma-separated: none when the request has a body.
func (c *conn) upgradeOffer(dst []byte) []byte {
	r := &c.req
	if r.Upgrade == nil || r.HasBody() {
		return dst
	}
	for item, rest, ok := http1.NextListItem(r.Upgrade); ok; item, rest, ok = http1.NextListItem(rest) {
		if !c.p.upgradeAllowed(item) {
			continue
		}
		if len(dst) > 0 {
			dst = append(dst, ", "...)
		}
		dst = append(dst, item...)
	}
	return dst
}

// upgradeAllowed reports whether the protocol (name, or name/version) of an Upgrade item is one of
// Config.UpgradeProtocols.
func (p *Proxy) upgradeAllowed(item []byte) bool {
	if i := bytes.IndexByte(item, '/'); i >= 0 {
		item = item[:i]
	}
	for _, name := range p.cfg.UpgradeProtocols {
		if http1.EqualFold(item, name) {
			return true
		}
	}
	return false
}

// firstItem is the first element of a comma-separated field value.
func firstItem(v []byte) []byte {
	item, _, _ := http1.NextListItem(v)
	return item
}

func appendField(b, name, value []byte) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, "\r\n"...)
}

// attempt sends the request to backend b and forwards its response. complete says the whole request
// is in c.out; otherwise the rest of the body streams from the client as the response is read.
func (c *conn) attempt(b *backend, complete, replayable bool) attemptResult {
	p := c.p
	u, pooled := b.pool.Get(!replayable)
	for try := 0; ; try++ {
		if u == nil {
			var err error
			if u, err = b.pool.Dial(); err != nil {
				p.stats.connectFailures.Add(1)
				c.tlsFailed = p.dialFailed(b, err)
				return attemptNotSent
			}
			p.stats.dials.Add(1)
			if b.m != nil {
				b.m.opened.Add(1)
			}
		} else if b.m != nil {
			b.m.reused.Add(1)
		}
		if complete && b.m != nil {
			b.m.bytesOut.Add(uint64(len(c.out)))
		}
		res := c.send(u, complete)
		if res == attemptNoAnswer && pooled && try == 0 && replayable {
			if b.m != nil {
				b.m.closedByBackend.Add(1)
			}
			// The backend closed an idle connection as the request went out: try once more on a new
			// connection to the same backend.
			p.stats.retries.Add(1)
			p.log.Trace("pooled connection closed by the backend; retrying on a new one", "backend", b.address)
			u, pooled = nil, false
			continue
		}
		return res
	}
}

// send writes the request on u and forwards the response. It puts u back into the pool or closes it.
func (c *conn) send(u *upstream.Conn, complete bool) attemptResult {
	p := c.p
	c.active.Store(u)
	defer c.active.Store(nil)
	u.DL.Both(time.Now(), p.cfg.BackendTimeout)
	if c.abandonable {
		// After the deadline is set: a poke from now on is not overwritten by it.
		c.waitingSlot.Store(c.backend.slot + 1)
		defer c.waitingSlot.Store(0)
	}
	var readErr error
	pumping := !complete
	if pumping {
		if n, err := u.Write(c.out); err != nil {
			u.Close()
			return writeFailure(n, err)
		}
		c.pumpErr = nil
		c.pumpStop.Store(false)
		go c.pump(u)
	} else {
		// The whole request goes out, and the answer is awaited, in one pass.
		n, writeErr, rerr := u.WriteThenFill(c.out)
		if writeErr != nil {
			u.Close()
			return writeFailure(n, writeErr)
		}
		if n < len(c.out) {
			if m, err := u.Write(c.out[n:]); err != nil {
				u.Close()
				return writeFailure(n+m, err)
			}
		}
		readErr = rerr
	}
	res := c.exchange(u, readErr)
	bodySent := complete
	if pumping {
		select {
		case c.pumpErr = <-c.pumpDone:
		default:
			// The response ended (or failed) before the request body did: stop reading it. The flag
			// covers a pump that is about to move its deadline past the poke.
			c.pumpStop.Store(true)
			c.dl.PokeRead()
			u.DL.Poke()
			c.pumpErr = <-c.pumpDone
			c.dl.Forget()
			u.DL.Forget()
		}
		bodySent = c.pumpErr == nil
		if !bodySent {
			c.forceStop = true
		}
		if c.pumpErr != nil && c.pumpFromClient && res != attemptOK {
			// The client's body broke off or was malformed; that, not the backend, is what failed.
			u.Close()
			c.bodyError(c.pumpErr)
			return attemptFatal
		}
	}
	// A wait abandoned as its backend went out may have had u's read deadline poked, which its
	// Deadlines does not know of: such a connection is closed, never pooled (a later request on it
	// would time out at once). The abandoner sets abandoned before it reads active, so with active
	// cleared first, either this sees abandoned or the abandoner sees no connection to poke.
	c.active.Store(nil)
	if res == attemptOK && c.keepUpstream && bodySent && !c.abandoned.Load() {
		u.Pool().Put(u)
	} else {
		u.Close()
	}
	return res
}

// writeFailure classifies a failed write of the request's first n bytes.
func writeFailure(n int, err error) attemptResult {
	switch {
	case isTimeout(err):
		return attemptTimeout
	case n == 0:
		return attemptNotSent
	}
	return attemptNoAnswer
}

// pump streams the rest of the request body from the client to the backend, and reports how it
// ended on c.pumpDone.
func (c *conn) pump(u *upstream.Conn) {
	err := c.pumpBody(u)
	if err != nil && c.pumpFromClient {
		// The client's body broke off or was malformed: the backend will never see the rest, so
		// end the exchange now rather than when the backend times out.
		u.Conn.Close()
	}
	c.pumpDone <- err
}

// errPumpStopped ends a pump that the exchange no longer needs.
var errPumpStopped = errors.New("proxy: request body no longer wanted")

// pumpFill reads more of the request body within the client timeout, unless the exchange stopped the
// pump.
func (c *conn) pumpFill() error {
	c.dl.Read(time.Now(), c.p.cfg.ClientTimeout)
	if c.pumpStop.Load() {
		return errPumpStopped
	}
	return c.fill()
}

func (c *conn) pumpBody(u *upstream.Conn) error {
	p := c.p
	if c.req.Chunked {
		bp := outPool.Get().(*[]byte)
		defer func() {
			*bp = c.pumpBuf[:0]
			outPool.Put(bp)
			c.pumpBuf = nil
		}()
		c.pumpBuf = *bp
		for !c.dec.Done() {
			c.pumpFromClient = true
			if err := c.pumpFill(); err != nil {
				return err
			}
			buf, _, err := c.dec.Reframe(c.pumpBuf[:0], &c.in, true)
			c.pumpBuf = buf
			if err != nil {
				return err
			}
			c.pumpFromClient = false
			u.DL.Write(time.Now(), p.cfg.BackendTimeout)
			if _, err := u.Write(buf); err != nil {
				return err
			}
		}
		return nil
	}
	for c.bodyLeft > 0 {
		if c.in.Len() == 0 {
			c.pumpFromClient = true
			if err := c.pumpFill(); err != nil {
				return err
			}
			c.pumpFromClient = false
		}
		n := min(int64(c.in.Len()), c.bodyLeft)
		u.DL.Write(time.Now(), p.cfg.BackendTimeout)
		if _, err := u.Write(c.in.Buffered()[:n]); err != nil {
			return err
		}
		c.in.Consume(int(n))
		c.bodyLeft -= n
	}
	return nil
}

// exchange reads the backend's response heads, forwards interim (1xx) responses to an HTTP/1.1
// client, and then the final response. readErr is how a read that already happened failed.
func (c *conn) exchange(u *upstream.Conn, readErr error) attemptResult {
	answered := false
	for {
		if res := c.readResponseHead(u, answered, readErr); res != attemptOK {
			return res
		}
		st := c.resp.Status
		if st >= 200 {
			return c.forwardResponse(u)
		}
		if st == 101 {
			// A switch the client did not ask for, or to a protocol not allowed, is not passed on.
			if !c.upgrading() || c.resp.Upgrade != nil && !c.p.upgradeAllowed(firstItem(c.resp.Upgrade)) {
				return attemptBad
			}
			c.headArrived(st)
			return c.tunnel(u)
		}
		answered, readErr = true, nil
		if c.req.Minor == 1 {
			c.out = c.appendResponseHead(c.out[:0], false, false)
			if !c.writeClient(c.out) {
				return attemptFatal
			}
		}
		u.In.Consume(c.resp.HeadLen)
	}
}

// readResponseHead reads until c.resp holds a complete response head. readErr is how a read that
// already happened failed.
func (c *conn) readResponseHead(u *upstream.Conn, answered bool, readErr error) attemptResult {
	p := c.p
	u.DL.Read(time.Now(), p.cfg.BackendTimeout)
	for {
		if u.In.Len() > 0 {
			err := http1.ParseResponse(u.In.Buffered(), &p.limits, &c.resp)
			if err == nil {
				return attemptOK
			}
			if err != http1.ErrIncomplete || u.In.Full() {
				p.log.Trace("malformed response", "backend", u.Pool().Address(), "error", err)
				return attemptBad
			}
		}
		if c.abandoned.Load() {
			return attemptTimeout // the deadline set above may have undone the poke; handle tells them apart
		}
		err := readErr
		if err == nil {
			_, err = u.Fill()
		}
		readErr = nil
		if err != nil {
			switch {
			case isTimeout(err):
				return attemptTimeout
			case u.In.Len() == 0 && !answered:
				c.noAnswer(err)
				return attemptNoAnswer
			}
			return attemptBad
		}
	}
}

// appendResponseHead appends the head for the client: our status line, every end-to-end field of
// the backend's response, and the framing and connection fields of this hop.
func (c *conn) appendResponseHead(b []byte, chunked, closing bool) []byte {
	resp := &c.resp
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(resp.Status), 10)
	b = append(b, ' ')
	b = append(b, resp.Reason...)
	b = append(b, "\r\n"...)
	cl := false
	for i := range resp.Headers {
		h := &resp.Headers[i]
		switch {
		case h.Hop:
		case h.Kind == http1.KindContentLength:
			// One field with one value, however the backend repeated it.
			if !cl {
				cl = true
				b = append(b, h.Name...)
				b = append(b, ": "...)
				b = strconv.AppendInt(b, resp.ContentLength, 10)
				b = append(b, "\r\n"...)
			}
		default:
			b = appendField(b, h.Name, h.Value)
		}
	}
	if resp.Status >= 200 {
		b = c.appendSetCookie(b)
	}
	if chunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	if closing {
		b = append(b, "Connection: close\r\n"...)
	} else if c.req.Minor == 0 && resp.Status >= 200 {
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	return append(b, "\r\n"...)
}

// forwardResponse sends the final response head and streams its body to the client. It sets
// c.keepUpstream when u can serve another request.
func (c *conn) forwardResponse(u *upstream.Conn) attemptResult {
	p, resp := c.p, &c.resp
	c.status = resp.Status
	if c.backend != nil && c.backend.m != nil {
		c.headerAt = time.Now()
	}
	c.headArrived(resp.Status)
	c.keepUpstream = false
	kind := resp.Body(c.method)
	keepClient := c.req.KeepAlive && !p.draining.Load() && !c.forceStop
	chunked := false
	switch kind {
	case http1.BodyChunked, http1.BodyClose:
		if c.req.Minor == 0 {
			keepClient = false
		} else {
			chunked = true
		}
	}
	if !keepClient {
		c.forceStop = true
	}
	c.out = c.appendResponseHead(c.out[:0], chunked, !keepClient)
	u.In.Consume(resp.HeadLen)

	switch kind {
	case http1.BodyNone:
		if !c.writeClient(c.out) {
			return attemptFatal
		}
	case http1.BodyLength:
		left := resp.ContentLength
		n := min(int64(u.In.Len()), left)
		c.out = append(c.out, u.In.Buffered()[:n]...)
		u.In.Consume(int(n))
		left -= n
		c.bytesOut += n
		if !c.writeClient(c.out) {
			return attemptFatal
		}
		for left > 0 {
			if !c.fillUpstream(u) {
				return attemptFatal
			}
			n := min(int64(u.In.Len()), left)
			if !c.writeClient(u.In.Buffered()[:n]) {
				return attemptFatal
			}
			u.In.Consume(int(n))
			left -= n
			c.bytesOut += n
		}
	case http1.BodyChunked:
		c.rdec.Reset()
		for {
			out, n, err := c.rdec.Reframe(c.out, &u.In, chunked)
			c.out = out
			c.bytesOut += int64(n)
			if err != nil {
				p.log.Trace("malformed chunked response", "backend", u.Pool().Address(), "error", err)
				c.writeClient(c.out)
				return attemptFatal
			}
			if !c.writeClient(c.out) {
				return attemptFatal
			}
			c.out = c.out[:0]
			if c.rdec.Done() {
				break
			}
			if !c.fillUpstream(u) {
				return attemptFatal
			}
		}
	case http1.BodyClose:
		for {
			data := u.In.Buffered()
			c.bytesOut += int64(len(data))
			if chunked && len(data) > 0 {
				c.out = http1.AppendChunkHeader(c.out, len(data))
				c.out = append(c.out, data...)
				c.out = append(c.out, "\r\n"...)
			} else {
				c.out = append(c.out, data...)
			}
			u.In.Consume(len(data))
			u.DL.Read(time.Now(), p.cfg.BackendTimeout)
			_, err := u.Fill()
			if err != nil && !isTimeout(err) && u.In.Len() == 0 {
				// The backend closed: the body is complete.
				if chunked {
					c.out = append(c.out, "0\r\n\r\n"...)
				}
				if !c.writeClient(c.out) {
					return attemptFatal
				}
				return attemptOK
			}
			if err != nil {
				c.writeClient(c.out)
				return attemptFatal
			}
			if !c.writeClient(c.out) {
				return attemptFatal
			}
			c.out = c.out[:0]
		}
	}
	c.keepUpstream = resp.KeepAlive && u.In.Len() == 0
	return attemptOK
}

// fillUpstream reads more of a response body, within the backend timeout.
func (c *conn) fillUpstream(u *upstream.Conn) bool {
	u.DL.Read(time.Now(), c.p.cfg.BackendTimeout)
	if _, err := u.Fill(); err != nil {
		c.p.log.Trace("response body cut short", "backend", u.Pool().Address(), "error", err)
		return false
	}
	return true
}

// writeClient writes b to the client within the client timeout.
func (c *conn) writeClient(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	c.dl.Write(time.Now(), c.p.cfg.ClientTimeout)
	return c.write(b) == nil
}
