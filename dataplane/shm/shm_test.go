package shm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/xlbproxy/xlb/dataplane/balance"
)

func TestMain(m *testing.M) {
	if os.Getenv("XLB_SHM_TEST_READER") != "" {
		os.Exit(readerProcess())
	}
	goleak.VerifyTestMain(m)
}

func create(t *testing.T, caps Capacities) (*Region, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "region")
	r, err := Create(path, caps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, path
}

// TestLayout pins every offset and size of layout version 3: a change here is a new LayoutVersion.
func TestLayout(t *testing.T) {
	consts := map[string][2]int{
		"offMagic": {offMagic, 0}, "offVersion": {offVersion, 8}, "offSetsMax": {offSetsMax, 16},
		"offBackendsMax": {offBackendsMax, 20}, "offStringBytesMax": {offStringBytesMax, 24},
		"offWorkersMax": {offWorkersMax, 28}, "offHealthSlotsMax": {offHealthSlotsMax, 32},
		"offHalf0": {offHalf0, 40}, "offHalf1": {offHalf1, 48}, "offHalfBytes": {offHalfBytes, 56},
		"offHealth": {offHealth, 64}, "offWorkers": {offWorkers, 72}, "offTotalBytes": {offTotalBytes, 80}, "offTLSProfilesMax": {offTLSProfilesMax, 88},
		"offInFlight": {offInFlight, 96}, "offWorkersUsed": {offWorkersUsed, 144}, "inFlightCounterBytes": {inFlightCounterBytes, 4},
		"offGeneration": {offGeneration, 128}, "offHealthEpoch": {offHealthEpoch, 136}, "headerBytes": {headerBytes, 256},
		"offHalfSeq": {offHalfSeq, 0}, "offHalfGen": {offHalfGen, 8}, "offHalfSetCount": {offHalfSetCount, 16},
		"offHalfBackendCnt": {offHalfBackendCnt, 20}, "offHalfStringBytes": {offHalfStringBytes, 24},
		"offHalfChecksum": {offHalfChecksum, 28}, "offHalfPayloadLen": {offHalfPayloadLen, 32}, "offHalfProfileCount": {offHalfProfileCount, 36},
		"halfHeaderBytes": {halfHeaderBytes, 64}, "setRecordBytes": {setRecordBytes, 48},
		"backendRecordBytes": {backendRecordBytes, 32}, "tlsRecordBytes": {tlsRecordBytes, 32}, "healthSlotBytes": {healthSlotBytes, 64},
		"workerSlotBytes": {workerSlotBytes, 64}, "offSlotKey": {offSlotKey, 0},
		"offSlotAllocGen": {offSlotAllocGen, 8}, "offSlotFreedGen": {offSlotFreedGen, 16},
		"offSlotState": {offSlotState, 24}, "HealthWords": {HealthWords, 5},
		"offWorkerPID": {offWorkerPID, 0}, "offWorkerObserved": {offWorkerObserved, 8},
		"offWorkerHeartbeat": {offWorkerHeartbeat, 16}, "offWorkerStarted": {offWorkerStarted, 24},
	}
	for name, c := range consts {
		if c[0] != c[1] {
			t.Errorf("%s = %d, layout version 3 has %d", name, c[0], c[1])
		}
	}
	if offSlotState+8*HealthWords > healthSlotBytes {
		t.Errorf("health words overflow their slot")
	}
	if Magic != 0x0100_4D48_5342_4C58 || LayoutVersion != 3 {
		t.Errorf("magic %#x version %d", Magic, LayoutVersion)
	}

	// Sections for two sets of capacities, and the header as bytes in the file.
	for _, tc := range []struct {
		caps                                               Capacities
		halfBytes, half1, health, workers, inFlight, total int
	}{
		// half = align64(64 + 64*48 + 4096*32 + 256*32 + 256 KiB) = 64+3072+131072+8192+262144 = 404544;
		// in-flight counters: 64 workers × 8192 health slots × 4 bytes = 2 MiB.
		{Capacities{}, 404544, 256 + 404544, 256 + 2*404544, 256 + 2*404544 + 8192*64, 256 + 2*404544 + 8192*64 + 64*64,
			256 + 2*404544 + 8192*64 + 64*64 + 64*8192*4},
		// half = align64(64 + 2*48 + 3*32 + 1*32 + 10) = align64(298) = 320; counters align64(1*6*4) = 64
		{Capacities{Sets: 2, Backends: 3, StringBytes: 10, Workers: 1, TLSProfiles: 1}, 320, 576, 896, 896 + 6*64, 896 + 6*64 + 64, 896 + 6*64 + 64 + 64},
	} {
		r, path := create(t, tc.caps)
		l := r.l
		got := []int{l.halfBytes, l.half[0], l.half[1], l.health, l.workers, l.inFlight, l.size}
		want := []int{tc.halfBytes, 256, tc.half1, tc.health, tc.workers, tc.inFlight, tc.total}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("caps %+v: halfBytes, half0, half1, health, workers, size = %v, want %v", tc.caps, got, want)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		le := binary.LittleEndian
		if len(raw) != tc.total || le.Uint64(raw[0:]) != Magic || le.Uint32(raw[8:]) != 3 || le.Uint64(raw[96:]) != uint64(tc.inFlight) ||
			int(le.Uint32(raw[88:])) != r.l.caps.TLSProfiles ||
			le.Uint64(raw[48:]) != uint64(tc.half1) || le.Uint64(raw[64:]) != uint64(tc.health) ||
			le.Uint64(raw[72:]) != uint64(tc.workers) || le.Uint64(raw[80:]) != uint64(tc.total) ||
			int(le.Uint32(raw[32:])) != 2*r.l.caps.Backends {
			t.Errorf("caps %+v: header bytes do not match the layout", tc.caps)
		}
		st, _ := os.Stat(path)
		if st.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", st.Mode().Perm())
		}
	}
}

