package shm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"runtime"

	"github.com/xlbproxy/xlb/dataplane/balance"
)

// State is a backend's administrative state, as the control plane sets it.
type State uint8

const (
	StateActive   State = iota // takes new requests
	StateDraining              // finishes what it has, takes no new requests
	StateDisabled              // takes nothing
)

// Backend is one backend of a generation.
type Backend struct {
	ID      string
	Address string // host:port
	Weight  uint32
	State   State
	// HealthSlot is the backend's health slot, assigned by the Writer: the same for as long as a
	// backend of this id stays in this set.
	HealthSlot uint32
	// TLS is the TLS to the backend; nil means plain TCP. Backends with equal TLS share one
	// profile record of the half, and Read gives them one *TLS.
	TLS *TLS
}

// TLS is a backend's TLS settings as the region keeps them: dataplane/table.TLS, field for field
// (table converts one to the other), which says what each means. This package only keeps them.
type TLS struct {
	ServerName, CAFile, ClientCertFile, ClientKeyFile string
	MinVersion                                        uint16
	InsecureSkipVerify, NoResumption                  bool
}

// The flags byte of a TLS profile record.
const (
	tlsFlagInsecure     = 1 << 0
	tlsFlagNoResumption = 1 << 1
	tlsFlagsKnown       = tlsFlagInsecure | tlsFlagNoResumption
)

func (t *TLS) strings() int {
	return len(t.ServerName) + len(t.CAFile) + len(t.ClientCertFile) + len(t.ClientKeyFile)
}

// Set is one backend set of a generation.
type Set struct {
	Name   string
	Policy balance.Policy
	// FailureStatuses says which response statuses the workers count as a backend's failure: a
	// dataplane/health.FailureStatuses, which this package only keeps.
	FailureStatuses uint8
	// Hash is the key of policy balance.MaglevHash; the zero value is none.
	Hash HashOn
	// Sticky is the set's sticky cookie; nil means none.
	Sticky   *Sticky
	Backends []Backend
}

// HashKind is what a set's requests are hashed on; dataplane/table says what each means.
type HashKind uint8

const (
	HashNone HashKind = iota
	HashHeader
	HashCookie
	HashClientAddress
)

// HashOn is a set's hash key: a kind and, for a header or a cookie, its name.
type HashOn struct {
	Kind HashKind
	Name string
}

// SameSite is a sticky cookie's SameSite attribute; the zero value is Lax.
type SameSite uint8

const (
	SameSiteLax SameSite = iota
	SameSiteStrict
	SameSiteNone
)

// Sticky is a set's sticky cookie as the region keeps it: dataplane/table.Sticky, with its max
// age in whole seconds.
type Sticky struct {
	CookieName, Path string
	MaxAgeSeconds    uint32
	SameSite         SameSite
	NoHTTPOnly       bool
}

// The flags byte of a set record (byte 17).
const (
	setFlagSticky     = 1 << 0
	setFlagNoHTTPOnly = 1 << 1
	setFlagsKnown     = setFlagSticky | setFlagNoHTTPOnly
)

// Snapshot is one decoded generation.
type Snapshot struct {
	Generation uint64
	Sets       []Set
}

// stringLenMax bounds each name, id and address: their lengths are 16-bit fields.
const stringLenMax = 1<<16 - 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CapacityError is an update refused because it does not fit the region's capacities, which are
// fixed when its file is created.
type CapacityError struct {
	Field     string // the field of Capacities: Sets, Backends, TLSProfiles or StringBytes
	What      string // what was counted
	Need, Max int
}

func (e *CapacityError) Error() string {
	return fmt.Sprintf("shm: %d %s: more than the region's capacity of %d (Capacities.%s)", e.Need, e.What, e.Max, e.Field)
}

// plan is what a generation takes of a half, as measure counts it.
type plan struct {
	backends, strs int
	// profiles are the distinct TLS settings of the generation, in the order of their first
	// backend; profile[t] is the number a backend with TLS t names: its index in profiles plus 1.
	profiles []TLS
	profile  map[TLS]uint32
}

