package tlsterm

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// stamp is what Watch compares of a file between two looks: which inode the path leads to (a
// rename over it, or a symlink swapped as Kubernetes does with a secret volume, changes it), and
// its size and times (an in-place rewrite changes them). A missing or unreadable file has the zero
// stamp but for missing, so that it coming back is a change.
type stamp struct {
	missing      bool
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // nanoseconds since the epoch
}

// stampOf stats path, following symlinks.
func stampOf(path string) stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{missing: true}
	}
	s := stamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.dev, s.ino = uint64(st.Dev), st.Ino
		s.ctime = st.Ctim.Nano()
	}
	return s
}

// readBounded reads the file at path, refusing one of more than limit bytes: a certificate
// chain, a key or a ticket key file is small, and a path pointed by mistake at something large
// must not make a worker read it all.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return data, nil
}
