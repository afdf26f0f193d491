package sysd

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestPIDFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xlb.pid")
	if err := WritePIDFile(path); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != strconv.Itoa(os.Getpid())+"\n" {
		t.Fatalf("pid file %q", b)
	}
	// Another supervisor took over: its file stays.
	os.WriteFile(path, []byte("1\n"), 0o644)
	RemovePIDFile(path)
	if _, err := os.Stat(path); err != nil {
		t.Fatal("removed another process's pid file")
	}
	WritePIDFile(path)
	RemovePIDFile(path)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("own pid file left: %v", err)
	}
}

// TestNotify: the message reaches the socket systemd names in NOTIFY_SOCKET.
func TestNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	Notify("READY=1\nMAINPID=42")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1\nMAINPID=42" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}

// TestSockets: the sockets systemd passed are taken only when they are this process's and as many
// as the listeners; the LISTEN_ variables are cleared once taken.
func TestSockets(t *testing.T) {
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "1")
	if files, err := Sockets(1); files != nil || err != nil {
		t.Fatalf("another process's sockets: %v, %v; want none", files, err)
	}
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	t.Setenv("LISTEN_FDS", "2")
	if _, err := Sockets(1); err == nil || !strings.Contains(err.Error(), "2 sockets (LISTEN_FDS) for 1 listeners") {
		t.Fatalf("2 sockets for 1 listener: %v", err)
	}
	if v := os.Getenv("LISTEN_FDS"); v != "" {
		t.Errorf("LISTEN_FDS is still %q", v)
	}
}