func sampleSets() []Set {
	verified := &TLS{ServerName: "web.example", CAFile: "/etc/xlb/ca.pem", ClientCertFile: "/etc/xlb/c.pem", ClientKeyFile: "/etc/xlb/c.key", MinVersion: 0x0304}
	return []Set{
		{Name: "web", Policy: balance.LeastRequest, FailureStatuses: 2, Backends: []Backend{
			{ID: "a", Address: "127.0.0.1:9001", Weight: 1, TLS: verified},
			{ID: "b", Address: "127.0.0.1:9002", Weight: 3, State: StateDraining, TLS: &TLS{InsecureSkipVerify: true, NoResumption: true}},
			{ID: "c", Address: "127.0.0.1:9003", Weight: 1},
		}},
		{Name: "empty", Policy: balance.MaglevHash, Hash: HashOn{Kind: HashHeader, Name: "x-user"},
			Sticky: &Sticky{CookieName: "xlb_backend", Path: "/", SameSite: SameSiteNone, NoHTTPOnly: true, MaxAgeSeconds: 3600}},
		{Name: "api", Hash: HashOn{Kind: HashClientAddress}, Sticky: &Sticky{CookieName: "c", Path: "/app"}, Backends: []Backend{{ID: "x", Address: "[::1]:80", Weight: 7, State: StateDisabled, TLS: &TLS{}},
			{ID: "y", Address: "[::1]:81", Weight: 1, TLS: &TLS{ServerName: "web.example", CAFile: "/etc/xlb/ca.pem",
				ClientCertFile: "/etc/xlb/c.pem", ClientKeyFile: "/etc/xlb/c.key", MinVersion: 0x0304}}}},
	}
}

// TestTLSProfilesShared: backends with equal TLS, in any set, share one profile of the half, and
// read back as one value; plain backends name none.
func TestTLSProfilesShared(t *testing.T) {
	r, _ := create(t, Capacities{})
	if _, err := NewWriter(r).Publish(sampleSets()); err != nil {
		t.Fatal(err)
	}
	h := r.l.half[r.Generation()&1]
	if n := r.load32(h + offHalfProfileCount); n != 3 {
		t.Fatalf("%d TLS profiles in the half, want 3 (web/a and api/y share one)", n)
	}
	snap, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	web, api := snap.Sets[0].Backends, snap.Sets[2].Backends
	if web[0].TLS != api[1].TLS || web[0].TLS == nil || web[2].TLS != nil || api[0].TLS == nil || *api[0].TLS != (TLS{}) {
		t.Fatalf("read back %+v and %+v", web, api)
	}
}

func TestPublishRead(t *testing.T) {
	r, path := create(t, Capacities{})
	if _, err := r.Read(); !errors.Is(err, ErrEmpty) {
		t.Fatalf("read of a new region: %v, want ErrEmpty", err)
	}
	w := NewWriter(r)
	sets := sampleSets()
	g, err := w.Publish(sets)
	if err != nil || g != 1 {
		t.Fatalf("publish: %d, %v", g, err)
	}
	snap, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	if snap.Generation != 1 || !reflect.DeepEqual(normalize(snap.Sets), normalize(sets)) {
		t.Fatalf("read %+v, want %+v", snap, sets)
	}
	// A second mapping (as a worker or a restarted supervisor has) sees the same.
	r2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	snap2, err := r2.Read()
	if err != nil || !reflect.DeepEqual(snap2, snap) {
		t.Fatalf("second mapping read %+v, %v", snap2, err)
	}
}

// normalize makes nil and empty backend lists equal.
func normalize(sets []Set) []Set {
	out := make([]Set, len(sets))
	for i, s := range sets {
		out[i] = s
		if len(s.Backends) == 0 {
			out[i].Backends = nil
		}
	}
	return out
}

