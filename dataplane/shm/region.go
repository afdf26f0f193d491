package shm

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Magic is the region's first word: "XLBSHM\x00\x01" read as a little-endian uint64.
const Magic uint64 = 0x0100_4D48_5342_4C58

// LayoutVersion is the layout this package reads and writes. Version 2 added backends' TLS: a
// version 1 region read as version 2 would lose it (TLS backends dialled in plain TCP), and the
// other way round, so neither reads the other's (ErrLayout; ErrOldLayout for an older one).
// Version 3 added the sets' affinity (hash_on, sticky: set records of 48 bytes) and the in-flight
// counters of every worker.
const LayoutVersion uint32 = 3

// Offsets of the header's fields, and the sizes of the fixed parts.
const (
	offMagic          = 0
	offVersion        = 8
	offSetsMax        = 16
	offBackendsMax    = 20
	offStringBytesMax = 24
	offWorkersMax     = 28
	offHealthSlotsMax = 32
	offHalf0          = 40
	offHalf1          = 48
	offHalfBytes      = 56
	offHealth         = 64
	offWorkers        = 72
	offTotalBytes     = 80
	offTLSProfilesMax = 88
	offInFlight       = 96  // the in-flight counters' section
	offGeneration     = 128 // on its own cache line
	offHealthEpoch    = 136 // beside it: a request reads both
	offWorkersUsed    = 144 // 1 + the highest worker slot ever claimed: least_request sums that many
	headerBytes       = 256

	// A half's header.
	offHalfSeq          = 0
	offHalfGen          = 8
	offHalfSetCount     = 16
	offHalfBackendCnt   = 20
	offHalfStringBytes  = 24
	offHalfChecksum     = 28
	offHalfPayloadLen   = 32
	offHalfProfileCount = 36
	halfHeaderBytes     = 64

	setRecordBytes     = 48
	backendRecordBytes = 32
	tlsRecordBytes     = 32
	healthSlotBytes    = 64
	workerSlotBytes    = 64
)

// Capacities are a region's sizes, fixed when it is created. The zero value of a field means its
// default.
type Capacities struct {
	// Sets bounds the backend sets of a generation. Zero means 64.
	Sets int
	// Backends bounds the backends of a generation, over all its sets. Zero means 4096.
	Backends int
	// StringBytes bounds the bytes of the names, ids and addresses of a generation. Zero means
	// 256 KiB.
	StringBytes int
	// Workers bounds the worker slots. Zero means 64.
	Workers int
	// TLSProfiles bounds the distinct TLS settings of the backends of a generation, over all its
	// sets (backends with equal settings share one). Zero means 256. Their names and paths count
	// in StringBytes, once per distinct setting.
	TLSProfiles int
}

