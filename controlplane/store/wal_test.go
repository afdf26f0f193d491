package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// recordOffsets returns the offsets of the records of the file at path, and its size.
func recordOffsets(t *testing.T, path string) ([]int64, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	var offs []int64
	end, torn, err := scan(f, path, fi.Size(), func(off int64, _ record) error {
		offs = append(offs, off)
		return nil
	})
	if err != nil || torn != "" || end != fi.Size() {
		t.Fatalf("scan %s: end %d of %d, torn %q, %v", path, end, fi.Size(), torn, err)
	}
	return offs, fi.Size()
}

// fill returns a closed store in a new directory that holds sets s0..s(n-1) of backends backends
// each, all in log 1, and their versions.
func fill(t *testing.T, n, backends int) (string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	s := openT(t, dir, options{})
	for i := range n {
		if _, err := s.Put(testSet(fmt.Sprintf("s%d", i), backends, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	want := contents(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, want
}

func without(m map[string]string, name string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if k != name {
			out[k] = v
		}
	}
	return out
}

// TestTornTail damages the last record of the log as a crash or a power loss would, and checks
// that Open drops it (and only it) with a warning, and that the log takes appends again.
func TestTornTail(t *testing.T) {
	cases := []struct {
		name   string
		damage func(b []byte, last int64) []byte
	}{
		{"cut in the header", func(b []byte, last int64) []byte { return b[:last+5] }},
		{"cut after the header", func(b []byte, last int64) []byte { return b[:last+recordHeaderBytes] }},
		{"cut in the payload", func(b []byte, last int64) []byte { return b[:len(b)-1] }},
		{"zero-filled tail", func(b []byte, last int64) []byte { clear(b[last:]); return b }},
		{"zeros appended", func(b []byte, last int64) []byte { return append(b, make([]byte, 4096)...) }},
		{"a zero sector in the last record", func(b []byte, last int64) []byte {
			s := (last/sectorBytes + 1) * sectorBytes
			clear(b[s : s+sectorBytes])
			return b
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, want := fill(t, 3, 40) // records of about 2 KiB, so one spans whole sectors
			path := filepath.Join(dir, logName(1))
			offs, _ := recordOffsets(t, path)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			last := offs[len(offs)-1]
			b = c.damage(b, last)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if c.name == "zeros appended" {
				last = int64(len(b)) - 4096 // the sets are all there; the zeros go
			} else {
				want = without(want, "s2")
			}
			log, logs := testLogger()
			s, err := open(dir, log, options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if !strings.Contains(logs.String(), "[WARN]") || !strings.Contains(logs.String(), "offset="+strconv.FormatInt(last, 10)) {
				t.Errorf("no warning naming offset %d:\n%s", last, logs)
			}
			sameContents(t, contents(s), want)
			if fi, _ := os.Stat(path); fi.Size() != last {
				t.Fatalf("the log is %d bytes, want it truncated to %d", fi.Size(), last)
			}
			// What was cut off is kept, byte for byte.
			aside := filepath.Join(dir, fmt.Sprintf("%s%s-%d", tornPrefix, logName(1), last))
			if kept, err := os.ReadFile(aside); err != nil || !bytes.Equal(kept, b[last:]) {
				t.Errorf("the torn tail kept in %s: %d bytes (%v), want the %d cut off", aside, len(kept), err, len(b)-int(last))
			}
			v, err := s.Put(testSet("s9", 1, 9), nil)
			if err != nil {
				t.Fatal(err)
			}
			want["s9"] = v
			s.Close()
			s = openT(t, dir, options{})
			sameContents(t, contents(s), want)
		})
	}
}

// TestCorruptRefuses damages what a crash cannot, and checks that Open refuses with an error
// naming the file and the offset, and changes nothing.
func TestCorruptRefuses(t *testing.T) {
	cases := []struct {
		name   string
		damage func(b []byte, offs []int64) ([]byte, int64)
	}{
		{"bad checksum in the middle", func(b []byte, offs []int64) ([]byte, int64) {
			b[offs[1]+recordHeaderBytes+10] ^= 1
			return b, offs[1]
		}},
		{"bad length in the middle", func(b []byte, offs []int64) ([]byte, int64) {
			b[offs[1]+3] = 0xff
			return b, offs[1]
		}},
		{"a length in the middle that runs past the end", func(b []byte, offs []int64) ([]byte, int64) {
			b[offs[1]+2] |= 0x10 // 1 MiB more: within bounds, past the end of the file
			return b, offs[1]
		}},
		{"a length in the last record but one that runs past the end", func(b []byte, offs []int64) ([]byte, int64) {
			b[offs[len(offs)-2]+2] |= 0x10
			return b, offs[len(offs)-2]
		}},
		{"zero length in the middle", func(b []byte, offs []int64) ([]byte, int64) {
			clear(b[offs[1] : offs[1]+4])
			return b, offs[1]
		}},
		{"bad checksum in a whole last record", func(b []byte, offs []int64) ([]byte, int64) {
			b[len(b)-1] ^= 0x10
			return b, offs[len(offs)-1]
		}},
		{"bad header", func(b []byte, offs []int64) ([]byte, int64) {
			b[14] ^= 1
			return b, 0
		}},
		{"not a log", func(b []byte, offs []int64) ([]byte, int64) {
			copy(b, "garbage!")
			return b, 0
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, _ := fill(t, 4, 2)
			path := filepath.Join(dir, logName(1))
			offs, _ := recordOffsets(t, path)
			b, _ := os.ReadFile(path)
			b, off := c.damage(b, offs)
			os.WriteFile(path, b, 0o600)
			_, err := Open(dir, nil)
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("open: %v, want a refusal", err)
			}
			if want := fmt.Sprintf("%s: offset %d:", path, off); !strings.Contains(err.Error(), want) {
				t.Fatalf("the refusal %q does not say %q", err, want)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, b) {
				t.Fatal("a refused open changed the log")
			}
		})
	}
}

func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, options{compactBytesMin: 4096})
	for i := range 200 {
		if _, err := s.Put(testSet(fmt.Sprintf("s%d", i%13), 3, i), nil); err != nil {
			t.Fatal(err)
		}
		if i%7 == 6 {
			s.Delete(fmt.Sprintf("s%d", i%13), nil)
		}
	}
	want := contents(s)
	logs, _ := listLogs(dir)
	if len(logs) != 1 || logs[0] < 5 {
		t.Fatalf("logs %v: want one, after several compactions", logs)
	}
	if _, err := os.Stat(filepath.Join(dir, snapshotFile)); err != nil {
		t.Fatalf("no snapshot: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, logName(logs[0]))); fi.Size() > 4096+2048 {
		t.Fatalf("the log is %d bytes, past the bound of 4096 by more than a record", fi.Size())
	}
	s.Close()
	s = openT(t, dir, options{compactBytesMin: 4096})
	sameContents(t, contents(s), want)
}

// TestCompactionCrashes opens the directories that a crash at each step of a compaction leaves.
func TestCompactionCrashes(t *testing.T) {
	// compacted returns a directory after one compaction (snapshot + log 2, with one record), its
	// contents, and the bytes of log 1 before it was removed.
	compacted := func(t *testing.T) (string, map[string]string, []byte) {
		dir := t.TempDir()
		s := openT(t, dir, options{compactBytesMin: 1 << 30})
		for i := range 5 {
			s.Put(testSet(fmt.Sprintf("s%d", i), 2, i), nil)
		}
		log1, _ := os.ReadFile(filepath.Join(dir, logName(1)))
		s.compactAt = 0
		s.Put(testSet("s0", 2, 99), nil)
		s.compactAt = 1 << 30
		s.Put(testSet("s1", 2, 99), nil)
		want := contents(s)
		s.Close()
		if logs, _ := listLogs(dir); !slices.Equal(logs, []uint64{2}) {
			t.Fatalf("logs %v after one compaction", logs)
		}
		return dir, want, log1
	}
	t.Run("after the new log, before the snapshot", func(t *testing.T) {
		dir, want := fill(t, 5, 2)
		f, err := createLog(dir, 2)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		s := openT(t, dir, options{})
		sameContents(t, contents(s), want)
		v, _ := s.Put(testSet("s7", 1, 1), nil)
		want["s7"] = v
		s.Close()
		offs, _ := recordOffsets(t, filepath.Join(dir, logName(2)))
		if len(offs) != 1 {
			t.Fatalf("log 2 holds %d records, want the put after the reopen", len(offs))
		}
		s = openT(t, dir, options{})
		sameContents(t, contents(s), want)
	})
	t.Run("in the snapshot's writing", func(t *testing.T) {
		dir, want, _ := compacted(t)
		os.WriteFile(filepath.Join(dir, snapshotTmp), []byte("half a snapshot"), 0o600)
		s := openT(t, dir, options{})
		sameContents(t, contents(s), want)
		if _, err := os.Stat(filepath.Join(dir, snapshotTmp)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("snapshot.tmp is still there: %v", err)
		}
	})
	t.Run("after the snapshot, before the old log's removal", func(t *testing.T) {
		dir, want, log1 := compacted(t)
		os.WriteFile(filepath.Join(dir, logName(1)), log1, 0o600)
		s := openT(t, dir, options{})
		sameContents(t, contents(s), want)
		if logs, _ := listLogs(dir); !slices.Equal(logs, []uint64{2}) {
			t.Fatalf("logs %v, want the covered log 1 removed", logs)
		}
	})
	refuse := func(t *testing.T, dir, want string) {
		t.Helper()
		_, err := Open(dir, nil)
		if !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), want) {
			t.Fatalf("open: %v, want a refusal saying %q", err, want)
		}
	}
	t.Run("the snapshot's log is missing", func(t *testing.T) {
		dir, _, _ := compacted(t)
		os.Remove(filepath.Join(dir, logName(2)))
		refuse(t, dir, "the snapshot is followed by log 2, which is not there")
	})
	t.Run("the snapshot is missing", func(t *testing.T) {
		dir, _, _ := compacted(t)
		os.Remove(filepath.Join(dir, snapshotFile))
		refuse(t, dir, "is the snapshot gone?")
	})
	t.Run("the snapshot is cut short", func(t *testing.T) {
		dir, _, _ := compacted(t)
		path := filepath.Join(dir, snapshotFile)
		b, _ := os.ReadFile(path)
		os.WriteFile(path, b[:len(b)-3], 0o600)
		refuse(t, dir, path+": offset ")
	})
	t.Run("a log in the middle is missing", func(t *testing.T) {
		dir, _ := fill(t, 2, 1)
		for _, seq := range []uint64{3} {
			f, _ := createLog(dir, seq)
			f.Close()
		}
		refuse(t, dir, "logs 1 and 3 are there but not the one between")
	})
	t.Run("a torn record in a log that is not the last", func(t *testing.T) {
		dir, _ := fill(t, 2, 1)
		path := filepath.Join(dir, logName(1))
		b, _ := os.ReadFile(path)
		os.WriteFile(path, b[:len(b)-2], 0o600)
		f, _ := createLog(dir, 2)
		f.Close()
		refuse(t, dir, "in a log that is not the last")
	})
	t.Run("the last log's creation was cut short", func(t *testing.T) {
		dir, want := fill(t, 2, 1)
		os.WriteFile(filepath.Join(dir, logName(2)), make([]byte, 7), 0o600)
		s := openT(t, dir, options{})
		sameContents(t, contents(s), want)
		v, err := s.Put(testSet("s5", 1, 1), nil)
		if err != nil {
			t.Fatal(err)
		}
		want["s5"] = v
		s.Close()
		s = openT(t, dir, options{})
		sameContents(t, contents(s), want)
	})
}