// measure counts the backends, TLS profiles and string bytes of sets, checking them against the
// capacities. Every error names the limit that was passed.
func measure(sets []Set, c Capacities) (plan, error) {
	var pl plan
	if len(sets) > c.Sets {
		return plan{}, &CapacityError{Field: "Sets", What: "backend sets", Need: len(sets), Max: c.Sets}
	}
	for _, s := range sets {
		pl.backends += len(s.Backends)
		pl.strs += len(s.Name) + len(s.Hash.Name)
		if len(s.Name) > stringLenMax {
			return plan{}, fmt.Errorf("shm: backend set name of %d bytes: more than %d", len(s.Name), stringLenMax)
		}
		if len(s.Hash.Name) > stringLenMax {
			return plan{}, fmt.Errorf("shm: backend set %q: hash_on name over %d bytes", s.Name, stringLenMax)
		}
		if st := s.Sticky; st != nil {
			if len(st.CookieName) > stringLenMax || len(st.Path) > stringLenMax {
				return plan{}, fmt.Errorf("shm: backend set %q: sticky cookie name or path over %d bytes", s.Name, stringLenMax)
			}
			pl.strs += len(st.CookieName) + len(st.Path)
		}
		for _, b := range s.Backends {
			if len(b.ID) > stringLenMax || len(b.Address) > stringLenMax {
				return plan{}, fmt.Errorf("shm: backend set %q: backend %.32q: id or address over %d bytes", s.Name, b.ID, stringLenMax)
			}
			pl.strs += len(b.ID) + len(b.Address)
			if b.TLS == nil {
				continue
			}
			if _, ok := pl.profile[*b.TLS]; ok {
				continue
			}
			t := *b.TLS
			for _, f := range []string{t.ServerName, t.CAFile, t.ClientCertFile, t.ClientKeyFile} {
				if len(f) > stringLenMax {
					return plan{}, fmt.Errorf("shm: backend set %q: backend %.32q: a TLS name or path over %d bytes", s.Name, b.ID, stringLenMax)
				}
			}
			if pl.profile == nil {
				pl.profile = make(map[TLS]uint32)
			}
			pl.profiles = append(pl.profiles, t)
			pl.profile[t] = uint32(len(pl.profiles))
			pl.strs += t.strings()
		}
	}
	if pl.backends > c.Backends {
		return plan{}, &CapacityError{Field: "Backends", What: "backends", Need: pl.backends, Max: c.Backends}
	}
	if n := len(pl.profiles); n > c.TLSProfiles {
		return plan{}, &CapacityError{Field: "TLSProfiles", What: "distinct TLS settings of backends", Need: n, Max: c.TLSProfiles}
	}
	if pl.strs > c.StringBytes {
		return plan{}, &CapacityError{Field: "StringBytes", What: "bytes of names, ids, addresses and TLS names and paths", Need: pl.strs, Max: c.StringBytes}
	}
	return pl, nil
}

