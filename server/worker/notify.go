package worker

import (
	"context"
	"os"
	"syscall"
	"time"
)

// healthNotifier is a worker's side of the health pipe: Signal never blocks the request that calls
// it, and the bytes are coalesced, at most one per healthNotifyGap, so that a backend failing every
// request costs the supervisor a look per gap, not per request.
type healthNotifier struct {
	w   *os.File
	sig chan struct{}
}

// healthNotifyGap is the least time between two bytes of a worker on the health pipe.
const healthNotifyGap = time.Millisecond

func newHealthNotifier(w *os.File) *healthNotifier {
	return &healthNotifier{w: w, sig: make(chan struct{}, 1)}
}

// Signal asks for a byte on the pipe.
func (n *healthNotifier) Signal() {
	select {
	case n.sig <- struct{}{}:
	default:
	}
}

// run writes the bytes asked for until ctx ends. A full pipe already holds a byte for the
// supervisor to read, so a write that would block is dropped.
func (n *healthNotifier) run(ctx context.Context) {
	rc, err := n.w.SyscallConn()
	if err != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.sig:
		}
		rc.Write(func(fd uintptr) bool {
			syscall.Write(int(fd), []byte{1})
			return true
		})
		select {
		case <-ctx.Done():
			return
		case <-time.After(healthNotifyGap):
		}
	}
}