func TestCapacityErrorsNameTheLimit(t *testing.T) {
	r, _ := create(t, Capacities{Sets: 2, Backends: 2, StringBytes: 40, Workers: 1, TLSProfiles: 1})
	w := NewWriter(r)
	b := func(id string) Backend { return Backend{ID: id, Address: "1.2.3.4:5", Weight: 1} }
	tb := func(id, ca string) Backend {
		return Backend{ID: id, Address: "1.2.3.4:5", Weight: 1, TLS: &TLS{CAFile: ca}}
	}
	for _, tc := range []struct {
		sets []Set
		want string
	}{
		{[]Set{{Name: "a"}, {Name: "b"}, {Name: "c"}}, "Capacities.Sets"},
		{[]Set{{Name: "a", Backends: []Backend{b("1"), b("2"), b("3")}}}, "Capacities.Backends"},
		{[]Set{{Name: strings.Repeat("n", 41)}}, "Capacities.StringBytes"},
		{[]Set{{Name: "a", Backends: []Backend{tb("1", "x"), tb("2", "y")}}}, "Capacities.TLSProfiles"},
		{[]Set{{Name: "a", Backends: []Backend{tb("1", "/"+strings.Repeat("p", 30))}}}, "Capacities.StringBytes"},
		{[]Set{{Name: "a"}, {Name: "a"}}, `"a" named twice`},
		{[]Set{{Name: "a", Backends: []Backend{b("1"), b("1")}}}, `id "1" used twice`},
		{[]Set{{Name: "a", Policy: balance.MaglevHash + 1}}, `"a": policy 3: not a balance.Policy`},
		{[]Set{{Name: strings.Repeat("n", 20), Hash: HashOn{Kind: HashHeader, Name: strings.Repeat("h", 21)}}}, "Capacities.StringBytes"},
		{[]Set{{Name: "a", Sticky: &Sticky{CookieName: strings.Repeat("c", 20), Path: "/" + strings.Repeat("p", 19)}}}, "Capacities.StringBytes"},
	} {
		checked := w.Check(tc.sets)
		_, err := w.Publish(tc.sets)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("publish %d sets: %v, want an error naming %s", len(tc.sets), err, tc.want)
		}
		if checked == nil || checked.Error() != err.Error() {
			t.Errorf("check of %d sets: %v, want Publish's error %v", len(tc.sets), checked, err)
		}
	}
	if g := r.Generation(); g != 0 {
		t.Fatalf("refused updates moved the generation to %d", g)
	}
}

// TestCheckAgreesWithPublish: over random generations in a small region (sets, backends and health
// slots running out, workers lagging), Check refuses exactly what Publish refuses, and changes
// nothing.
func TestCheckAgreesWithPublish(t *testing.T) {
	r, _ := create(t, Capacities{Sets: 3, Backends: 6, StringBytes: 200, Workers: 1, TLSProfiles: 2})
	w := NewWriter(r)
	r.ClaimWorker(0, os.Getpid(), 1)
	rng := rand.New(rand.NewPCG(1, 2))
	// A few TLS settings, so that backends share them and the profiles and their strings run out.
	settings := []*TLS{nil, nil, {}, {ServerName: "a.example"}, {CAFile: "/ca/" + strings.Repeat("x", 40)}, {NoResumption: true}}
	refused := 0
	for step := range 2000 {
		var sets []Set
		for si := range rng.IntN(4) {
			s := Set{Name: fmt.Sprint("s", si)}
			// The affinity's strings count against StringBytes too.
			switch rng.IntN(4) {
			case 1:
				s.Policy, s.Hash = balance.MaglevHash, HashOn{Kind: HashHeader, Name: strings.Repeat("h", rng.IntN(30))}
			case 2:
				s.Hash = HashOn{Kind: HashClientAddress}
			}
			if rng.IntN(3) == 0 {
				s.Sticky = &Sticky{CookieName: strings.Repeat("c", 1+rng.IntN(20)), Path: "/" + strings.Repeat("p", rng.IntN(20)),
					MaxAgeSeconds: uint32(rng.IntN(1000)), SameSite: SameSite(rng.IntN(3)), NoHTTPOnly: rng.IntN(2) == 0}
			}
			for range rng.IntN(4) {
				var tls *TLS
				if t := settings[rng.IntN(len(settings))]; t != nil {
					c := *t // an equal value, not the same pointer
					tls = &c
				}
				s.Backends = append(s.Backends, Backend{ID: fmt.Sprint("b", rng.IntN(20)), Address: "10.0.0.1:80", Weight: 1, TLS: tls})
			}
			sets = append(sets, s)
		}
		gen := r.Generation()
		checked := w.Check(sets)
		if r.Generation() != gen {
			t.Fatalf("step %d: Check moved the generation", step)
		}
		_, err := w.Publish(sets)
		if (checked == nil) != (err == nil) || err != nil && checked.Error() != err.Error() {
			t.Fatalf("step %d: Check %v, Publish %v", step, checked, err)
		}
		if err != nil {
			refused++
		} else if snap, err := r.Read(); err != nil || !reflect.DeepEqual(normalize(snap.Sets), normalize(sets)) {
			t.Fatalf("step %d: read back %+v, %v; published %+v", step, snap.Sets, err, sets)
		}
		if rng.IntN(3) == 0 { // the worker catches up now and then
			r.Observe(0, r.Generation())
		}
	}
	if refused == 0 || refused == 2000 {
		t.Fatalf("%d of 2000 refused: the test does not reach both outcomes", refused)
	}
	t.Logf("%d of 2000 generations refused", refused)
}

