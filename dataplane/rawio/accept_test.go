package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// wait bounds every wait of these tests.
const wait = 10 * time.Second

// listener makes a Listener over a loopback listening socket, as a worker gets one: a plain
// descriptor, in blocking mode.
func listener(t *testing.T) *Listener {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		t.Fatal(err)
	}
	l, err := NewListener(os.NewFile(uintptr(fd), "listener"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestListenerConn: a connection accepted by a Listener carries bytes both ways, knows both
// addresses, has TCP_NODELAY and no keep-alive probes, honours read deadlines, and half-closes.
func TestListenerConn(t *testing.T) {
	l := listener(t)
	client, err := net.DialTimeout("tcp", l.Addr().String(), wait)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got, want := nc.RemoteAddr().String(), client.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr %s, want %s", got, want)
	}
	if got, want := nc.LocalAddr().String(), client.RemoteAddr().String(); got != want {
		t.Errorf("LocalAddr %s, want %s", got, want)
	}
	rc, _ := nc.(*Conn).SyscallConn()
	rc.Control(func(fd uintptr) {
		if v, _ := unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY); v != 1 {
			t.Errorf("TCP_NODELAY %d, want 1", v)
		}
		if v, _ := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE); v != 0 {
			t.Errorf("SO_KEEPALIVE %d, want 0", v)
		}
	})

	client.SetDeadline(time.Now().Add(wait))
	nc.SetDeadline(time.Now().Add(wait))
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(nc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if _, err := nc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v", buf, err)
	}

	// A read deadline in the past ends a read with a timeout, as on a net.Conn.
	nc.SetReadDeadline(time.Unix(1, 0))
	_, err = nc.Read(buf)
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("read past the deadline: %v, want a timeout", err)
	}
	nc.SetReadDeadline(time.Now().Add(wait))

	// Half-close: the client reads EOF and can still send.
	if err := nc.(*Conn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := client.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("client read after CloseWrite: %d, %v; want EOF", n, err)
	}
	client.Write([]byte("late"))
	if _, err := io.ReadFull(nc, buf); err != nil || string(buf) != "late" {
		t.Fatalf("read after CloseWrite %q, %v", buf, err)
	}
}

// TestListenerClose: Close ends an Accept that waits, with an error that wraps net.ErrClosed.
func TestListenerClose(t *testing.T) {
	l := listener(t)
	done := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		done <- err
	}()
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(wait):
		t.Fatal("Accept did not return after Close")
	}
}

// TestNewListenerRefuses: a descriptor that is not a TCP socket is refused.
func TestNewListenerRefuses(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	if _, err := NewListener(os.NewFile(uintptr(fds[0]), "unix")); err == nil {
		t.Fatal("NewListener took a unix socket")
	}
}
