package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/dirlock"
)

// The files of a store's directory.
const (
	lockFile     = "LOCK"
	snapshotFile = "snapshot"
	snapshotTmp  = "snapshot.tmp"
	logPrefix    = "wal-"
	// tornPrefix names the files that keep the torn tails cut off the last log.
	tornPrefix = "torn-"
)

const (
	formatVersion     = 1
	headerBytes       = 24
	recordHeaderBytes = 8
	// recordBytesMax bounds a record's payload: a Put of a set whose encoding is bigger is refused,
	// and a length past it in a file is corruption. gRPC's default message limit (4 MiB) keeps
	// sets that come through the admin API far below it.
	recordBytesMax = 64 << 20
	// sectorBytes is the unit a power loss may leave zero-filled in the middle of a last record.
	sectorBytes = 512
	zeroRunMin  = 8
)

// Kinds of record.
const (
	kindPut    byte = 1
	kindDelete byte = 2
	kindEnd    byte = 3
)

var (
	logMagic      = [8]byte{'X', 'L', 'B', 'S', 'T', 'L', 'O', 'G'}
	snapshotMagic = [8]byte{'X', 'L', 'B', 'S', 'T', 'S', 'N', 'P'}
	castagnoli    = crc32.MakeTable(crc32.Castagnoli)
)

// errCorrupt is wrapped by every error about a file that does not check out.
var errCorrupt = errors.New("refusing to open the store, so that no acknowledged write is lost; restore the directory or move it away")

func corrupt(path string, off int64, format string, args ...any) error {
	return fmt.Errorf("store: %s: offset %d: %s: %w", path, off, fmt.Sprintf(format, args...), errCorrupt)
}

func logName(seq uint64) string { return fmt.Sprintf("%s%016x", logPrefix, seq) }

