package shm

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/xlbproxy/xlb/internal/atomicfile"
)

// sealedName is the name a sealed region's memfd shows in /proc/PID/fd ("/memfd:xlb-region").
const sealedName = "xlb-region"

// seals make a sealed region's size fixed for ever: ftruncate of it fails with EPERM, so no
// mapping of it can ever reach past its end (the SIGBUS that a truncated file gives every process
// that maps it).
const seals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// New makes a region in sealed memory: a memfd of the region's size that nobody can shrink or
// grow. It has no path; its processes share it as an inherited descriptor (File), and Save keeps
// a copy of it in a file.
func New(caps Capacities) (*Region, error) {
	if err := caps.setDefaults(); err != nil {
		return nil, err
	}
	l := layoutFor(caps)
	f, err := sealedFile(sealedName, l.size, nil)
	if err != nil {
		return nil, err
	}
	r, err := mapFile(f, l.size)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.init(l)
	return r, nil
}

// Load makes a sealed region (as New) holding a copy of the region file at path, which it reads
// with read(2), never mapping it: a file truncated meanwhile reads short, and is refused. It refuses
// what Open refuses, with the same errors (ErrZeroed, ErrCorrupt, ErrLayout, or one wrapping
// os.ErrNotExist).
func Load(path string) (*Region, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("shm: load %s: %w", path, err)
	}
	if len(data) < headerBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, less than a header", ErrCorrupt, path, len(data))
	}
	f, err := sealedFile(path, len(data), data)
	if err != nil {
		return nil, err
	}
	r, err := OpenFile(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// sealedFile makes a sealed memfd of size bytes holding data (zeros if nil), named name in errors.
func sealedFile(name string, size int, data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(sealedName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("shm: memfd for %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	err = f.Truncate(int64(size))
	if err == nil && data != nil {
		_, err = f.WriteAt(data, 0)
	}
	if err == nil {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: sealed memory for %s: %w", name, err)
	}
	return f, nil
}

// Sealed tells whether the region's size is sealed (New, Load): whether a truncation of it is
// impossible. A region of a file (Create, Open) is not.
func (r *Region) Sealed() bool {
	s, err := unix.FcntlInt(r.f.Fd(), unix.F_GET_SEALS, 0)
	return err == nil && s&unix.F_SEAL_SHRINK != 0
}

// Save writes a copy of the region to path (mode 0600), replacing it at once: readers of path see
// the previous copy or this one, whole. The copy is made a word at a time while the region is in
// use (workers keep writing their slots and health words); it must not run beside a Publish, or
// it may copy a half torn: the writer calls both from one goroutine. It is not synced to disk: a
// copy that a crash leaves short or zeroed is refused by Load as damaged.
func (r *Region) Save(path string) error {
	buf := make([]byte, len(r.mem))
	r.copyOut(buf, 0)
	if err := atomicfile.Write(path, buf); err != nil {
		return fmt.Errorf("shm: save %s: %w", path, err)
	}
	return nil
}

// SaveBytes is the size of a saved copy: the region's.
func (r *Region) SaveBytes() int64 { return int64(len(r.mem)) }
