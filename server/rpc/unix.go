package rpc

import (
	"errors"
	"net"
	"os"
	"strconv"

	"google.golang.org/grpc"
)

// ServeUnix serves srv on a unix socket (ListenUnix) until the returned
// func, which stops srv and removes the socket if it is still its own.
func ServeUnix(srv *grpc.Server, path string) (*UnixListener, func(), error) {
	ln, err := ListenUnix(path)
	if err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() {
		srv.Serve(ln.Listener)
		close(done)
	}()
	return ln, func() {
		srv.Stop()
		<-done
		ln.RemoveIfOurs()
	}, nil
}

// UnixListener is a unix socket listener of the state directory. It is bound at a name of its
// own process (PATH.PID) and published at PATH by a rename when the process is ready to answer
// there: during an upgrade the old supervisor's socket stays at PATH until the new one serves, and
// a new one that dies before it is ready leaves the old one's in place. At the end it removes its
// own name, and PATH if PATH is still its socket.
type UnixListener struct {
	net.Listener
	// Path is the socket's published name, Own the name of this process's (Path.PID).
	Path, Own string
	fi        os.FileInfo
}

// ListenUnix binds a socket for path at its staged name (StagedName), mode 0600.
func ListenUnix(path string) (*UnixListener, error) {
	own := StagedName(path, os.Getpid())
	if err := os.Remove(own); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", own)
	if err != nil {
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(own, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	fi, err := os.Stat(own)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &UnixListener{Listener: ln, Path: path, Own: own, fi: fi}, nil
}

// StagedName is the name a process binds a socket of path at.
func StagedName(path string, pid int) string { return path + "." + strconv.Itoa(pid) }

// Publish makes Path name this socket, replacing whatever was there.
func (l *UnixListener) Publish() error {
	tmp := l.Own + ".link"
	os.Remove(tmp)
	if err := os.Link(l.Own, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, l.Path)
}

// RemoveIfOurs removes this process's name of the socket, and Path when it is still this socket.
func (l *UnixListener) RemoveIfOurs() {
	os.Remove(l.Own)
	if fi, err := os.Stat(l.Path); err == nil && os.SameFile(fi, l.fi) {
		os.Remove(l.Path)
	}
}
