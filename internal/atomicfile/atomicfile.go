// Package atomicfile replaces a file whole: readers see the old file or the new one, never a part.
// It does not fsync: what it writes may be lost in a crash, never torn (the store, which must not
// lose acknowledged writes, fsyncs its own files).
package atomicfile

import (
	"os"
	"strconv"
)

// Write replaces path with data (mode 0600), by writing path.PID.tmp and renaming it over path:
// two processes that replace one file (the supervisors of an upgrade) never share a temporary.
func Write(path string, data []byte) error {
	tmp := path + "." + strconv.Itoa(os.Getpid()) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
