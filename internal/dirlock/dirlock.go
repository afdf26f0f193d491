package dirlock

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// HeldError is the refusal of a lock that another open file holds.
type HeldError struct {
	// Path is the lock file.
	Path string
	// PID is the first line of the lock file, where its holder writes its pid; "" when the holder
	// has not written it yet or the file cannot be read.
	PID string
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("%s is locked by another process (pid %s)", e.Path, e.PID)
}

// Lock opens the lock file at path (creating it, mode 0600, when missing) and takes its exclusive
// flock without waiting. It returns the open file, which holds the lock until it is closed, and
// what the file held before (for a caller that keeps more than its pid there; see Write). A lock
// held elsewhere is refused with a *HeldError. The caller then writes its pid with Write.
func Lock(path string) (f *os.File, prev []byte, err error) {
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := read(f)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			first, _, _ := strings.Cut(string(holder), "\n")
			return nil, nil, &HeldError{Path: path, PID: strings.TrimSpace(first)}
		}
		return nil, nil, fmt.Errorf("flock %s: %w", path, err)
	}
	prev, err = read(f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, prev, nil
}

// contentBytesMax bounds what Lock reads of a lock file: a pid and a few lines of the caller's.
// Past it, the rest is not read.
const contentBytesMax = 64 << 10

// read returns the content of the lock file f, up to contentBytesMax.
func read(f *os.File) ([]byte, error) {
	b, err := io.ReadAll(io.NewSectionReader(f, 0, contentBytesMax))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return b, nil
}

// Write replaces the content of the lock file f with this process's pid, on the first line, and
// then each of lines, one a line. It does not fsync: a caller whose lines must survive a power loss
// syncs f.
func Write(f *os.File, lines ...string) error {
	b := strconv.Itoa(os.Getpid()) + "\n"
	for _, l := range lines {
		b += l + "\n"
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if _, err := f.WriteAt([]byte(b), 0); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return nil
}
