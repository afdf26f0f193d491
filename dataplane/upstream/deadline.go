package upstream

import (
	"net"
	"time"
)

// Deadlines sets a connection's read and write deadlines lazily. Moving a deadline costs a call into
// the runtime's timers; on a busy connection most requests would move it by microseconds. So a
// deadline for "timeout from now" is left alone when the one in force already lies between now+timeout
// and now+timeout*9/8: a timeout fires between its nominal length and 1/8 more after the last
// activity.
//
// A Deadlines belongs to the goroutine that owns the connection. Other goroutines may only Poke.
type Deadlines struct {
	Conn        net.Conn
	read, write int64 // the deadline in force, in Unix nanoseconds; 0 when unknown
}

func move(cur *int64, now time.Time, timeout time.Duration) (time.Time, bool) {
	want := now.UnixNano() + int64(timeout)
	if *cur >= want && *cur <= want+int64(timeout/8) {
		return time.Time{}, false
	}
	*cur = want + int64(timeout/8)
	return time.Unix(0, *cur), true
}

// Read makes reads fail with os.ErrDeadlineExceeded after timeout of silence from now.
func (d *Deadlines) Read(now time.Time, timeout time.Duration) {
	if t, ok := move(&d.read, now, timeout); ok {
		d.Conn.SetReadDeadline(t)
	}
}

// Write makes writes fail after a stall of timeout from now.
func (d *Deadlines) Write(now time.Time, timeout time.Duration) {
	if t, ok := move(&d.write, now, timeout); ok {
		d.Conn.SetWriteDeadline(t)
	}
}

// Both sets the read and the write deadline, with one call into the runtime when both move.
func (d *Deadlines) Both(now time.Time, timeout time.Duration) {
	rt, rok := move(&d.read, now, timeout)
	wt, wok := move(&d.write, now, timeout)
	switch {
	case rok && wok && d.read == d.write:
		d.Conn.SetDeadline(rt)
	case rok:
		d.Conn.SetReadDeadline(rt)
		if wok {
			d.Conn.SetWriteDeadline(wt)
		}
	case wok:
		d.Conn.SetWriteDeadline(wt)
	}
}

// Poke makes the connection's blocked and future reads and writes fail at once. Any goroutine may
// call it; the owner calls Forget before it uses the connection again.
func (d *Deadlines) Poke() { d.Conn.SetDeadline(time.Unix(1, 0)) }

// PokeRead is Poke for reads only.
func (d *Deadlines) PokeRead() { d.Conn.SetReadDeadline(time.Unix(1, 0)) }

// Forget drops what d knows of the deadlines in force, after a Poke.
func (d *Deadlines) Forget() { d.read, d.write = 0, 0 }