// encode lays sets, already measured into pl, out as a half's payload.
func encode(sets []Set, pl plan) []byte {
	backendsAt := len(sets) * setRecordBytes
	profilesAt := backendsAt + pl.backends*backendRecordBytes
	stringsAt := profilesAt + len(pl.profiles)*tlsRecordBytes
	payload := make([]byte, stringsAt, stringsAt+pl.strs)
	le := binary.LittleEndian
	str := func(s string) uint32 {
		off := len(payload) - stringsAt
		payload = append(payload, s...)
		return uint32(off)
	}
	for i, t := range pl.profiles {
		rec := payload[profilesAt+i*tlsRecordBytes:]
		le.PutUint32(rec[0:], str(t.ServerName))
		le.PutUint16(rec[4:], uint16(len(t.ServerName)))
		le.PutUint16(rec[6:], uint16(len(t.CAFile)))
		le.PutUint32(rec[8:], str(t.CAFile))
		le.PutUint32(rec[12:], str(t.ClientCertFile))
		le.PutUint16(rec[16:], uint16(len(t.ClientCertFile)))
		le.PutUint16(rec[18:], uint16(len(t.ClientKeyFile)))
		le.PutUint32(rec[20:], str(t.ClientKeyFile))
		le.PutUint16(rec[24:], t.MinVersion)
		var flags byte
		if t.InsecureSkipVerify {
			flags |= tlsFlagInsecure
		}
		if t.NoResumption {
			flags |= tlsFlagNoResumption
		}
		rec[26] = flags
	}
	bi := 0
	for i, s := range sets {
		rec := payload[i*setRecordBytes:]
		le.PutUint32(rec[0:], str(s.Name))
		le.PutUint16(rec[4:], uint16(len(s.Name)))
		rec[6] = uint8(s.Policy)
		rec[7] = s.FailureStatuses
		le.PutUint32(rec[8:], uint32(bi))
		le.PutUint32(rec[12:], uint32(len(s.Backends)))
		rec[16] = byte(s.Hash.Kind)
		le.PutUint32(rec[20:], str(s.Hash.Name))
		le.PutUint16(rec[24:], uint16(len(s.Hash.Name)))
		if st := s.Sticky; st != nil {
			flags := byte(setFlagSticky)
			if st.NoHTTPOnly {
				flags |= setFlagNoHTTPOnly
			}
			rec[17] = flags
			rec[18] = byte(st.SameSite)
			le.PutUint16(rec[26:], uint16(len(st.CookieName)))
			le.PutUint32(rec[28:], str(st.CookieName))
			le.PutUint32(rec[32:], str(st.Path))
			le.PutUint16(rec[36:], uint16(len(st.Path)))
			le.PutUint32(rec[40:], st.MaxAgeSeconds)
		}
		for _, b := range s.Backends {
			rec := payload[backendsAt+bi*backendRecordBytes:]
			le.PutUint32(rec[0:], str(b.ID))
			le.PutUint16(rec[4:], uint16(len(b.ID)))
			le.PutUint16(rec[6:], uint16(len(b.Address)))
			le.PutUint32(rec[8:], str(b.Address))
			le.PutUint32(rec[12:], b.Weight)
			le.PutUint32(rec[16:], b.HealthSlot)
			rec[20] = byte(b.State)
			if b.TLS != nil {
				n, ok := pl.profile[*b.TLS]
				if !ok || n == 0 || int(n) > len(pl.profiles) {
					panic(fmt.Sprintf("shm: set %q: backend %q: its TLS is not among the %d profiles measured", s.Name, b.ID, len(pl.profiles)))
				}
				le.PutUint32(rec[24:], n)
			}
			bi++
		}
	}
	if len(payload) != stringsAt+pl.strs {
		panic(fmt.Sprintf("shm: encoded %d string bytes, measured %d", len(payload)-stringsAt, pl.strs))
	}
	return payload
}

// ErrCorrupt is wrapped by the errors of a region whose content contradicts itself (a header that
// does not match its layout, a half that fails its checksum or cannot be decoded, a generation
// word its writer did not write): a bug of the writer, or the file damaged by someone else.
var ErrCorrupt = errors.New("shm: corrupt region")

// ErrZeroed is wrapped by the errors of a region whose header was zeroed (its magic is 0): the
// file was overwritten with zeros, or truncated and grown again.
var ErrZeroed = errors.New("shm: zeroed region")