// TestHealthWordOps: the atomic operations on health words and the health epoch, which workers and
// the supervisor share.
func TestHealthWordOps(t *testing.T) {
	r, _ := create(t, Capacities{Backends: 1})
	if r.HealthEpoch() != 0 {
		t.Fatalf("a new region's health epoch is %d", r.HealthEpoch())
	}
	if r.BumpHealthEpoch() != 1 || r.BumpHealthEpoch() != 2 || r.HealthEpoch() != 2 {
		t.Fatalf("health epoch %d after two bumps", r.HealthEpoch())
	}
	if !r.CompareAndSwapHealthWord(1, 4, 0, 7) || r.CompareAndSwapHealthWord(1, 4, 0, 8) || r.HealthWord(1, 4) != 7 {
		t.Fatalf("compare-and-swap: word %d", r.HealthWord(1, 4))
	}
	if old := r.SwapHealthWord(1, 4, 9); old != 7 || r.HealthWord(1, 4) != 9 {
		t.Fatalf("swap returned %d, left %d", old, r.HealthWord(1, 4))
	}
	defer func() {
		if recover() == nil {
			t.Error("a health word past the slot's words did not panic")
		}
	}()
	r.CompareAndSwapHealthWord(0, HealthWords, 0, 1)
}

// TestHealthSlotStaysAcrossFlips: a flip that keeps a backend leaves its health slot, and the
// state in it, unchanged; a removed backend's slot is reused only once no generation names it.
func TestHealthSlotStaysAcrossFlips(t *testing.T) {
	r, path := create(t, Capacities{Backends: 2})
	w := NewWriter(r)
	gen1 := []Set{{Name: "web", Backends: []Backend{{ID: "a", Address: "h:1", Weight: 1}, {ID: "b", Address: "h:2", Weight: 1}}}}
	if _, err := w.Publish(gen1); err != nil {
		t.Fatal(err)
	}
	slotA, slotB := gen1[0].Backends[0].HealthSlot, gen1[0].Backends[1].HealthSlot
	r.SetHealthWord(slotA, 0, 0xfeed) // as the health machine would
	// Generation 2 reweights a, drops b, adds c.
	gen2 := []Set{{Name: "web", Backends: []Backend{{ID: "c", Address: "h:3", Weight: 1}, {ID: "a", Address: "h:1", Weight: 9}}}}
	if _, err := w.Publish(gen2); err != nil {
		t.Fatal(err)
	}
	if got := gen2[0].Backends[1].HealthSlot; got != slotA {
		t.Fatalf("a moved from slot %d to %d", slotA, got)
	}
	if v := r.HealthWord(slotA, 0); v != 0xfeed {
		t.Fatalf("a's health state %#x after the flip, want 0xfeed", v)
	}
	slotC := gen2[0].Backends[0].HealthSlot
	if slotC == slotB || slotC == slotA {
		t.Fatalf("c took slot %d, still named by generation 1 (a %d, b %d)", slotC, slotA, slotB)
	}
	// A worker still serving generation 1 keeps b's slot from being reused.
	r.ClaimWorker(0, 4242, 1)
	r.Observe(0, 1)
	gen3 := []Set{{Name: "web", Backends: []Backend{{ID: "a", Address: "h:1", Weight: 9}, {ID: "d", Address: "h:4", Weight: 1}}}}
	if _, err := w.Publish(gen3); err != nil {
		t.Fatal(err)
	}
	if s := gen3[0].Backends[1].HealthSlot; s == slotB {
		t.Fatalf("d took b's slot %d while a worker serves generation 1", s)
	}
	// A restarted supervisor (a new Writer over the same file) keeps the slots.
	r2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	again := []Set{{Name: "web", Backends: []Backend{{ID: "a", Address: "h:1", Weight: 1}}}}
	if _, err := NewWriter(r2).Publish(again); err != nil {
		t.Fatal(err)
	}
	if got := again[0].Backends[0].HealthSlot; got != slotA {
		t.Fatalf("after a restart a is in slot %d, want %d", got, slotA)
	}
}

