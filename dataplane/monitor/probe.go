package monitor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/http1"
)

// probeHeadBytesMax bounds the response head an HTTP probe reads; a longer one fails the probe as
// malformed.
const probeHeadBytesMax = 16 << 10

// ProbeResult is how one probe went.
type ProbeResult struct {
	OK bool
	// Fail and Status say how a failed probe failed (Status for health.KindStatus).
	Fail   health.Kind
	Status int
	// Err describes a failure in words.
	Err string
	// Took is from the start of the probe to its end.
	Took time.Duration
}

// Probe probes the backend at address (host:port) once, as p says (its defaults applied), on a
// connection of its own that it closes. It returns within p.Timeout, or when ctx ends.
func Probe(ctx context.Context, address string, p *health.Probe) ProbeResult {
	return ProbeTLS(ctx, address, p, nil)
}

// ProbeTLS is Probe of a backend that speaks TLS: with tc not nil, an HTTP probe makes a TLS
// handshake with tc (used as it is: its ServerName must be set) within the probe's timeout, and a
// failed handshake fails the probe as a connect does, saying what TLS refused.
func ProbeTLS(ctx context.Context, address string, p *health.Probe, tc *tls.Config) ProbeResult {
	start := time.Now()
	res := probe(ctx, address, p, tc, start.Add(p.Timeout))
	res.Took = time.Since(start)
	return res
}

func probe(ctx context.Context, address string, p *health.Probe, tc *tls.Config, deadline time.Time) ProbeResult {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	d := net.Dialer{KeepAlive: -1}
	c, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return fail(health.KindConnect, 0, "connect: %v", err)
	}
	defer c.Close()
	if p.Kind == health.ProbeTCP {
		return ProbeResult{OK: true}
	}
	c.SetDeadline(deadline)
	if tc != nil {
		t := tls.Client(c, tc)
		if err := t.HandshakeContext(ctx); err != nil {
			if isTimeout(err) || ctx.Err() != nil {
				return fail(health.KindTimeout, 0, "TLS handshake: timed out")
			}
			return fail(health.KindConnect, 0, "TLS handshake (server name %q): %v", tc.ServerName, err)
		}
		c = t
	}
	host := p.Host
	if host == "" {
		host = address
	}
	req := "GET " + p.Path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: xlb-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return ioFail("send the request", err)
	}
	buf := http1.Buffer{Buf: make([]byte, probeHeadBytesMax)}
	lim := http1.Limits{HeaderBytesMax: probeHeadBytesMax, HeadersMax: 100}
	var resp http1.Response
	for {
		if buf.Len() > 0 {
			err := http1.ParseResponse(buf.Buffered(), &lim, &resp)
			if err == nil && resp.Status < 200 {
				buf.Consume(resp.HeadLen) // an interim response: the final one follows
				continue
			}
			if err == nil {
				break
			}
			if err != http1.ErrIncomplete || buf.Full() {
				return fail(health.KindMalformed, 0, "malformed response: %v", err)
			}
		}
		if _, err := buf.ReadOnce(c); err != nil {
			if buf.Len() == 0 && (errors.Is(err, io.EOF) || !isTimeout(err)) {
				return ioFail("read the response", err)
			}
			if isTimeout(err) {
				return fail(health.KindTimeout, 0, "no response head within %v", p.Timeout)
			}
			return fail(health.KindMalformed, 0, "response cut short: %v", err)
		}
	}
	if !p.Passes(resp.Status) {
		return fail(health.KindStatus, resp.Status, "status %d", resp.Status)
	}
	return ProbeResult{OK: true, Status: resp.Status}
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func fail(k health.Kind, status int, format string, args ...any) ProbeResult {
	return ProbeResult{Fail: k, Status: status, Err: fmt.Sprintf(format, args...)}
}

// ioFail classifies a failed read or write of the probe's connection.
func ioFail(what string, err error) ProbeResult {
	if isTimeout(err) {
		return fail(health.KindTimeout, 0, "%s: timed out", what)
	}
	return fail(health.KindReset, 0, "%s: %v", what, err)
}
