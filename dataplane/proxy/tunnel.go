package proxy

import (
	"net"
	"time"

	"github.com/xlbproxy/xlb/dataplane/upstream"
)

// tunnel forwards a 101 Switching Protocols response and then copies bytes both ways until both
// sides have closed, each direction ending after IdleTimeout of silence. The client connection
// closes afterwards.
func (c *conn) tunnel(u *upstream.Conn) attemptResult {
	p := c.p
	c.status = 101
	c.forceStop = true
	c.keepUpstream = false
	c.out = c.appendResponseHead(c.out[:0], false, false)
	// The 101's own Connection and Upgrade fields are hop-by-hop, and were dropped: say them again.
	c.out = c.out[:len(c.out)-2]
	c.out = append(c.out, "Connection: upgrade\r\n"...)
	if c.resp.Upgrade != nil {
		c.out = append(c.out, "Upgrade: "...)
		c.out = append(c.out, c.resp.Upgrade...)
		c.out = append(c.out, "\r\n"...)
	}
	c.out = append(c.out, "\r\n"...)
	u.In.Consume(c.resp.HeadLen)
	c.out = append(c.out, u.In.Buffered()...)
	u.In.Consume(u.In.Len())
	if !c.writeClient(c.out) {
		return attemptFatal
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		// Client to backend: first what the client sent after its request head.
		if c.in.Len() > 0 {
			if _, err := u.Write(c.in.Buffered()); err != nil {
				return
			}
			c.in.Consume(c.in.Len())
		}
		for {
			c.nc.SetReadDeadline(time.Now().Add(p.cfg.IdleTimeout))
			if err := c.fill(); err != nil {
				closeWrite(u.Conn)
				return
			}
			u.SetWriteDeadline(time.Now().Add(p.cfg.IdleTimeout))
			if _, err := u.Write(c.in.Buffered()); err != nil {
				c.nc.SetReadDeadline(time.Unix(1, 0))
				return
			}
			c.in.Consume(c.in.Len())
		}
	}()
	for {
		u.SetReadDeadline(time.Now().Add(p.cfg.IdleTimeout))
		n, err := u.Fill()
		if n > 0 {
			c.bytesOut += int64(n)
			if !c.writeClient(u.In.Buffered()) {
				break
			}
			u.In.Consume(u.In.Len())
		}
		if err != nil {
			break
		}
	}
	// The backend ended the session, or the client cannot take more: so ends the tunnel. (A client
	// that closes first only half-closes the backend connection, which may still answer.) Closing
	// both ends the other direction whatever it is doing.
	c.nc.Close()
	u.Conn.Close()
	<-done
	u.In.Consume(u.In.Len())
	c.dl.Forget()
	u.DL.Forget()
	return attemptOK
}

// closeWrite half-closes a TCP connection, so that the peer reads EOF while the other direction
// goes on.
func closeWrite(nc net.Conn) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	nc.Close()
}