func TestOpenRefusesOtherLayouts(t *testing.T) {
	r, path := create(t, Capacities{Sets: 1, Backends: 1, StringBytes: 8, Workers: 1})
	r.store32(offVersion, 4)
	if _, err := Open(path); !errors.Is(err, ErrLayout) || errors.Is(err, ErrOldLayout) || !strings.Contains(err.Error(), "layout version 4") {
		t.Fatalf("open of a version 4 region: %v", err)
	}
	// Versions 1 (before TLS) and 2 (before affinity): older layouts, which the caller may rebuild.
	for _, v := range []uint32{1, 2} {
		r.store32(offVersion, v)
		if _, err := Open(path); !errors.Is(err, ErrLayout) || !errors.Is(err, ErrOldLayout) || !strings.Contains(err.Error(), fmt.Sprintf("layout version %d", v)) {
			t.Fatalf("open of a version %d region: %v", v, err)
		}
		if _, err := Load(path); !errors.Is(err, ErrOldLayout) {
			t.Fatalf("load of a version %d region: %v", v, err)
		}
	}
	r.store32(offVersion, LayoutVersion)
	r.store64(offMagic, 42)
	if _, err := Open(path); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "magic") {
		t.Fatalf("open with a bad magic: %v, want ErrCorrupt", err)
	}
	r.store64(offMagic, Magic)
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("tiny"), 0o600)
	if _, err := Open(short); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open of a 4-byte file: %v, want ErrCorrupt", err)
	}
	if _, err := Create(path, Capacities{}); err == nil {
		t.Fatal("Create replaced an existing file")
	}
	// Neither the Create that made path nor the one refused left its temporary file behind.
	if names, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*")); len(names) != 1 || names[0] != path {
		t.Fatalf("the directory holds %v, want only %s", names, path)
	}
}

