// Command floor is the floor of an HTTP/1.1 server on this machine: the least a server can do per
// request, to measure what xlb's data path could reach (issue 15's first step). It answers every
// request head with one fixed response of -size bytes, from edge-triggered epoll loops each locked
// to an OS thread, with no goroutine per connection and no parsing beyond finding the end of each
// head (and a "Connection: close" in it).
//
// What it does per connection, which is what the event-loop data path is to do:
//   - one SO_REUSEPORT listening socket per loop, so the kernel spreads connections and no loop
//     wakes for another's;
//   - accept4 in a batch until EAGAIN, non-blocking and close-on-exec in the call itself, one
//     system call each (unix.Accept4 adds a getsockopt per connection: accept), with no
//     setsockopt (TCP_NODELAY is set once on the listener, and accepted sockets inherit it:
//     -nodelay-check verifies that with getsockopt);
//   - the connection registered once, edge-triggered, for input and output; read right after
//     accept, before any epoll_wait, since a client's request is usually there already;
//   - a read that fills less than the buffer is taken as draining the socket (no read to see
//     EAGAIN);
//   - close without EPOLL_CTL_DEL: closing the last descriptor removes it from the epoll set;
//   - epoll_wait blocks (timeout -1): no spinning.
//
// Usage: floor -addr 127.0.0.1:18095 -loops 2 -size 100
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18095", "listen address")
	loops := flag.Int("loops", runtime.NumCPU(), "event loops, each on its own thread and socket")
	size := flag.Int("size", 100, "response body bytes")
	nodelayCheck := flag.Bool("nodelay-check", false, "accept one connection, say whether it inherited TCP_NODELAY, exit")
	flag.Parse()
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil {
		log.Fatal(err)
	}
	resp := response(*size)
	if *nodelayCheck {
		if err := checkNoDelay(ap); err != nil {
			log.Fatal(err)
		}
		return
	}
	for i := range *loops {
		lfd, err := listen(ap)
		if err != nil {
			log.Fatalf("loop %d: %v", i, err)
		}
		go loop(lfd, resp)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

// response is the one response: a body of size bytes.
func response(size int) []byte {
	b := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n")
	return append(b, bytes.Repeat([]byte{'x'}, size)...)
}

// listen opens a non-blocking SO_REUSEPORT listening socket on ap, with TCP_NODELAY for the
// sockets it accepts to inherit.
func listen(ap netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, o := range [][2]int{{unix.SOL_SOCKET, unix.SO_REUSEADDR}, {unix.SOL_SOCKET, unix.SO_REUSEPORT}, {unix.IPPROTO_TCP, unix.TCP_NODELAY}} {
		if err := unix.SetsockoptInt(fd, o[0], o[1], 1); err != nil {
			return -1, err
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		return -1, err
	}
	return fd, unix.Listen(fd, 4096)
}

// accept is accept4(2) in one system call, without the peer's address. unix.Accept4 makes two: to
// decode an AF_INET address it asks the socket's protocol (getsockopt SO_PROTOCOL, for L2TP).
// A server that needs the address (xlb does, for X-Forwarded-For) passes a sockaddr buffer and
// decodes it itself.
func accept(lfd int) (int, error) {
	fd, _, errno := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(lfd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// conn is one connection's state: its unwritten output, and the start of a head cut by a read.
type conn struct {
	fd      int
	partial []byte // the start of a request head whose end has not come yet
	out     []byte // output not yet written
	closing bool   // close once out is written
}

const readBuf = 16 << 10

func loop(lfd int, resp []byte) {
	runtime.LockOSThread()
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		log.Fatal(err)
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(lfd)}); err != nil {
		log.Fatal(err)
	}
	conns := map[int32]*conn{}
	buf := make([]byte, readBuf)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(ep, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			log.Fatal(err)
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == lfd {
				for {
					fd, err := accept(lfd)
					if err != nil {
						break // EAGAIN: the queue is empty; anything else: try at the next event
					}
					c := &conn{fd: fd}
					if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}); err != nil {
						unix.Close(fd)
						continue
					}
					conns[int32(fd)] = c
					if !c.readable(buf, resp) {
						delete(conns, int32(fd))
					}
				}
				continue
			}
			c := conns[ev.Fd]
			if c == nil {
				continue
			}
			ok := true
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				ok = c.readable(buf, resp)
			} else if ev.Events&unix.EPOLLOUT != 0 && len(c.out) > 0 {
				ok = c.flush()
			}
			if !ok {
				delete(conns, ev.Fd)
			}
		}
	}
}

// readable reads what the socket has and answers every complete head in it. It returns false
// once the connection is closed.
func (c *conn) readable(buf, resp []byte) bool {
	for {
		n, err := unix.Read(c.fd, buf)
		if err == unix.EAGAIN {
			return true
		}
		if err != nil || n == 0 {
			unix.Close(c.fd)
			return false
		}
		in := buf[:n]
		if len(c.partial) > 0 {
			in = append(c.partial, in...)
			c.partial = c.partial[:0]
		}
		for {
			end := bytes.Index(in, []byte("\r\n\r\n"))
			if end < 0 {
				c.partial = append(c.partial, in...)
				break
			}
			head := in[:end]
			in = in[end+4:]
			c.out = append(c.out, resp...)
			if bytes.Contains(head, []byte("Connection: close")) || bytes.Contains(head, []byte("connection: close")) {
				c.closing = true
				break
			}
		}
		if !c.flush() {
			return false
		}
		if n < len(buf) {
			return true // a short read: the socket is drained, and edge triggering tells of more
		}
	}
}

// flush writes c.out; it closes the connection when it was to close once written.
func (c *conn) flush() bool {
	for len(c.out) > 0 {
		n, err := unix.Write(c.fd, c.out)
		if err == unix.EAGAIN {
			return true // EPOLLOUT, edge-triggered, says when there is room
		}
		if err != nil {
			unix.Close(c.fd)
			return false
		}
		c.out = c.out[n:]
	}
	c.out = c.out[:0]
	if c.closing {
		unix.Close(c.fd) // no EPOLL_CTL_DEL: the last close takes it out of the set
		return false
	}
	return true
}

// checkNoDelay accepts one connection on ap and says whether it inherited the listener's
// TCP_NODELAY.
func checkNoDelay(ap netip.AddrPort) error {
	lfd, err := listen(ap)
	if err != nil {
		return err
	}
	if err := unix.SetNonblock(lfd, false); err != nil {
		return err
	}
	fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		return err
	}
	v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
	if err != nil {
		return err
	}
	fmt.Printf("TCP_NODELAY of an accepted socket: %d (the listener's: 1)\n", v)
	return nil
}
