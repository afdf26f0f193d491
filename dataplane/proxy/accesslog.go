package proxy

import (
	"bufio"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// accessLog writes one JSON object per line, buffered and flushed at least once a second.
//
// Several worker processes may write the same file or pipe, so every write is whole lines and at
// most accessLogWriteMax bytes: a write to a pipe of at most PIPE_BUF bytes is atomic, and an
// O_APPEND write to a file lands in one piece, so lines of different workers never interleave.
type accessLog struct {
	mu   sync.Mutex
	w    *bufio.Writer
	line []byte
	tick *time.Ticker
	stop chan struct{}
}

// accessLogWriteMax is PIPE_BUF on Linux.
const accessLogWriteMax = 4096

func newAccessLog(w io.Writer) *accessLog {
	a := &accessLog{w: bufio.NewWriterSize(w, accessLogWriteMax), tick: time.NewTicker(time.Second), stop: make(chan struct{})}
	go func() {
		for {
			select {
			case <-a.stop:
				return
			case <-a.tick.C:
				a.mu.Lock()
				a.w.Flush()
				a.mu.Unlock()
			}
		}
	}()
	return a
}

func (a *accessLog) flush() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.w.Flush()
	select {
	case <-a.stop:
	default:
		close(a.stop)
		a.tick.Stop()
	}
}

// logAccess writes the access log line of the request just handled.
func (c *conn) logAccess() {
	a := c.p.access
	if a == nil {
		return
	}
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.line[:0]
	b = append(b, `{"time":"`...)
	b = now.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","client":`...)
	b = appendJSONString(b, c.clientIP)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, c.method)
	b = append(b, `,"target":`...)
	b = appendJSONString(b, c.target)
	b = append(b, `,"host":`...)
	b = appendJSONString(b, c.host)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(c.status), 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendInt(b, c.bytesOut, 10)
	b = append(b, `,"backend":`...)
	if c.backend != nil {
		b = appendJSONString(b, []byte(c.backend.address))
	} else {
		b = append(b, `null`...)
	}
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(c.attempts), 10)
	b = append(b, `,"duration_us":`...)
	b = strconv.AppendInt(b, now.Sub(c.started).Microseconds(), 10)
	b = append(b, "}\n"...)
	a.line = b
	if len(b) > a.w.Available() {
		a.w.Flush() // so that no line is split between two writes
	}
	a.w.Write(b)
}

// appendJSONString appends s as a JSON string; bytes that are not valid UTF-8 become U+FFFD.
func appendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