func (c *Capacities) setDefaults() error {
	for _, f := range []struct {
		v    *int
		def  int
		name string
	}{{&c.Sets, 64, "Sets"}, {&c.Backends, 4096, "Backends"}, {&c.StringBytes, 256 << 10, "StringBytes"}, {&c.Workers, 64, "Workers"},
		{&c.TLSProfiles, 256, "TLSProfiles"}} {
		if *f.v < 0 || *f.v > 1<<24 {
			return fmt.Errorf("shm: capacity %s %d: want 0 (the default) to %d", f.name, *f.v, 1<<24)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	return c.checkInFlight()
}

// InFlightBytesMax bounds the in-flight counters of a region: an int32 for each worker slot and
// health slot (2 per backend), Workers × 2 × Backends × 4 bytes. 64 MiB allows 10,000 backends
// (4.9 MiB at 64 workers) many times over; capacities past it are refused.
const InFlightBytesMax = 64 << 20

// inFlightBytes is the size of the in-flight counters of c.
func (c Capacities) inFlightBytes() int {
	return align64(c.Workers * 2 * c.Backends * inFlightCounterBytes)
}

func (c Capacities) checkInFlight() error {
	if n := c.inFlightBytes(); n > InFlightBytesMax {
		return fmt.Errorf("shm: capacities Workers %d and Backends %d: their in-flight counters take %d bytes (Workers × 2 × Backends × 4), more than %d",
			c.Workers, c.Backends, n, InFlightBytesMax)
	}
	return nil
}

// check refuses the capacities of a header that no Create wrote: each from 1 to 1<<24.
func (c Capacities) check() error {
	for _, f := range []struct {
		v    int
		name string
	}{{c.Sets, "Sets"}, {c.Backends, "Backends"}, {c.StringBytes, "StringBytes"}, {c.Workers, "Workers"}, {c.TLSProfiles, "TLSProfiles"}} {
		if f.v < 1 || f.v > 1<<24 {
			return fmt.Errorf("its header's capacity %s is %d, outside 1 to %d", f.name, f.v, 1<<24)
		}
	}
	return c.checkInFlight()
}

// layout is where each section lies for some capacities.
type layout struct {
	caps            Capacities
	healthSlots     int
	half            [2]int
	halfBytes       int
	health, workers int
	inFlight, size  int
}

func align64(n int) int { return (n + 63) &^ 63 }

func layoutFor(c Capacities) layout {
	l := layout{caps: c, healthSlots: 2 * c.Backends}
	l.halfBytes = align64(halfHeaderBytes + c.Sets*setRecordBytes + c.Backends*backendRecordBytes + c.TLSProfiles*tlsRecordBytes + c.StringBytes)
	l.half[0] = headerBytes
	l.half[1] = l.half[0] + l.halfBytes
	l.health = l.half[1] + l.halfBytes
	l.workers = l.health + l.healthSlots*healthSlotBytes
	l.inFlight = l.workers + c.Workers*workerSlotBytes
	l.size = l.inFlight + c.inFlightBytes()
	return l
}

// Region is a mapped region.
type Region struct {
	f   *os.File
	mem []byte
	l   layout
}

// Create makes a new region file at path (mode 0600), replacing none: it fails if path exists.
// The file is built under a temporary name and linked to path only once whole, so a crash while
// creating never leaves at path a file that Open would refuse.
func Create(path string, caps Capacities) (*Region, error) {
	if err := caps.setDefaults(); err != nil {
		return nil, err
	}
	l := layoutFor(caps)
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shm: create %s: %w", path, err)
	}
	defer os.Remove(tmp)
	if err := f.Truncate(int64(l.size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: size %s: %w", path, err)
	}
	r, err := mapFile(f, l.size)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.init(l)
	if err := os.Link(tmp, path); err != nil {
		r.Close()
		return nil, fmt.Errorf("shm: create %s: %w", path, err)
	}
	return r, nil
}

// init writes the header of a new region of layout l.
func (r *Region) init(l layout) {
	r.l = l
	r.store32(offVersion, LayoutVersion)
	r.store32(offSetsMax, uint32(l.caps.Sets))
	r.store32(offBackendsMax, uint32(l.caps.Backends))
	r.store32(offStringBytesMax, uint32(l.caps.StringBytes))
	r.store32(offWorkersMax, uint32(l.caps.Workers))
	r.store32(offTLSProfilesMax, uint32(l.caps.TLSProfiles))
	r.store32(offHealthSlotsMax, uint32(l.healthSlots))
	r.store64(offHalf0, uint64(l.half[0]))
	r.store64(offHalf1, uint64(l.half[1]))
	r.store64(offHalfBytes, uint64(l.halfBytes))
	r.store64(offHealth, uint64(l.health))
	r.store64(offWorkers, uint64(l.workers))
	r.store64(offInFlight, uint64(l.inFlight))
	r.store64(offTotalBytes, uint64(l.size))
	r.store64(offMagic, Magic)
}

// Open maps the existing region file at path.
func Open(path string) (*Region, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("shm: open %s: %w", path, err)
	}
	r, err := OpenFile(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// ErrLayout is wrapped by the error of a region of another layout version, which this binary
// cannot read: it is refused, never rewritten.
var ErrLayout = errors.New("shm: not a region of this layout")

// ErrOldLayout is wrapped, beside ErrLayout, by the error of a region of a layout version older
// than this binary's: what it holds is known (an older binary wrote it), and a caller may rebuild
// it (the sets it served are known elsewhere) rather than refuse to start. One of a newer layout
// wraps ErrLayout alone.
var ErrOldLayout = errors.New("shm: a region of an older layout")

// OpenFile maps the region of an open file, such as one inherited as a file descriptor. The region
// owns f afterwards. A file that is not a whole region (zeroed, truncated, its header damaged) is
// refused with an error wrapping ErrZeroed or ErrCorrupt; one of another layout version with one
// wrapping ErrLayout.
func OpenFile(f *os.File) (*Region, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("shm: stat %s: %w", f.Name(), err)
	}
	if st.Size() < headerBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, less than a header", ErrCorrupt, f.Name(), st.Size())
	}
	r, err := mapFile(f, int(st.Size()))
	if err != nil {
		return nil, err
	}
	if m := r.load64(offMagic); m != Magic {
		r.unmap()
		return nil, magicError(f.Name(), m)
	}
	if v := r.load32(offVersion); v != LayoutVersion {
		r.unmap()
		if v < LayoutVersion {
			return nil, fmt.Errorf("%w: %w: %s has layout version %d; this binary reads %d", ErrLayout, ErrOldLayout, f.Name(), v, LayoutVersion)
		}
		return nil, fmt.Errorf("%w: %s has layout version %d; this binary reads %d", ErrLayout, f.Name(), v, LayoutVersion)
	}
	caps := Capacities{
		Sets:        int(r.load32(offSetsMax)),
		Backends:    int(r.load32(offBackendsMax)),
		StringBytes: int(r.load32(offStringBytesMax)),
		Workers:     int(r.load32(offWorkersMax)),
		TLSProfiles: int(r.load32(offTLSProfilesMax)),
	}
	if err := caps.check(); err != nil {
		r.unmap()
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, f.Name(), err)
	}
	r.l = layoutFor(caps)
	if err := r.checkHeader(); err != nil {
		r.unmap()
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	if n := len(r.mem); r.l.size != n {
		r.unmap()
		return nil, fmt.Errorf("%w: %s is %d bytes; its header says %d", ErrCorrupt, f.Name(), n, r.l.size)
	}
	return r, nil
}

// magicError is the error of a region named name whose first word is m, not Magic.
func magicError(name string, m uint64) error {
	if m == 0 {
		return fmt.Errorf("%w: %s holds magic 0, not %#x: its header was zeroed", ErrZeroed, name, Magic)
	}
	return fmt.Errorf("%w: %s holds magic %#x, not %#x: it is not a region, or its header was overwritten", ErrCorrupt, name, m, Magic)
}

// checkHeader compares the header's words with the region's layout.
func (r *Region) checkHeader() error {
	if m := r.load64(offMagic); m != Magic {
		return magicError("the region", m)
	}
	l := r.l
	for _, w := range []struct {
		name      string
		got, want uint64
	}{
		{"layout version", uint64(r.load32(offVersion)), uint64(LayoutVersion)},
		{"sets", uint64(r.load32(offSetsMax)), uint64(l.caps.Sets)},
		{"backends", uint64(r.load32(offBackendsMax)), uint64(l.caps.Backends)},
		{"string bytes", uint64(r.load32(offStringBytesMax)), uint64(l.caps.StringBytes)},
		{"workers", uint64(r.load32(offWorkersMax)), uint64(l.caps.Workers)},
		{"TLS profiles", uint64(r.load32(offTLSProfilesMax)), uint64(l.caps.TLSProfiles)},
		{"health slots", uint64(r.load32(offHealthSlotsMax)), uint64(l.healthSlots)},
		{"half 0 offset", r.load64(offHalf0), uint64(l.half[0])},
		{"half 1 offset", r.load64(offHalf1), uint64(l.half[1])},
		{"half bytes", r.load64(offHalfBytes), uint64(l.halfBytes)},
		{"health offset", r.load64(offHealth), uint64(l.health)},
		{"workers offset", r.load64(offWorkers), uint64(l.workers)},
		{"in-flight offset", r.load64(offInFlight), uint64(l.inFlight)},
		{"total bytes", r.load64(offTotalBytes), uint64(l.size)},
	} {
		if w.got != w.want {
			return fmt.Errorf("%w: its header's %s is %d, want %d", ErrCorrupt, w.name, w.got, w.want)
		}
	}
	return nil
}

// Verify checks that the region still holds what its writer put there: a header of its layout,
// and the half of the generation in force whole, matching its checksum. It returns an error
// wrapping ErrZeroed for a zeroed header, one wrapping ErrCorrupt for any other damage, and nil
// for a sound region (also one whose writer kept rewriting the half being checked). It costs a
// Read: the supervisor calls it once a second, never per request.
func (r *Region) Verify() error {
	if err := r.checkHeader(); err != nil {
		return err
	}
	if _, err := r.Read(); err != nil && err != ErrEmpty && err != ErrBusy {
		return err
	}
	return nil
}

func mapFile(f *os.File, size int) (*Region, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shm: map %s: %w", f.Name(), err)
	}
	return &Region{f: f, mem: mem}, nil
}

