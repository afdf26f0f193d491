package supervisor

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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
