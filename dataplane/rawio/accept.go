package rawio

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Listener accepts TCP connections on a listening socket given as a file, such as one a worker
// inherited from its supervisor. It exists because net.FileListener's connections cannot opt out of
// TCP keep-alive probes: each accept would pay four setsockopt calls for them, and one getsockname
// for an address the proxy never reads, which on a connection per request is a cost that shows.
// A connection of a Listener costs accept4, one fcntl (os.NewFile asks the descriptor's mode) and
// its registration with the poller. TCP_NODELAY is set once, on the listening socket: Linux copies
// it to every socket accepted from it (TestListenerConn checks it with getsockopt), so the
// setsockopt each accept made before is gone.
type Listener struct {
	f      *os.File
	rc     syscall.RawConn
	addr   net.Addr
	closed atomic.Bool
}

// NewListener accepts on the listening socket of f, and closes f: the Listener works on a
// duplicate of its descriptor, in non-blocking mode (a mode shared by every process holding the
// socket, all of which must accept without blocking) and registered with the poller.
func NewListener(f *os.File) (*Listener, error) {
	defer f.Close()
	var fd int
	var err error
	if rc, rerr := f.SyscallConn(); rerr != nil {
		return nil, rerr
	} else if cerr := rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, os.NewSyscallError("dup", err)
	}
	sa, err := unix.Getsockname(fd)
	if err == nil {
		err = syscall.SetNonblock(fd, true)
	}
	if err == nil {
		// On the socket, so for every process that shares it: the supervisor's copy and any
		// other worker's accept with it too, which is what each of them wants.
		err = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	if err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("listener", err)
	}
	addr, ok := tcpAddr(sa)
	if !ok {
		unix.Close(fd)
		return nil, errors.New("rawio: not a TCP socket")
	}
	nf := os.NewFile(uintptr(fd), f.Name())
	rc, err := nf.SyscallConn()
	if err != nil {
		nf.Close()
		return nil, err
	}
	return &Listener{f: nf, rc: rc, addr: addr}, nil
}

// Accept waits for and returns the next connection. After Close it returns an error that wraps
// net.ErrClosed, as a net.Listener's does.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		var nfd int
		var sa syscall.Sockaddr
		var aerr error
		err := l.rc.Read(func(fd uintptr) bool {
			for {
				// syscall's, not x/sys/unix's: that one asks the kernel for the socket's protocol
				// (getsockopt) on every accept to decode the address.
				nfd, sa, aerr = syscall.Accept4(int(fd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
				if aerr != syscall.EINTR {
					return aerr != syscall.EAGAIN
				}
			}
		})
		if err != nil {
			if l.closed.Load() {
				err = net.ErrClosed
			}
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: err}
		}
		switch aerr {
		case nil:
		case syscall.ECONNABORTED:
			continue // the client gave up while queued
		default:
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: os.NewSyscallError("accept4", aerr)}
		}
		remote, _ := tcpAddr(sa)
		f := os.NewFile(uintptr(nfd), "")
		rc, err := f.SyscallConn()
		if err != nil {
			f.Close()
			return nil, err
		}
		return &Conn{f: f, rc: rc, remote: remote}, nil
	}
}

// Close stops accepting; an Accept waiting returns.
func (l *Listener) Close() error {
	l.closed.Store(true)
	return l.f.Close()
}

// Addr is the address the socket listens on.
func (l *Listener) Addr() net.Addr { return l.addr }

// SyscallConn gives the listening socket's descriptor (for a Loop).
func (l *Listener) SyscallConn() (syscall.RawConn, error) { return l.rc, nil }

// Conn is an accepted connection. Its deadlines and waits are those of Go's poller, as a
// net.TCPConn's.
type Conn struct {
	f      *os.File
	rc     syscall.RawConn
	remote net.Addr
}

func (c *Conn) Read(p []byte) (int, error)  { return c.f.Read(p) }
func (c *Conn) Write(p []byte) (int, error) { return c.f.Write(p) }
func (c *Conn) Close() error                { return c.f.Close() }

// RemoteAddr is the client's address, as accept4 gave it.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// LocalAddr asks the kernel (getsockname): it is rarely wanted, so not paid for at accept.
func (c *Conn) LocalAddr() net.Addr {
	var addr net.Addr
	c.rc.Control(func(fd uintptr) {
		if sa, err := unix.Getsockname(int(fd)); err == nil {
			addr, _ = tcpAddr(sa)
		}
	})
	return addr
}

func (c *Conn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

// SyscallConn gives the raw descriptor, for Read and Write of this package.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// CloseWrite shuts the sending side down: the peer reads end of file, and can still send.
func (c *Conn) CloseWrite() error {
	var err error
	if cerr := c.rc.Control(func(fd uintptr) { err = unix.Shutdown(int(fd), unix.SHUT_WR) }); cerr != nil {
		return cerr
	}
	return os.NewSyscallError("shutdown", err)
}

func tcpAddr(sa any) (*net.TCPAddr, bool) {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))), true
	case *syscall.SockaddrInet4:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))), true
	case *syscall.SockaddrInet6:
		return tcpAddr(&unix.SockaddrInet6{Port: sa.Port, ZoneId: sa.ZoneId, Addr: sa.Addr})
	case *unix.SockaddrInet6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a = a.WithZone(ifi.Name)
			}
		}
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, uint16(sa.Port))), true
	}
	return nil, false
}
