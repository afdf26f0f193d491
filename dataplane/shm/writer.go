package shm

import (
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"sync/atomic"

	"github.com/xlbproxy/xlb/dataplane/balance"
)

// Health slot fields.
const (
	offSlotKey      = 0  // FNV-1a of set name, NUL, backend id; 0 for a slot never used
	offSlotAllocGen = 8  // the generation that took the slot
	offSlotFreedGen = 16 // the first generation without the backend; 0 while it is in use
	offSlotState    = 24 // HealthWords words of health state, zeroed when the slot is taken
	// HealthWords is the number of 64-bit health-state words of a slot. What they mean is
	// dataplane/health's: this package only keeps them.
	HealthWords = 5
)

// Writer publishes generations. There is one per region, in the supervisor.
type Writer struct {
	r     *Region
	slots map[uint64]uint32 // the health slot of each (set, backend id) key in force
	after uint64            // the generations it publishes come after this one (NewWriterAfter)
	last  uint64            // the generation word as this writer last left it
}

// NewWriter takes over the region's writing, rebuilding what it must know from the region, so that
// a restarted supervisor keeps every backend's health slot.
func NewWriter(r *Region) *Writer {
	w := &Writer{r: r, slots: make(map[uint64]uint32), last: r.Generation()}
	for i := 0; i < r.l.healthSlots; i++ {
		off := r.slotOff(uint32(i))
		if key := r.load64(off + offSlotKey); key != 0 && r.load64(off+offSlotFreedGen) == 0 {
			w.slots[key] = uint32(i)
		}
	}
	return w
}

// NewWriterAfter is NewWriter for a new region that replaces one whose last generation was gen (a
// rebuilt region): its generations go on from gen+1, so that nobody sees the generation go back.
func NewWriterAfter(r *Region, gen uint64) *Writer {
	w := NewWriter(r)
	w.after = gen
	return w
}

// Last is the generation this writer published last (or found in force when it took over).
func (w *Writer) Last() uint64 { return max(w.last, w.after) }

// next is the generation the next Publish writes.
func (w *Writer) next() uint64 { return max(w.r.Generation(), w.after) + 1 }

// Verify is the region's Verify, and also checks that the generation word is the one this writer
// stored last: nobody else writes it.
func (w *Writer) Verify() error {
	if err := w.r.Verify(); err != nil {
		return err
	}
	if g := w.r.Generation(); g != w.last {
		return fmt.Errorf("%w: the generation word holds %d; its writer stored %d", ErrCorrupt, g, w.last)
	}
	return nil
}

func slotKey(set, id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(set))
	h.Write([]byte{0})
	h.Write([]byte(id))
	if k := h.Sum64(); k != 0 {
		return k
	}
	return 1
}

func (r *Region) slotOff(i uint32) int { return r.l.health + int(i)*healthSlotBytes }

// Publish writes sets as the next generation and makes it the one in force. It assigns each
// backend's HealthSlot (in sets too): the slot it had when the set already held a backend of that
// id, a free one otherwise. A slot left by a removed backend is reused only once every live worker
// has observed a generation without it. On error the region is unchanged.
func (w *Writer) Publish(sets []Set) (uint64, error) {
	r := w.r
	next := w.next()
	keys, err := keysOf(sets)
	if err != nil {
		return 0, err
	}
	// Check the capacities before taking any slot.
	pl, err := measure(sets, r.l.caps)
	if err != nil {
		return 0, err
	}
	minObserved, _ := r.MinObserved()
	var taken []uint32
	cursor := uint32(0) // the slots before it are taken: each search goes on from the last
	release := func() { // undo the slots taken by a Publish that fails
		for _, i := range taken {
			r.store64(r.slotOff(i)+offSlotKey, 0)
		}
	}
	for si := range sets {
		s := &sets[si]
		for bi := range s.Backends {
			b := &s.Backends[bi]
			k := slotKey(s.Name, b.ID)
			if i, ok := w.slots[k]; ok {
				b.HealthSlot = i
				continue
			}
			i, ok := w.freeSlot(cursor, next, minObserved)
			if !ok {
				release()
				return 0, fmt.Errorf("shm: no free health slot of %d: workers have not yet observed the generations that removed backends", r.l.healthSlots)
			}
			off := r.slotOff(i)
			for j := 0; j < HealthWords; j++ {
				r.store64(off+offSlotState+8*j, 0)
			}
			r.store64(off+offSlotAllocGen, next)
			r.store64(off+offSlotFreedGen, 0)
			r.store64(off+offSlotKey, k)
			taken = append(taken, i)
			cursor = i + 1
			b.HealthSlot = i
		}
	}
	payload := encode(sets, pl)

	h := r.l.half[next&1]
	seq := r.load64(h + offHalfSeq)
	if seq&1 == 1 {
		seq++ // a writer died mid-write: that write is void
	}
	r.store64(h+offHalfSeq, seq+1)
	r.copyIn(h+halfHeaderBytes, payload)
	r.store32(h+offHalfSetCount, uint32(len(sets)))
	r.store32(h+offHalfBackendCnt, uint32(pl.backends))
	r.store32(h+offHalfStringBytes, uint32(pl.strs))
	r.store32(h+offHalfProfileCount, uint32(len(pl.profiles)))
	r.store32(h+offHalfPayloadLen, uint32(len(payload)))
	r.store32(h+offHalfChecksum, crc32.Checksum(payload, castagnoli))
	r.store64(h+offHalfGen, next)
	r.store64(h+offHalfSeq, seq+2)
	r.store64(offGeneration, next)
	w.last = next

	// The slots of backends that are gone are free from now on, to be reused later.
	for k, i := range w.slots {
		if !keys[k] {
			r.store64(r.slotOff(i)+offSlotFreedGen, next)
			delete(w.slots, k)
		}
	}
	for _, s := range sets {
		for _, b := range s.Backends {
			w.slots[slotKey(s.Name, b.ID)] = b.HealthSlot
		}
	}
	return next, nil
}

