// Package rawio reads and writes non-blocking sockets with raw system calls: calls that do not tell
// the Go scheduler they entered the kernel.
//
// A read or write of a non-blocking socket never sleeps in the kernel, but on loopback it runs the
// whole TCP path of the peer and takes 5-30 µs. Made through syscall.Syscall, a call that long lets
// the runtime's monitor thread take the goroutine's P away and hand it to another thread, waking it
// with a futex: on a busy proxy that is a thread hand-off for a large share of its system calls,
// and the monitor itself wakes every 20 µs to look. Raw calls keep the P; the price is that no other
// goroutine runs on it for those microseconds, which is what a non-blocking call costs anyway.
//
// A caller must only pass file descriptors in non-blocking mode (every net.Conn's is).
package rawio

import (
	"syscall"
	"unsafe"
)

// Read is read(2) on a non-blocking fd. It returns syscall.EAGAIN when nothing is there.
func Read(fd uintptr, p []byte) (int, error) { return call(syscall.SYS_READ, fd, p) }

// Write is write(2) on a non-blocking fd. It returns syscall.EAGAIN when the socket's buffer is full.
func Write(fd uintptr, p []byte) (int, error) { return call(syscall.SYS_WRITE, fd, p) }

// call makes the read or write system call trap on fd and p, again after EINTR.
func call(trap, fd uintptr, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	for {
		n, _, errno := syscall.RawSyscall(trap, fd, uintptr(ptr), uintptr(len(p)))
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		}
		return 0, errno
	}
}