func (r *Region) unmap() {
	unix.Munmap(r.mem)
	r.mem = nil
}

// Close unmaps the region and closes its file.
func (r *Region) Close() error {
	r.unmap()
	return r.f.Close()
}

// File is the region's file, to pass to a worker as an inherited descriptor.
func (r *Region) File() *os.File { return r.f }

// Capacities are the region's sizes.
func (r *Region) Capacities() Capacities { return r.l.caps }

// Generation is the generation in force: one atomic load.
func (r *Region) Generation() uint64 { return r.load64(offGeneration) }

// HealthEpoch counts the changes of the health slots' routes: the supervisor bumps it after
// writing them, and a worker that sees it change reads them again. One atomic load.
func (r *Region) HealthEpoch() uint64 { return r.load64(offHealthEpoch) }

// BumpHealthEpoch tells the workers that routes in the health slots changed.
func (r *Region) BumpHealthEpoch() uint64 { return atomic.AddUint64(r.word64(offHealthEpoch), 1) }

// The accessors: every word of the region is read and written atomically.

func (r *Region) word64(off int) *uint64 {
	if off%8 != 0 || off+8 > len(r.mem) {
		panic(fmt.Sprintf("shm: 64-bit word at offset %d of a %d-byte region", off, len(r.mem)))
	}
	return (*uint64)(unsafe.Pointer(&r.mem[off]))
}

func (r *Region) word32(off int) *uint32 {
	if off%4 != 0 || off+4 > len(r.mem) {
		panic(fmt.Sprintf("shm: 32-bit word at offset %d of a %d-byte region", off, len(r.mem)))
	}
	return (*uint32)(unsafe.Pointer(&r.mem[off]))
}

func (r *Region) load64(off int) uint64     { return atomic.LoadUint64(r.word64(off)) }
func (r *Region) store64(off int, v uint64) { atomic.StoreUint64(r.word64(off), v) }
func (r *Region) load32(off int) uint32     { return atomic.LoadUint32(r.word32(off)) }
func (r *Region) store32(off int, v uint32) { atomic.StoreUint32(r.word32(off), v) }