// decode reads a payload that encode made.
func decode(p []byte, setCount, backendCount, profileCount, strs int) ([]Set, error) {
	le := binary.LittleEndian
	backendsAt := setCount * setRecordBytes
	profilesAt := backendsAt + backendCount*backendRecordBytes
	stringsAt := profilesAt + profileCount*tlsRecordBytes
	if stringsAt+strs != len(p) {
		return nil, fmt.Errorf("%w: %d sets, %d backends, %d TLS profiles and %d string bytes in a %d-byte payload", ErrCorrupt, setCount, backendCount, profileCount, strs, len(p))
	}
	strings := p[stringsAt:]
	str := func(off uint32, n uint16) (string, error) {
		if int(off)+int(n) > len(strings) {
			return "", fmt.Errorf("%w: string at %d+%d past %d bytes", ErrCorrupt, off, n, len(strings))
		}
		return string(strings[off : off+uint32(n)]), nil
	}
	var profiles []TLS
	if profileCount > 0 {
		profiles = make([]TLS, profileCount)
	}
	for i := range profiles {
		rec := p[profilesAt+i*tlsRecordBytes:]
		var fields [4]string
		for j, at := range [4][2]int{{0, 4}, {8, 6}, {12, 16}, {20, 18}} { // offset, length
			f, err := str(le.Uint32(rec[at[0]:]), le.Uint16(rec[at[1]:]))
			if err != nil {
				return nil, fmt.Errorf("TLS profile %d: %w", i+1, err)
			}
			fields[j] = f
		}
		flags := rec[26]
		if flags&^tlsFlagsKnown != 0 {
			return nil, fmt.Errorf("%w: TLS profile %d has flags %#02x, of which only %#02x are known", ErrCorrupt, i+1, flags, tlsFlagsKnown)
		}
		profiles[i] = TLS{ServerName: fields[0], CAFile: fields[1], ClientCertFile: fields[2], ClientKeyFile: fields[3],
			MinVersion: le.Uint16(rec[24:]), InsecureSkipVerify: flags&tlsFlagInsecure != 0, NoResumption: flags&tlsFlagNoResumption != 0}
	}
	sets := make([]Set, setCount)
	backends := make([]Backend, backendCount)
	next := 0
	for i := range sets {
		rec := p[i*setRecordBytes:]
		name, err := str(le.Uint32(rec[0:]), le.Uint16(rec[4:]))
		if err != nil {
			return nil, err
		}
		first, n := int(le.Uint32(rec[8:])), int(le.Uint32(rec[12:]))
		if first != next || first+n > backendCount {
			return nil, fmt.Errorf("%w: set %d's backends %d+%d, want them from %d within %d", ErrCorrupt, i, first, n, next, backendCount)
		}
		next += n
		sets[i] = Set{Name: name, Policy: balance.Policy(rec[6]), FailureStatuses: rec[7], Backends: backends[first : first+n : first+n]}
		if err := decodeAffinity(&sets[i], rec, str); err != nil {
			return nil, err
		}
		for j := first; j < first+n; j++ {
			rec := p[backendsAt+j*backendRecordBytes:]
			id, err := str(le.Uint32(rec[0:]), le.Uint16(rec[4:]))
			if err != nil {
				return nil, err
			}
			addr, err := str(le.Uint32(rec[8:]), le.Uint16(rec[6:]))
			if err != nil {
				return nil, err
			}
			backends[j] = Backend{ID: id, Address: addr, Weight: le.Uint32(rec[12:]), HealthSlot: le.Uint32(rec[16:]), State: State(rec[20])}
			switch prof := le.Uint32(rec[24:]); {
			case prof == 0:
			case int(prof) > profileCount:
				return nil, fmt.Errorf("%w: set %q: backend %q names TLS profile %d of %d", ErrCorrupt, name, id, prof, profileCount)
			default:
				backends[j].TLS = &profiles[prof-1]
			}
		}
	}
	if next != backendCount {
		return nil, fmt.Errorf("%w: sets hold %d backends of %d", ErrCorrupt, next, backendCount)
	}
	return sets, nil
}

// decodeAffinity reads the hash key and sticky cookie of set record rec into s.
func decodeAffinity(s *Set, rec []byte, str func(uint32, uint16) (string, error)) error {
	le := binary.LittleEndian
	kind, flags, sameSite := HashKind(rec[16]), rec[17], SameSite(rec[18])
	if kind > HashClientAddress || flags&^setFlagsKnown != 0 || sameSite > SameSiteNone || s.Policy > balance.MaglevHash {
		return fmt.Errorf("%w: set %q: policy %d, hash kind %d, flags %#02x, same site %d: not all known", ErrCorrupt, s.Name, s.Policy, kind, flags, sameSite)
	}
	name, err := str(le.Uint32(rec[20:]), le.Uint16(rec[24:]))
	if err != nil {
		return err
	}
	s.Hash = HashOn{Kind: kind, Name: name}
	if flags&setFlagSticky == 0 {
		return nil
	}
	cookie, err := str(le.Uint32(rec[28:]), le.Uint16(rec[26:]))
	if err != nil {
		return err
	}
	path, err := str(le.Uint32(rec[32:]), le.Uint16(rec[36:]))
	if err != nil {
		return err
	}
	s.Sticky = &Sticky{CookieName: cookie, Path: path, MaxAgeSeconds: le.Uint32(rec[40:]), SameSite: sameSite, NoHTTPOnly: flags&setFlagNoHTTPOnly != 0}
	return nil
}

