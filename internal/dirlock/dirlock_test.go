package dirlock

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	f, prev, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(prev) != 0 {
		t.Fatalf("a new lock file held %q", prev)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lock file: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
	if err := Write(f, "a line of the caller's"); err != nil {
		t.Fatal(err)
	}
	want := strconv.Itoa(os.Getpid()) + "\na line of the caller's\n"
	if b, _ := os.ReadFile(path); string(b) != want {
		t.Fatalf("lock file holds %q, want %q", b, want)
	}

	// A second holder, even in this process, is refused with the first one's pid.
	_, _, err = Lock(path)
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("a second Lock: %v, want a *HeldError", err)
	}
	if held.Path != path || held.PID != strconv.Itoa(os.Getpid()) {
		t.Fatalf("refusal %+v, want path %s and pid %d", held, path, os.Getpid())
	}

	// Closed, it is free again, and the next holder reads what the first one wrote.
	f.Close()
	f2, prev, err := Lock(path)
	if err != nil {
		t.Fatalf("Lock after Close: %v", err)
	}
	defer f2.Close()
	if string(prev) != want {
		t.Fatalf("prev %q, want %q", prev, want)
	}
	if err := Write(f2); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != strconv.Itoa(os.Getpid())+"\n" {
		t.Fatalf("rewritten lock file holds %q, want the pid alone", b)
	}
}

func TestLockErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "lock")
	if _, _, err := Lock(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Lock in a missing directory: %v, want ErrNotExist", err)
	}
}