// FuzzOpenLog opens a store whose log 1 is the fuzzer's bytes after a good header: Open must not
// panic, and whatever it accepts must open again to the same sets.
func FuzzOpenLog(f *testing.F) {
	var seed []byte
	for i := range 3 {
		seed, _ = appendPut(seed, testSet(fmt.Sprintf("s%d", i), 2, i), fmt.Sprintf("v%d", i))
	}
	seed, _ = appendDelete(seed, "s1")
	f.Add(seed)
	f.Add(seed[:len(seed)-3])
	f.Add(append(slices.Clone(seed), make([]byte, 600)...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, logName(1)), append(appendHeader(nil, logMagic, 1), body...), 0o600)
		s, err := Open(dir, nil)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("an error that is not a refusal: %v", err)
			}
			return
		}
		want := contents(s)
		s.Close()
		s, err = Open(dir, nil)
		if err != nil {
			t.Fatalf("reopen of what was accepted: %v", err)
		}
		defer s.Close()
		sameContents(t, contents(s), want)
	})
}

// TestOpenRefusesLostFiles: a directory that held a store (its LOCK says so) but whose logs and
// snapshot are gone is refused, naming what to do, rather than opened empty: that would erase
// every set the control plane acknowledged. Removing LOCK, as the error says, starts empty; a LOCK
// that a first open left before it made its log (a crash then) does not count.
func TestOpenRefusesLostFiles(t *testing.T) {
	dir, _ := fill(t, 3, 1)
	for _, name := range []string{logName(1), snapshotFile} {
		os.Remove(filepath.Join(dir, name))
	}
	log, _ := testLogger()
	if s, err := open(dir, log, options{}); err == nil || !strings.Contains(err.Error(), "logs and snapshot are gone") ||
		!strings.Contains(err.Error(), filepath.Join(dir, lockFile)) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("open of a store whose files are gone: %v, want a refusal that names %s", err, lockFile)
	}
	if logs, _ := listLogs(dir); len(logs) != 0 {
		t.Fatalf("the refused open made logs %v", logs)
	}
	if err := os.Remove(filepath.Join(dir, lockFile)); err != nil {
		t.Fatal(err)
	}
	s := openT(t, dir, options{})
	if n := len(contents(s)); n != 0 {
		t.Fatalf("%d sets after LOCK was removed, want none", n)
	}
	s.Close()

	// A LOCK without the initialized line, as a crash before the first log leaves.
	fresh := t.TempDir()
	if err := os.WriteFile(filepath.Join(fresh, lockFile), []byte("12345\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	openT(t, fresh, options{}).Close()
}