// TestDamageIsNamed: every kind of damage to a region is told apart from a region being written,
// by a named error that says what is wrong: a zeroed header (ErrZeroed) from Open, Read and
// Verify; a flipped payload byte, a half that holds another generation, a header word changed, a
// file cut short, a generation word its writer did not store (ErrCorrupt). A sound region verifies.
func TestDamageIsNamed(t *testing.T) {
	setup := func(t *testing.T) (*Region, *Writer, string, *os.File) {
		r, path := create(t, Capacities{Sets: 2, Backends: 4, StringBytes: 128, Workers: 2})
		w := NewWriter(r)
		for range 3 { // generation 3 is in half 1
			if _, err := w.Publish(sampleSets()[:1]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Verify(); err != nil {
			t.Fatalf("Verify of a sound region: %v", err)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return r, w, path, f
	}
	// poke writes b at off through the file, as another process would (the mapping is shared).
	poke := func(t *testing.T, f *os.File, off int, b []byte) {
		t.Helper()
		if _, err := f.WriteAt(b, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	want := func(t *testing.T, what string, err, kind error, text string) {
		t.Helper()
		if !errors.Is(err, kind) || !strings.Contains(err.Error(), text) {
			t.Errorf("%s: %v; want %v saying %q", what, err, kind, text)
		}
	}

	t.Run("zeroed", func(t *testing.T) {
		r, w, path, f := setup(t)
		poke(t, f, 0, make([]byte, headerBytes))
		_, err := r.Read()
		want(t, "Read", err, ErrZeroed, "zeroed")
		want(t, "Verify", r.Verify(), ErrZeroed, "magic 0")
		want(t, "Writer.Verify", w.Verify(), ErrZeroed, "magic 0")
		_, err = Open(path)
		want(t, "Open", err, ErrZeroed, path)
	})
	t.Run("payload byte", func(t *testing.T) {
		r, w, _, f := setup(t)
		off := r.l.half[1] + halfHeaderBytes + 3
		b := []byte{0}
		f.ReadAt(b, int64(off))
		poke(t, f, off, []byte{b[0] ^ 0x10})
		_, err := r.Read()
		want(t, "Read", err, ErrCorrupt, "checksum")
		want(t, "Verify", r.Verify(), ErrCorrupt, "generation 3")
		want(t, "Writer.Verify", w.Verify(), ErrCorrupt, "checksum")
	})
	t.Run("half of another generation", func(t *testing.T) {
		r, _, _, _ := setup(t)
		r.store64(r.l.half[1]+offHalfGen, 7)
		_, err := r.Read()
		want(t, "Read", err, ErrCorrupt, "holds generation 7")
		r.store64(r.l.half[1]+offHalfGen, 3)
		r.store64(r.l.half[1]+offHalfSeq, r.load64(r.l.half[1]+offHalfSeq)+1) // odd: as if being written
		want(t, "Verify of an odd sequence under an unchanged generation word", r.Verify(), ErrCorrupt, "sequence")
	})
	t.Run("header word", func(t *testing.T) {
		r, _, path, _ := setup(t)
		r.store64(offHealth, r.load64(offHealth)+64)
		want(t, "Verify", r.Verify(), ErrCorrupt, "health offset")
		_, err := Open(path)
		want(t, "Open", err, ErrCorrupt, "health offset")
	})
	t.Run("cut short", func(t *testing.T) {
		_, _, _, f := setup(t)
		st, _ := f.Stat()
		cut := filepath.Join(t.TempDir(), "cut")
		b := make([]byte, st.Size()-64)
		f.ReadAt(b, 0)
		os.WriteFile(cut, b, 0o600)
		_, err := Open(cut)
		want(t, "Open", err, ErrCorrupt, fmt.Sprintf("is %d bytes; its header says %d", len(b), st.Size()))
	})
	t.Run("generation word", func(t *testing.T) {
		r, w, _, _ := setup(t)
		r.store64(offGeneration, 0)
		if err := r.Verify(); err != nil {
			t.Errorf("Region.Verify of generation 0 (nothing published, as far as it can tell): %v", err)
		}
		want(t, "Writer.Verify", w.Verify(), ErrCorrupt, "the generation word holds 0; its writer stored 3")
	})
}

// TestNewWriterAfter: a rebuilt region's generations go on from the one it replaces.
func TestNewWriterAfter(t *testing.T) {
	r, _ := create(t, Capacities{Sets: 2, Backends: 4, StringBytes: 128, Workers: 2})
	w := NewWriterAfter(r, 41)
	if err := w.Check(sampleSets()[:1]); err != nil {
		t.Fatal(err)
	}
	g, err := w.Publish(sampleSets()[:1])
	if err != nil || g != 42 {
		t.Fatalf("first publish of a region rebuilt after generation 41: %d, %v; want 42", g, err)
	}
	if snap, err := r.Read(); err != nil || snap.Generation != 42 {
		t.Fatalf("Read: %+v, %v; want generation 42", snap, err)
	}
	if err := w.Verify(); err != nil {
		t.Fatal(err)
	}
	if g, err := w.Publish(nil); err != nil || g != 43 {
		t.Fatalf("second publish: %d, %v; want 43", g, err)
	}
}

// genSets is the content of generation g in the stress tests: derived from g, so that a reader can
// tell a torn read (a mix of two generations) from a whole one.
func genSets(g uint64) []Set {
	n := int(g%7) + 1
	sets := make([]Set, 1+int(g%3))
	for i := range sets {
		s := Set{Name: fmt.Sprintf("set%d-g%d", i, g)}
		for j := 0; j < n; j++ {
			s.Backends = append(s.Backends, Backend{
				ID:      fmt.Sprintf("b%d", j),
				Address: fmt.Sprintf("10.0.%d.%d:%d", i, j, g%65536),
				Weight:  uint32(g),
			})
		}
		sets[i] = s
	}
	return sets
}

// checkWhole reports how snap differs from what generation snap.Generation holds.
func checkWhole(snap Snapshot) error {
	want := genSets(snap.Generation)
	if len(snap.Sets) != len(want) {
		return fmt.Errorf("generation %d: %d sets, want %d", snap.Generation, len(snap.Sets), len(want))
	}
	for i := range want {
		got := snap.Sets[i]
		if got.Name != want[i].Name || len(got.Backends) != len(want[i].Backends) {
			return fmt.Errorf("generation %d: set %d is %q with %d backends", snap.Generation, i, got.Name, len(got.Backends))
		}
		for j, b := range got.Backends {
			wb := want[i].Backends[j]
			if b.ID != wb.ID || b.Address != wb.Address || b.Weight != wb.Weight {
				return fmt.Errorf("generation %d: set %d backend %d is %+v, want %+v", snap.Generation, i, j, b, wb)
			}
		}
	}
	return nil
}

// TestStressFlips flips generations thousands of times while readers in this process read; run with
// -race. No reader may see a generation that is not whole.
func TestStressFlips(t *testing.T) {
	r, _ := create(t, Capacities{Sets: 4, Backends: 64, StringBytes: 4096, Workers: 1})
	w := NewWriter(r)
	const flips = 5000
	var stop atomic.Bool
	var reads atomic.Int64
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := uint64(0)
			for !stop.Load() {
				snap, err := r.Read()
				if errors.Is(err, ErrEmpty) || errors.Is(err, ErrBusy) {
					continue
				}
				if err == nil {
					err = checkWhole(snap)
				}
				if err == nil && snap.Generation < last {
					err = fmt.Errorf("generation went back from %d to %d", last, snap.Generation)
				}
				if err != nil {
					errs <- err
					return
				}
				last = snap.Generation
				reads.Add(1)
			}
		}()
	}
	for g := uint64(1); g <= flips; g++ {
		if _, err := w.Publish(genSets(g)); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d flips, %d whole reads", flips, reads.Load())
	if reads.Load() == 0 {
		t.Fatal("the readers read nothing")
	}
}

// TestStressFlipsAcrossProcesses is TestStressFlips with the readers in other processes (this test
// binary, re-executed), mapping the same file, as workers do.
func TestStressFlipsAcrossProcesses(t *testing.T) {
	r, path := create(t, Capacities{Sets: 4, Backends: 64, StringBytes: 4096, Workers: 1})
	w := NewWriter(r)
	if _, err := w.Publish(genSets(1)); err != nil {
		t.Fatal(err)
	}
	const flips = 5000
	var readers []*exec.Cmd
	var outs []*strings.Builder
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		out := new(strings.Builder)
		cmd.Env = append(os.Environ(), "XLB_SHM_TEST_READER="+path, "XLB_SHM_TEST_LAST="+strconv.Itoa(flips))
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		readers, outs = append(readers, cmd), append(outs, out)
	}
	for g := uint64(2); g <= flips; g++ {
		if _, err := w.Publish(genSets(g)); err != nil {
			t.Fatal(err)
		}
	}
	for i, cmd := range readers {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("reader %d: %v\n%s", i, err, outs[i])
			} else {
				t.Logf("reader %d: %s", i, strings.TrimSpace(outs[i].String()))
			}
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("reader %d did not see generation %d within 60s\n%s", i, flips, outs[i])
		}
	}
}

// readerProcess is the body of a re-executed reader: it reads until it has seen the last
// generation, checking every read, and exits 1 on a torn one.
func readerProcess() int {
	path := os.Getenv("XLB_SHM_TEST_READER")
	last, _ := strconv.ParseUint(os.Getenv("XLB_SHM_TEST_LAST"), 10, 64)
	r, err := Open(path)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer r.Close()
	reads, distinct, seen := 0, 0, uint64(0)
	deadline := time.Now().Add(50 * time.Second)
	for seen < last && time.Now().Before(deadline) {
		snap, err := r.Read()
		if errors.Is(err, ErrBusy) {
			continue
		}
		if err == nil {
			err = checkWhole(snap)
		}
		if err != nil {
			fmt.Println("torn or bad read:", err)
			return 1
		}
		reads++
		if snap.Generation != seen {
			distinct++
			seen = snap.Generation
		}
	}
	fmt.Printf("%d whole reads of %d distinct generations, the last %d\n", reads, distinct, seen)
	if seen < last {
		return 1
	}
	return 0
}

// TestSealedRegion: a region of New cannot be truncated or grown, through its descriptor or
// through /proc (as an operator's truncate of /proc/PID/fd/N would try), so no mapping of it
// ever faults; another mapping of it (a worker's) shares its words; Save and Load carry its
// generation and health words through a file, and Load refuses a saved copy that was damaged.
func TestSealedRegion(t *testing.T) {
	r, err := New(Capacities{Sets: 2, Backends: 4, StringBytes: 128, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !r.Sealed() {
		t.Fatal("a region of New is not sealed")
	}
	if c, _ := create(t, Capacities{Sets: 1, Backends: 1, StringBytes: 8, Workers: 1}); c.Sealed() {
		t.Error("a region of a file says it is sealed")
	}
	w := NewWriter(r)
	sets := sampleSets()[:1]
	if _, err := w.Publish(sets); err != nil {
		t.Fatal(err)
	}
	size := r.SaveBytes()
	proc := fmt.Sprintf("/proc/self/fd/%d", r.File().Fd())
	for what, truncate := range map[string]func(int64) error{
		"ftruncate":                   r.File().Truncate,
		"truncate of /proc/self/fd/N": func(n int64) error { return os.Truncate(proc, n) },
	} {
		for _, n := range []int64{0, size / 2, size + 4096} {
			if err := truncate(n); !errors.Is(err, syscall.EPERM) {
				t.Errorf("%s to %d bytes: %v, want EPERM", what, n, err)
			}
		}
	}
	if st, err := r.File().Stat(); err != nil || st.Size() != size {
		t.Fatalf("after the truncations: %v, %v; want %d bytes", st, err, size)
	}
	f, err := os.OpenFile(proc, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := OpenFile(f)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	r.SetHealthWord(sets[0].Backends[0].HealthSlot, 2, 0xfeed)
	if v := r2.HealthWord(sets[0].Backends[0].HealthSlot, 2); v != 0xfeed {
		t.Errorf("the second mapping reads %#x, want 0xfeed", v)
	}

	path := filepath.Join(t.TempDir(), "region")
	if err := r.Save(path); err != nil {
		t.Fatal(err)
	}
	l, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	want, _ := r.Read()
	if got, err := l.Read(); err != nil || !reflect.DeepEqual(got, want) || !l.Sealed() {
		t.Fatalf("Load of the saved copy: %+v, %v, sealed %v; want %+v, sealed", got, err, l.Sealed(), want)
	}
	if v := l.HealthWord(sets[0].Backends[0].HealthSlot, 2); v != 0xfeed {
		t.Errorf("the loaded copy's health word %#x, want 0xfeed", v)
	}
	if names, _ := filepath.Glob(path + "*"); len(names) != 1 {
		t.Errorf("Save left %v, want only %s", names, path)
	}

	os.Truncate(path, size/2)
	if _, err := Load(path); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Load of a copy cut to %d bytes: %v, want ErrCorrupt", size/2, err)
	}
	os.WriteFile(path, make([]byte, size), 0o600)
	if _, err := Load(path); !errors.Is(err, ErrZeroed) {
		t.Errorf("Load of a zeroed copy: %v, want ErrZeroed", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of no file: %v, want os.ErrNotExist", err)
	}
}

// TestDecodeRefusesBadTLSProfiles: a backend naming a TLS profile the half does not hold, or a
// profile with flags this layout does not know, is a corrupt payload, never a plain backend.
func TestDecodeRefusesBadTLSProfiles(t *testing.T) {
	sets := sampleSets()
	pl, err := measure(sets, Capacities{Sets: 8, Backends: 8, StringBytes: 1 << 10, TLSProfiles: 8})
	if err != nil {
		t.Fatal(err)
	}
	good := encode(sets, pl)
	if _, err := decode(good, len(sets), pl.backends, len(pl.profiles), pl.strs); err != nil {
		t.Fatalf("decode of a good payload: %v", err)
	}
	backendsAt := len(sets) * setRecordBytes
	profilesAt := backendsAt + pl.backends*backendRecordBytes
	for name, damage := range map[string]func(p []byte){
		"profile past the count": func(p []byte) { binary.LittleEndian.PutUint32(p[backendsAt+24:], uint32(len(pl.profiles)+1)) },
		"unknown flag":           func(p []byte) { p[profilesAt+26] |= 0x80 },
		"path past the strings":  func(p []byte) { binary.LittleEndian.PutUint32(p[profilesAt+8:], uint32(pl.strs)) },
	} {
		p := append([]byte(nil), good...)
		damage(p)
		if _, err := decode(p, len(sets), pl.backends, len(pl.profiles), pl.strs); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: decode %v, want ErrCorrupt", name, err)
		}
	}
}

// TestInFlightCounters: each worker adds to its own counters, InFlight sums the worker slots in
// use, a released slot's counts are gone (a crashed worker's requests never stick), and a claim
// starts from zero.
func TestInFlightCounters(t *testing.T) {
	r, _ := create(t, Capacities{Backends: 4, Workers: 8})
	if r.WorkersUsed() != 0 || r.InFlight(3) != 0 {
		t.Fatalf("a new region: %d workers used, %d in flight", r.WorkersUsed(), r.InFlight(3))
	}
	r.ClaimWorker(0, 100, 1)
	r.ClaimWorker(2, 102, 1)
	if r.WorkersUsed() != 3 {
		t.Fatalf("WorkersUsed %d, want 3 (slots 0 to 2)", r.WorkersUsed())
	}
	r.InFlightAdd(0, 3, 1)
	r.InFlightAdd(0, 3, 1)
	r.InFlightAdd(2, 3, 5)
	r.InFlightAdd(2, 7, 1)
	if got := r.InFlight(3); got != 7 {
		t.Fatalf("InFlight(3) = %d, want 7", got)
	}
	r.InFlightAdd(2, 3, -1)
	if got, own := r.InFlight(3), r.InFlightOf(2, 3); got != 6 || own != 4 {
		t.Fatalf("after a decrement: %d in all, %d of worker 2; want 6 and 4", got, own)
	}
	// Worker 2 crashes: its slot is released, and its requests count no more.
	r.ReleaseWorker(2)
	if got := r.InFlight(3); got != 2 || r.InFlight(7) != 0 {
		t.Fatalf("after the release: %d and %d in flight, want 2 and 0", got, r.InFlight(7))
	}
	// A decrement that raced the zeroing never makes a count negative.
	r.InFlightAdd(2, 7, -1)
	if got := r.InFlight(7); got != 0 {
		t.Fatalf("InFlight(7) = %d after a stray decrement, want 0", got)
	}
	r.ClaimWorker(2, 103, 2)
	if got := r.InFlightOf(2, 7); got != 0 {
		t.Fatalf("a claimed slot starts at %d, want 0", got)
	}
	if r.WorkerPID(2) != 103 {
		t.Fatalf("WorkerPID(2) = %d", r.WorkerPID(2))
	}
}

// TestInFlightBound: capacities whose counters pass InFlightBytesMax are refused, naming both.
func TestInFlightBound(t *testing.T) {
	_, err := New(Capacities{Backends: 1 << 20, Workers: 64})
	if err == nil || !strings.Contains(err.Error(), "Workers 64 and Backends 1048576") {
		t.Fatalf("New with 2^20 backends × 64 workers: %v, want the in-flight bound", err)
	}
	if _, err := New(Capacities{Backends: 10_000, Workers: 64}); err != nil {
		t.Fatalf("10,000 backends × 64 workers: %v", err)
	}
}