// ErrEmpty is returned by Read before the first generation is published.
var ErrEmpty = errors.New("shm: no generation published yet")

// ErrBusy is returned by Read when the writer rewrote the half being read every time it tried.
var ErrBusy = errors.New("shm: the writer kept rewriting the half being read")

// readTries bounds Read's attempts. A write takes microseconds and the writer publishes rarely, so
// running out means a writer gone mad, not bad luck.
const readTries = 1000

// Read decodes the generation in force. It never returns a half that was being written while it
// read: it retries until it reads one whole.
func (r *Region) Read() (Snapshot, error) {
	for try := 0; try < readTries; try++ {
		if m := r.load64(offMagic); m != Magic {
			return Snapshot{}, magicError("the region", m)
		}
		g := r.Generation()
		if g == 0 {
			return Snapshot{}, ErrEmpty
		}
		h := r.l.half[g&1]
		seq := r.load64(h + offHalfSeq)
		if hg := r.load64(h + offHalfGen); seq&1 == 1 || hg != g {
			// The writer rewrites this half (for g+2) only after it moved the generation word to
			// g+1: with the word still at g, the half is not being written but damaged.
			if r.Generation() == g {
				return Snapshot{}, fmt.Errorf("%w: generation %d: its half holds generation %d at sequence %d", ErrCorrupt, g, hg, seq)
			}
			runtime.Gosched()
			continue
		}
		setCount := int(r.load32(h + offHalfSetCount))
		backendCount := int(r.load32(h + offHalfBackendCnt))
		strs := int(r.load32(h + offHalfStringBytes))
		profileCount := int(r.load32(h + offHalfProfileCount))
		sum := r.load32(h + offHalfChecksum)
		n := int(r.load32(h + offHalfPayloadLen))
		if n > r.l.halfBytes-halfHeaderBytes {
			if r.load64(h+offHalfSeq) == seq && r.Generation() == g {
				return Snapshot{}, fmt.Errorf("%w: generation %d: a payload of %d bytes in a half of %d", ErrCorrupt, g, n, r.l.halfBytes-halfHeaderBytes)
			}
			runtime.Gosched()
			continue // a torn header
		}
		payload := make([]byte, align8(n))
		r.copyOut(payload, h+halfHeaderBytes)
		payload = payload[:n]
		if r.load64(h+offHalfSeq) != seq {
			runtime.Gosched()
			continue
		}
		if got := crc32.Checksum(payload, castagnoli); got != sum {
			return Snapshot{}, fmt.Errorf("%w: generation %d: its payload's checksum is %#x, the half says %#x", ErrCorrupt, g, got, sum)
		}
		sets, err := decode(payload, setCount, backendCount, profileCount, strs)
		if err != nil {
			return Snapshot{}, fmt.Errorf("generation %d: %w", g, err)
		}
		return Snapshot{Generation: g, Sets: sets}, nil
	}
	return Snapshot{}, ErrBusy
}

func align8(n int) int { return (n + 7) &^ 7 }

// copyOut copies len(dst) bytes (a multiple of 8) from the region at off, a word at a time.
func (r *Region) copyOut(dst []byte, off int) {
	for i := 0; i < len(dst); i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], r.load64(off+i))
	}
}

// copyIn copies src into the region at off, a word at a time; the last word is zero-padded.
func (r *Region) copyIn(off int, src []byte) {
	var w [8]byte
	for i := 0; i < len(src); i += 8 {
		n := copy(w[:], src[i:])
		clear(w[n:])
		r.store64(off+i, binary.LittleEndian.Uint64(w[:]))
	}
}