// Check tells whether Publish(sets) would succeed now, without changing anything: the same error
// when it would not. The supervisor asks it of each set it adds, to refuse only those that do not
// fit.
func (w *Writer) Check(sets []Set) error {
	keys, err := keysOf(sets)
	if err != nil {
		return err
	}
	if _, err := measure(sets, w.r.l.caps); err != nil {
		return err
	}
	need := 0
	for k := range keys {
		if _, ok := w.slots[k]; !ok {
			need++
		}
	}
	minObserved, _ := w.r.MinObserved()
	if need > w.freeSlots(w.next(), minObserved, need) {
		return fmt.Errorf("shm: no free health slot of %d: workers have not yet observed the generations that removed backends", w.r.l.healthSlots)
	}
	return nil
}

// keysOf returns the health slot key of every backend of sets, refusing a set named twice and a
// backend id used twice in a set, and a policy that balance does not know.
func keysOf(sets []Set) (map[uint64]bool, error) {
	names := make(map[string]bool, len(sets))
	keys := make(map[uint64]bool)
	for _, s := range sets {
		if names[s.Name] {
			return nil, fmt.Errorf("shm: backend set %q named twice", s.Name)
		}
		names[s.Name] = true
		if s.Policy > balance.MaglevHash {
			return nil, fmt.Errorf("shm: backend set %q: policy %d: not a balance.Policy", s.Name, s.Policy)
		}
		if st := s.Sticky; s.Hash.Kind > HashClientAddress || st != nil && st.SameSite > SameSiteNone {
			return nil, fmt.Errorf("shm: backend set %q: hash kind %d or same site: not this package's", s.Name, s.Hash.Kind)
		}
		for _, b := range s.Backends {
			k := slotKey(s.Name, b.ID)
			if keys[k] {
				return nil, fmt.Errorf("shm: backend set %q: backend id %q used twice (or its key collides)", s.Name, b.ID)
			}
			keys[k] = true
		}
	}
	return keys, nil
}

// freeSlots counts the slots that freeSlot could give for generation next, up to upTo.
func (w *Writer) freeSlots(next, minObserved uint64, upTo int) int {
	n := 0
	for i := 0; i < w.r.l.healthSlots && n < upTo; i++ {
		if w.slotFree(uint32(i), next, minObserved) {
			n++
		}
	}
	return n
}

// freeSlot finds the first slot from from on that is free for generation next.
func (w *Writer) freeSlot(from uint32, next, minObserved uint64) (uint32, bool) {
	for i := from; int(i) < w.r.l.healthSlots; i++ {
		if w.slotFree(i, next, minObserved) {
			return i, true
		}
	}
	return 0, false
}

// slotFree tells whether slot i is free for generation next: never used, or freed by generation f
// with every live worker past f and the generation that still named it (f-1) overwritten by now
// (next >= f+2).
func (w *Writer) slotFree(i uint32, next, minObserved uint64) bool {
	off := w.r.slotOff(i)
	if w.r.load64(off+offSlotKey) == 0 {
		return true
	}
	f := w.r.load64(off + offSlotFreedGen)
	return f != 0 && next >= f+2 && minObserved >= f
}

// HealthWord returns health-state word j of slot i.
func (r *Region) HealthWord(i uint32, j int) uint64 {
	return r.load64(r.healthWordOff(i, j))
}

// SetHealthWord stores health-state word j of slot i.
func (r *Region) SetHealthWord(i uint32, j int, v uint64) {
	r.store64(r.healthWordOff(i, j), v)
}

// CompareAndSwapHealthWord stores v in health-state word j of slot i if it holds old, and tells
// whether it did: how workers and the supervisor share the words that both write.
func (r *Region) CompareAndSwapHealthWord(i uint32, j int, old, v uint64) bool {
	return atomic.CompareAndSwapUint64(r.word64(r.healthWordOff(i, j)), old, v)
}

// SwapHealthWord stores v in health-state word j of slot i and returns what it held.
func (r *Region) SwapHealthWord(i uint32, j int, v uint64) uint64 {
	return atomic.SwapUint64(r.word64(r.healthWordOff(i, j)), v)
}

func (r *Region) healthWordOff(i uint32, j int) int {
	if int(i) >= r.l.healthSlots || j < 0 || j >= HealthWords {
		panic(fmt.Sprintf("shm: health word %d of slot %d: the region has %d slots of %d words", j, i, r.l.healthSlots, HealthWords))
	}
	return r.slotOff(i) + offSlotState + 8*j
}
