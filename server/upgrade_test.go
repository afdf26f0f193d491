package server

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/dataplane/shm"
)

func TestSameListen(t *testing.T) {
	for _, c := range []struct {
		configured, bound string
		want              bool
	}{
		{"127.0.0.1:8080", "127.0.0.1:8080", true},
		{"127.0.0.1:0", "127.0.0.1:41234", true},
		{":8080", "[::]:8080", true},
		{"0.0.0.0:8080", "0.0.0.0:8080", true},
		{"127.0.0.1:8080", "127.0.0.1:8081", false},
		{"127.0.0.2:8080", "127.0.0.1:8080", false},
	} {
		if got := sameListen(c.configured, c.bound); got != c.want {
			t.Errorf("sameListen(%q, %q) = %v, want %v", c.configured, c.bound, got, c.want)
		}
	}
}

// TestFreeSlots: an upgrade's new workers take the slots no process holds, and an upgrade that
// would need more says which limit to raise.
func TestFreeSlots(t *testing.T) {
	r, err := shm.Create(filepath.Join(t.TempDir(), "region"), shm.Capacities{Sets: 1, Backends: 1, StringBytes: 16, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.ClaimWorker(0, 100, 0)
	r.ClaimWorker(2, 102, 0)
	got, err := freeSlots(r, 2)
	if err != nil || !slices.Equal(got, []int{1, 3}) {
		t.Fatalf("freeSlots = %v, %v; want [1 3]", got, err)
	}
	if _, err := freeSlots(r, 3); err == nil || !strings.Contains(err.Error(), "region.workers") {
		t.Fatalf("freeSlots(3) = %v, want an error naming region.workers", err)
	}
}

func TestPIDFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xlb.pid")
	if err := writePIDFile(path); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != strconv.Itoa(os.Getpid())+"\n" {
		t.Fatalf("pid file %q", b)
	}
	// Another supervisor took over: its file stays.
	os.WriteFile(path, []byte("1\n"), 0o644)
	removePIDFile(path)
	if _, err := os.Stat(path); err != nil {
		t.Fatal("removed another process's pid file")
	}
	writePIDFile(path)
	removePIDFile(path)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("own pid file left: %v", err)
	}
}

// TestSDNotify: the message reaches the socket systemd names in NOTIFY_SOCKET.
func TestSDNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	sdNotify("READY=1\nMAINPID=42")
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1\nMAINPID=42" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}

func TestEnvironWithout(t *testing.T) {
	t.Setenv("XLB_UPGRADE", "x")
	t.Setenv("LISTEN_FDS", "2")
	env := environWithout("XLB_UPGRADE", "LISTEN_FDS")
	for _, kv := range env {
		if strings.HasPrefix(kv, "XLB_UPGRADE=") || strings.HasPrefix(kv, "LISTEN_FDS=") {
			t.Errorf("%s kept", kv)
		}
	}
	if len(env) != len(os.Environ())-2 {
		t.Errorf("%d variables, want %d", len(env), len(os.Environ())-2)
	}
}