// parseLogName returns the seq of a log's file name, ok false for any other name.
func parseLogName(name string) (uint64, bool) {
	hex, ok := strings.CutPrefix(name, logPrefix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil
}

// appendHeader appends a file header.
func appendHeader(b []byte, magic [8]byte, seq uint64) []byte {
	start := len(b)
	b = append(b, magic[:]...)
	b = binary.LittleEndian.AppendUint32(b, formatVersion)
	b = binary.LittleEndian.AppendUint64(b, seq)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// parseHeader checks a file header and returns its seq.
func parseHeader(path string, b []byte, magic [8]byte) (uint64, error) {
	if len(b) < headerBytes {
		return 0, corrupt(path, 0, "header cut short: %d of %d bytes", len(b), headerBytes)
	}
	if [8]byte(b[:8]) != magic {
		return 0, corrupt(path, 0, "magic %q, want %q: not a file of this store", b[:8], magic[:])
	}
	if sum := binary.LittleEndian.Uint32(b[20:24]); sum != crc32.Checksum(b[:20], castagnoli) {
		return 0, corrupt(path, 0, "header checksum mismatch")
	}
	if v := binary.LittleEndian.Uint32(b[8:12]); v != formatVersion {
		return 0, corrupt(path, 8, "format version %d; this binary reads version %d", v, formatVersion)
	}
	return binary.LittleEndian.Uint64(b[12:20]), nil
}

// record is a decoded record.
type record struct {
	kind    byte
	set     *discoveryv1.BackendSet // put
	version string                  // put
	name    string                  // delete
	count   uint64                  // end
}

// appendPut appends a put record of set at version.
func appendPut(b []byte, set *discoveryv1.BackendSet, version string) ([]byte, error) {
	start := len(b)
	b = append(b, make([]byte, recordHeaderBytes)...)
	b = append(b, kindPut)
	b = binary.AppendUvarint(b, uint64(len(version)))
	b = append(b, version...)
	b, err := proto.MarshalOptions{}.MarshalAppend(b, set)
	if err != nil {
		return nil, fmt.Errorf("store: encode backend set %q: %w", set.GetName(), err)
	}
	return sealRecord(b, start)
}

// appendDelete appends a delete record of the set name.
func appendDelete(b []byte, name string) ([]byte, error) {
	start := len(b)
	b = append(b, make([]byte, recordHeaderBytes)...)
	b = append(b, kindDelete)
	b = append(b, name...)
	return sealRecord(b, start)
}

// appendEnd appends a snapshot's end record, for count put records.
func appendEnd(b []byte, count uint64) []byte {
	start := len(b)
	b = append(b, make([]byte, recordHeaderBytes)...)
	b = append(b, kindEnd)
	b = binary.AppendUvarint(b, count)
	b, err := sealRecord(b, start)
	if err != nil {
		panic(fmt.Sprintf("store: an end record of %d bytes is too big", len(b)-start)) // a few bytes
	}
	return b
}

// sealRecord fills in the length and checksum of the record that starts at b[start:].
func sealRecord(b []byte, start int) ([]byte, error) {
	n := len(b) - start - recordHeaderBytes
	if n > recordBytesMax {
		return nil, fmt.Errorf("store: a record of %d bytes, at most %d", n, recordBytesMax)
	}
	binary.LittleEndian.PutUint32(b[start:], uint32(n))
	sum := crc32.Update(crc32.Checksum(b[start:start+4], castagnoli), castagnoli, b[start+recordHeaderBytes:])
	binary.LittleEndian.PutUint32(b[start+4:], sum)
	return b, nil
}

// decodePayload decodes a record's payload, whose checksum has been checked.
func decodePayload(p []byte) (record, error) {
	if len(p) == 0 {
		return record{}, errors.New("empty record")
	}
	r := record{kind: p[0]}
	body := p[1:]
	switch r.kind {
	case kindPut:
		n, k := binary.Uvarint(body)
		if k <= 0 || n > uint64(len(body)-k) {
			return record{}, errors.New("put record: bad version length")
		}
		r.version = string(body[k : k+int(n)])
		r.set = new(discoveryv1.BackendSet)
		if err := proto.Unmarshal(body[k+int(n):], r.set); err != nil {
			return record{}, fmt.Errorf("put record: %w", err)
		}
		if r.set.GetName() == "" || r.version == "" {
			return record{}, errors.New("put record: no name or no version")
		}
	case kindDelete:
		if len(body) == 0 {
			return record{}, errors.New("delete record: no name")
		}
		r.name = string(body)
	case kindEnd:
		n, k := binary.Uvarint(body)
		if k <= 0 || k != len(body) {
			return record{}, errors.New("end record: bad count")
		}
		r.count = n
	default:
		return record{}, fmt.Errorf("unknown record kind %d", r.kind)
	}
	return r, nil
}

// scan reads the records of the file f (of size bytes, named path) after its header, calling
// apply with each. It returns the offset just past the last whole record. When bytes after it are
// not a whole record, torn says why, and they are a torn append: a record cut short, or a
// zero-filled tail or sector of the last record (what a crash or a power loss during an append
// leaves). A record that fails its checks in any other way is corruption: scan returns an error
// that names the file and the offset.
func scan(f *os.File, path string, size int64, apply func(off int64, r record) error) (end int64, torn string, err error) {
	off := int64(headerBytes)
	br := bufio.NewReaderSize(io.NewSectionReader(f, off, size-off), 1<<16)
	var hdr [recordHeaderBytes]byte
	var payload []byte
	for {
		left := size - off
		if left == 0 {
			return off, "", nil
		}
		if left < recordHeaderBytes {
			return off, fmt.Sprintf("a record header cut short (%d of %d bytes)", left, recordHeaderBytes), nil
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return off, "", fmt.Errorf("store: read %s: %w", path, err)
		}
		n := int64(binary.LittleEndian.Uint32(hdr[:4]))
		if n == 0 || n > recordBytesMax {
			if zero, err := zeroFrom(f, path, off, size); err != nil || zero {
				return off, "a zero-filled tail", err
			}
			return off, "", corrupt(path, off, "record length %d, want 1 to %d", n, recordBytesMax)
		}
		if n > left-recordHeaderBytes {
			// A torn append leaves a prefix of one record (each append is one): nothing whole can
			// follow it. A length that runs past the end although a whole record follows is a
			// damaged length, and cutting there would drop every acknowledged record after it.
			if at, err := wholeRecordIn(f, path, off+recordHeaderBytes, size); err != nil {
				return off, "", err
			} else if at >= 0 {
				return off, "", corrupt(path, off, "record length %d runs past the end of the file, but a whole record follows at offset %d", n, at)
			}
			return off, fmt.Sprintf("a record cut short (%d of %d bytes)", left, recordHeaderBytes+n), nil
		}
		payload = slices.Grow(payload[:0], int(n))[:n]
		if _, err := io.ReadFull(br, payload); err != nil {
			return off, "", fmt.Errorf("store: read %s: %w", path, err)
		}
		sum := crc32.Update(crc32.Checksum(hdr[:4], castagnoli), castagnoli, payload)
		if sum != binary.LittleEndian.Uint32(hdr[4:]) {
			if off+recordHeaderBytes+n == size && zeroSector(off, hdr[:], payload) {
				return off, "a last record with a zero-filled sector", nil
			}
			return off, "", corrupt(path, off, "record checksum mismatch")
		}
		r, err := decodePayload(payload)
		if err != nil {
			return off, "", corrupt(path, off, "%v", err)
		}
		if err := apply(off, r); err != nil {
			return off, "", corrupt(path, off, "%v", err)
		}
		off += recordHeaderBytes + n
	}
}

// wholeRecordIn returns the offset of the first whole record (a plausible length, a known kind, a
// matching checksum) that starts in f between from and size, or -1 when there is none. It reads
// what is after a record that runs past the end: less than recordBytesMax, and only on recovery.
func wholeRecordIn(f *os.File, path string, from, size int64) (int64, error) {
	b := make([]byte, size-from)
	if _, err := f.ReadAt(b, from); err != nil {
		return 0, fmt.Errorf("store: read %s: %w", path, err)
	}
	for i := 0; i+recordHeaderBytes < len(b); i++ {
		n := int(binary.LittleEndian.Uint32(b[i:]))
		p := i + recordHeaderBytes
		if n == 0 || n > len(b)-p || b[p] < kindPut || b[p] > kindEnd {
			continue
		}
		sum := crc32.Update(crc32.Checksum(b[i:i+4], castagnoli), castagnoli, b[p:p+n])
		if sum == binary.LittleEndian.Uint32(b[i+4:]) {
			return from + int64(i), nil
		}
	}
	return -1, nil
}

// zeroFrom reports whether every byte of f from off to size is zero.
func zeroFrom(f *os.File, path string, off, size int64) (bool, error) {
	buf := make([]byte, 1<<16)
	for off < size {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		for _, c := range buf[:n] {
			if c != 0 {
				return false, nil
			}
		}
		off += int64(n)
		if err != nil && off < size {
			return false, fmt.Errorf("store: read %s: %w", path, err)
		}
	}
	return true, nil
}

// zeroSector reports whether the record at file offset off (its header, then payload) has a part
// in one aligned sector, of at least zeroRunMin bytes, that is all zeros: what a power loss leaves
// of a sector that was never written. (A shorter part proves too little: the encoding of a set may
// hold a few zero bytes.)
func zeroSector(off int64, hdr, payload []byte) bool {
	at := func(i int64) byte {
		if i < recordHeaderBytes {
			return hdr[i]
		}
		return payload[i-recordHeaderBytes]
	}
	n := int64(len(hdr) + len(payload))
	for i := int64(0); i < n; {
		next := min(n, (off+i)/sectorBytes*sectorBytes+sectorBytes-off)
		zero := next-i >= zeroRunMin
		for j := i; j < next && zero; j++ {
			zero = at(j) == 0
		}
		if zero {
			return true
		}
		i = next
	}
	return false
}

// createLog creates (or empties) the log seq in dir, with its header, fsynced, and the directory too.
func createLog(dir string, seq uint64) (*os.File, error) {
	path := filepath.Join(dir, logName(seq))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: create log: %w", err)
	}
	if err := writeHeader(f, path, seq); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return f, nil
}

// writeHeader writes a log's header at the start of f and fsyncs it.
func writeHeader(f *os.File, path string, seq uint64) error {
	if _, err := f.WriteAt(appendHeader(nil, logMagic, seq), 0); err != nil {
		return fmt.Errorf("store: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("store: fsync %s: %w", path, err)
	}
	return nil
}

// writeSnapshot writes the sets of st as the snapshot that log seq follows: to snapshot.tmp,
// fsynced, renamed to snapshot, and the directory fsynced. It returns the snapshot's size.
func writeSnapshot(dir string, seq uint64, st *state) (size int64, err error) {
	tmp := filepath.Join(dir, snapshotTmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("store: snapshot: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	w := bufio.NewWriterSize(f, 1<<16)
	buf := appendHeader(nil, snapshotMagic, seq)
	for _, name := range st.names {
		e := st.byName[name]
		if buf, err = appendPut(buf, e.Set, e.Version); err != nil {
			return 0, err
		}
		if len(buf) >= 1<<16 {
			if _, err := w.Write(buf); err != nil {
				return 0, fmt.Errorf("store: write %s: %w", tmp, err)
			}
			size += int64(len(buf))
			buf = buf[:0]
		}
	}
	buf = appendEnd(buf, uint64(len(st.names)))
	if _, err := w.Write(buf); err != nil {
		return 0, fmt.Errorf("store: write %s: %w", tmp, err)
	}
	size += int64(len(buf))
	if err := w.Flush(); err != nil {
		return 0, fmt.Errorf("store: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("store: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("store: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, snapshotFile)); err != nil {
		return 0, fmt.Errorf("store: snapshot: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return 0, err
	}
	return size, nil
}

// syncDir fsyncs a directory, so that the files created, renamed or removed in it stay so.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: fsync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: fsync directory %s: %w", dir, err)
	}
	return nil
}

// fdatasync flushes f's data and the metadata needed to read it back (its size).
func fdatasync(f *os.File) error {
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := conn.Control(func(fd uintptr) {
		for {
			if serr = unix.Fdatasync(int(fd)); serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

// lockDir takes the lock of dir (its LOCK file, see dirlock) and writes this process's pid in it. A
// directory locked by another process is refused with that process's pid. initialized tells
// whether LOCK said that a store had been opened there before (writeLock).
func lockDir(dir string) (f *os.File, initialized bool, err error) {
	f, prev, err := dirlock.Lock(filepath.Join(dir, lockFile))
	var held *dirlock.HeldError
	if errors.As(err, &held) {
		return nil, false, fmt.Errorf("store: directory %s is in use by another control plane (pid %s); give each its own directory",
			dir, held.PID)
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: lock: %w", err)
	}
	initialized = strings.Contains(string(prev), lockInitialized)
	if err := writeLock(f, initialized); err != nil {
		f.Close()
		return nil, false, err
	}
	return f, initialized, nil
}

// lockInitialized is the line of LOCK that says a store was opened in the directory: it has had a
// log since, so a directory with that line and neither log nor snapshot lost its files.
const lockInitialized = "initialized: this directory holds a store's log"

// writeLock writes LOCK: this process's pid, and the initialized line, fsynced, when the store has
// been opened here.
func writeLock(f *os.File, initialized bool) error {
	var lines []string
	if initialized {
		lines = append(lines, lockInitialized)
	}
	if err := dirlock.Write(f, lines...); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if initialized {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("store: fsync %s: %w", f.Name(), err)
		}
	}
	return nil
}
