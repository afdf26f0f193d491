// Package sysd is what xlb's supervisor does for systemd and its kind: the pid file, the
// readiness notification of a Type=notify service (sd_notify's protocol, without libsystemd), and
// the listening sockets of socket activation (LISTEN_FDS).
package sysd

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/xlbproxy/xlb/internal/atomicfile"
)

// WritePIDFile replaces path with this process's pid, atomically: `kill -USR2 $(cat PATH)` always
// reaches a live supervisor.
func WritePIDFile(path string) error {
	return atomicfile.Write(path, []byte(strconv.Itoa(os.Getpid())+"\n"))
}

// RemovePIDFile removes path if it still names this process.
func RemovePIDFile(path string) {
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(path)
	}
}

// Notify sends state to systemd when it runs this process as a Type=notify service.
func Notify(state string) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return
	}
	if strings.HasPrefix(sock, "@") {
		sock = "\x00" + sock[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}

// Sockets returns the listening sockets systemd passed (LISTEN_FDS), one per listener, in their
// order, or nil when there are none for this process. It clears the LISTEN_ variables, so that no
// child takes them for its own.
func Sockets(listeners int) ([]*os.File, error) {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil, nil
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	if n != listeners {
		return nil, fmt.Errorf("systemd passed %d sockets (LISTEN_FDS) for %d listeners", n, listeners)
	}
	files := make([]*os.File, n)
	for i := range files {
		name := "socket"
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		syscall.CloseOnExec(3 + i)
		files[i] = os.NewFile(uintptr(3+i), name)
	}
	return files, nil
}
