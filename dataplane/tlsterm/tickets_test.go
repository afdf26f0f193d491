package tlsterm

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/testutil"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func mustPolicy(t testing.TB, p RotationPolicy) RotationPolicy {
	t.Helper()
	p, err := p.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// created lists the creation times of ks, as offsets from t0.
func created(ks TicketKeys) []time.Duration {
	out := make([]time.Duration, len(ks))
	for i, k := range ks {
		out[i] = k.Created.Sub(t0)
	}
	return out
}

func TestTicketKeysMarshalParse(t *testing.T) {
	ks, _ := TicketKeys(nil).rotate(t0, mustPolicy(t, RotationPolicy{}))
	ks, _ = ks.rotate(t0.Add(12*time.Hour), mustPolicy(t, RotationPolicy{}))
	data := ks.Marshal()
	got, err := ParseTicketKeys(data)
	if err != nil {
		t.Fatalf("ParseTicketKeys(%q): %v", data, err)
	}
	if len(got) != 2 || got[0] != ks[0] || got[1] != ks[1] {
		t.Fatalf("round trip: %v, want %v", got, ks)
	}
	if !strings.HasPrefix(string(data), "xlb-ticket-keys v1 2\n") {
		t.Errorf("file starts %q", data)
	}

	line := "1767225600 " + strings.Repeat("ab", 32) + "\n"
	tests := []struct{ name, data, want string }{
		{"empty", "", "empty"},
		{"no final newline", "xlb-ticket-keys v1 1\n" + strings.TrimSuffix(line, "\n"), "newline"},
		{"not ours", "hello\n", "not a ticket key file"},
		{"newer version", "xlb-ticket-keys v2 1\n" + line, `version "v2"`},
		{"no keys", "xlb-ticket-keys v1 0\n", "key count"},
		{"too many keys", "xlb-ticket-keys v1 17\n" + strings.Repeat(line, 17), "key count"},
		{"cut short at a line's end", "xlb-ticket-keys v1 2\n" + line, "says 2 keys, 1 lines follow"},
		{"short key", "xlb-ticket-keys v1 1\n1767225600 abcd\n", "line 2: a key of 4 hex digits"},
		{"not hex", "xlb-ticket-keys v1 1\n1767225600 " + strings.Repeat("zz", 32) + "\n", "line 2: key"},
		{"bad time", "xlb-ticket-keys v1 1\nyesterday " + strings.Repeat("ab", 32) + "\n", "line 2"},
		{"huge", strings.Repeat("x", TicketFileBytesMax+1), "more than"},
	}
	for _, tt := range tests {
		if _, err := ParseTicketKeys([]byte(tt.data)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ParseTicketKeys: %v, want an error with %q", tt.name, err, tt.want)
		}
	}
}

// FuzzParseTicketKeys: the parser never panics, and what it accepts marshals to what it read.
func FuzzParseTicketKeys(f *testing.F) {
	ks, _ := TicketKeys(nil).rotate(t0, RotationPolicy{Period: time.Hour, Keep: 3})
	f.Add(ks.Marshal())
	f.Add([]byte("xlb-ticket-keys v1 1\n1 " + strings.Repeat("00", 32) + "\n"))
	f.Add([]byte("xlb-ticket-keys v1 2\n1 " + strings.Repeat("00", 32) + "\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		ks, err := ParseTicketKeys(data)
		if err != nil {
			return
		}
		if len(ks) == 0 || len(ks) > TicketKeysMax {
			t.Fatalf("accepted %d keys", len(ks))
		}
		again, err := ParseTicketKeys(ks.Marshal())
		if err != nil || len(again) != len(ks) {
			t.Fatalf("re-parse of %q: %v, %v", ks.Marshal(), again, err)
		}
		for i := range ks {
			if again[i] != ks[i] {
				t.Fatalf("key %d: %v, then %v", i, ks[i], again[i])
			}
		}
	})
}

func TestRotate(t *testing.T) {
	p := mustPolicy(t, RotationPolicy{})
	h := time.Hour
	steps := []struct {
		at   time.Duration // from t0
		want []time.Duration
	}{
		{0, []time.Duration{0}},                                  // none: the first key
		{11 * h, []time.Duration{0}},                             // not due
		{12 * h, []time.Duration{12 * h, 0}},                     // due
		{24 * h, []time.Duration{24 * h, 12 * h, 0}},             // three kept
		{36*h - time.Second, []time.Duration{24 * h, 12 * h, 0}}, // key 0 retired 24h-1s ago: kept
		{36 * h, []time.Duration{36 * h, 24 * h, 12 * h}},        // key 0 retired 24h ago: dropped
		// The supervisor was down 30h: one new key; of the old ones only the one it replaced stays,
		// which was current until now.
		{78 * h, []time.Duration{78 * h, 36 * h}},
		// The clock set back two days: a key "from the future" is replaced at once; the one
		// before it goes by the count at the next rotation.
		{30 * h, []time.Duration{30 * h, 78 * h, 36 * h}},
		{42 * h, []time.Duration{42 * h, 30 * h, 78 * h}},
	}
	var ks TicketKeys
	for _, s := range steps {
		before := created(ks)
		next, changed := ks.rotate(t0.Add(s.at), p)
		got := created(next)
		if !slicesEqual(got, s.want) {
			t.Fatalf("at +%v from %v: keys %v, want %v", s.at, before, got, s.want)
		}
		if changed != !slicesEqual(before, got) {
			t.Errorf("at +%v: changed %v, keys %v then %v", s.at, changed, before, got)
		}
		if len(ks) > 0 && len(next) > 0 && next[0].Created.Equal(ks[0].Created) && next[0].Key != ks[0].Key {
			t.Errorf("at +%v: the current key changed without a rotation", s.at)
		}
		ks = next
	}
	if w := (RotationPolicy{}).Window(); w != 24*time.Hour {
		t.Errorf("default Window() = %v, want 24h", w)
	}
}

// TestRotateWindowProperty rotates at random intervals, long outages among them: a key is never
// dropped before Window has passed since it stopped being current (so a ticket lives that long at
// least), never more than Keep keys are kept, and when the rotations come at most every minute a
// key is gone within a minute of the end of its window.
func TestRotateWindowProperty(t *testing.T) {
	for _, p := range []RotationPolicy{{}, {Period: time.Hour, Keep: 2}, {Period: 5 * time.Minute, Keep: 5}} {
		p := mustPolicy(t, p)
		rng := rand.New(rand.NewPCG(1, uint64(p.Keep)))
		retired := map[[32]byte]time.Time{}
		var ks TicketKeys
		now := t0
		for range 20000 {
			gap := time.Duration(rng.Int64N(int64(time.Minute))) + time.Second
			outage := rng.IntN(500) == 0
			if outage {
				gap = time.Duration(rng.Int64N(int64(5 * p.Period)))
			}
			now = now.Add(gap)
			next, _ := ks.rotate(now, p)
			if len(next) > p.Keep {
				t.Fatalf("%+v: %d keys kept", p, len(next))
			}
			kept := map[[32]byte]bool{}
			for i, k := range next {
				kept[k.Key] = true
				if i > 0 {
					if _, ok := retired[k.Key]; !ok {
						retired[k.Key] = next[i-1].Created
					}
				}
			}
			for _, k := range ks {
				if kept[k.Key] {
					continue
				}
				life := now.Sub(retired[k.Key])
				if life < p.Window() {
					t.Fatalf("%+v: a key dropped %v after it was retired, before the window of %v", p, life, p.Window())
				}
				if !outage && life > p.Window()+time.Minute+time.Second {
					t.Fatalf("%+v: a key dropped %v after it was retired, rotations every minute", p, life)
				}
			}
			ks = next
		}
	}
}

func slicesEqual(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTicketRotatorFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ticket-keys")
	r, err := NewTicketRotator(path, RotationPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	inode := func() uint64 { return stampOf(path).ino }

	res, err := r.Rotate(t0)
	if err != nil || !res.Written || len(res.Keys) != 1 || res.Replaced != nil || !res.Next.Equal(t0.Add(12*time.Hour)) {
		t.Fatalf("first Rotate: %+v, %v; want the file made with one key, next in 12h", res, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v, %v; want mode 0600", fi, err)
	}
	ino := inode()
	if res, err := r.Rotate(t0.Add(time.Hour)); err != nil || res.Written || inode() != ino {
		t.Fatalf("Rotate, not due: %+v, %v; want the file untouched", res, err)
	}
	// A new rotator (the supervisor after an upgrade) finds the keys and keeps them.
	r2, _ := NewTicketRotator(path, RotationPolicy{})
	if res, err := r2.Rotate(t0.Add(2 * time.Hour)); err != nil || res.Written || len(res.Keys) != 1 {
		t.Fatalf("a new rotator, not due: %+v, %v; want the file untouched", res, err)
	}
	res, err = r.Rotate(t0.Add(12 * time.Hour))
	if err != nil || !res.Written || len(res.Keys) != 2 || inode() == ino {
		t.Fatalf("Rotate, due: %+v, %v; want a second key, by rename", res, err)
	}
	data, _ := os.ReadFile(path)
	if ks, err := ParseTicketKeys(data); err != nil || len(ks) != 2 || ks[0] != res.Keys[0] {
		t.Fatalf("the file holds %v, %v; want %v", ks, err, res.Keys)
	}

	writeFile(t, path, []byte("garbage\n"))
	res, err = r.Rotate(t0.Add(13 * time.Hour))
	if err != nil || !res.Written || len(res.Keys) != 1 || res.Replaced == nil || !strings.Contains(res.Replaced.Error(), path) {
		t.Fatalf("Rotate on a corrupt file: %+v, %v; want it replaced by one key, Replaced naming the file", res, err)
	}
	t.Log(res.Replaced)

	unreadable := filepath.Join(dir, "a-directory")
	os.Mkdir(unreadable, 0o700)
	r3, _ := NewTicketRotator(unreadable, RotationPolicy{})
	if res, err := r3.Rotate(t0); err == nil || res.Written || !strings.Contains(err.Error(), unreadable) {
		t.Fatalf("Rotate on a directory: %+v, %v; want an error naming it, nothing written", res, err)
	}
}

func TestNewTicketRotatorErrors(t *testing.T) {
	for _, tt := range []struct {
		path string
		p    RotationPolicy
		want string
	}{
		{"", RotationPolicy{}, "no path"},
		{"x", RotationPolicy{Period: time.Second}, "rotation period"},
		{"x", RotationPolicy{Keep: 1}, "ticket keys kept 1"},
		{"x", RotationPolicy{Keep: TicketKeysMax + 1}, "ticket keys kept"},
	} {
		if _, err := NewTicketRotator(tt.path, tt.p); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewTicketRotator(%q, %+v): %v, want an error with %q", tt.path, tt.p, err, tt.want)
		}
	}
}

func TestNewTicketLoaderErrors(t *testing.T) {
	for _, tt := range []struct {
		cfg  TicketLoaderConfig
		want string
	}{
		{TicketLoaderConfig{Servers: []*tls.Config{{}}}, "no path"},
		{TicketLoaderConfig{Path: "x"}, "no tls.Config"},
		{TicketLoaderConfig{Path: "x", Servers: []*tls.Config{{}, nil}}, "server config 1 is nil"},
	} {
		if _, err := NewTicketLoader(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewTicketLoader(%+v): %v, want an error with %q", tt.cfg, err, tt.want)
		}
	}
}

// fixedCache is a client session cache that keeps the first session it is given and ignores the
// rest, so that a test can offer one ticket again and again: a resumption hands the client a new
// ticket, which a plain cache would put in place of the one under test.
type fixedCache struct {
	mu sync.Mutex
	s  *tls.ClientSessionState
}

func (f *fixedCache) Get(string) (*tls.ClientSessionState, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.s, f.s != nil
}

func (f *fixedCache) Put(_ string, s *tls.ClientSessionState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.s == nil && s != nil {
		f.s = s
	}
}

// ticketEnv is a supervisor's state directory with its ticket key file, and the certificates
// its workers serve.
type ticketEnv struct {
	ca    *testutil.CA
	pairs []Pair
	path  string
	rot   *TicketRotator
}

func newTicketEnv(t *testing.T) *ticketEnv {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	e := &ticketEnv{ca: ca, pairs: []Pair{pairOf(ca.IssueServer(t, dir, "site", "site.example.test"))},
		path: filepath.Join(dir, "ticket-keys")}
	var err error
	if e.rot, err = NewTicketRotator(e.path, RotationPolicy{}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *ticketEnv) rotate(t *testing.T, at time.Time) Rotation {
	t.Helper()
	res, err := e.rot.Rotate(at)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// worker is one worker process's listener: its own Store, config and loader over the shared files.
type worker struct {
	srv    *server
	loader *TicketLoader
}

// startWorker starts a worker; with watch, its loader watches the file (every 5ms). Its first
// Load's error is returned, as a worker would see it.
func (e *ticketEnv) startWorker(t *testing.T, watchFile bool) (*worker, error) {
	t.Helper()
	cfg := ServerConfig(mustStore(t, StoreConfig{Pairs: e.pairs}))
	l, err := NewTicketLoader(TicketLoaderConfig{Path: e.path, Servers: []*tls.Config{cfg}, Poll: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	loadErr := l.Load()
	w := &worker{srv: startServer(t, cfg), loader: l}
	if watchFile {
		watch(t, l.Watch)
	}
	return w, loadErr
}

func (e *ticketEnv) mustWorker(t *testing.T, watchFile bool) *worker {
	t.Helper()
	w, err := e.startWorker(t, watchFile)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// client is a client of version v whose session cache is c.
func (e *ticketEnv) client(v uint16, c tls.ClientSessionCache) *tls.Config {
	return &tls.Config{ServerName: "site.example.test", RootCAs: e.ca.Pool(), MinVersion: v, MaxVersion: v, ClientSessionCache: c}
}

// resumes tells whether a handshake of cfg with w resumed.
func resumes(t *testing.T, w *worker, cfg *tls.Config) bool {
	t.Helper()
	return mustHandshake(t, w.srv.addr, cfg).DidResume
}

// waitLoaded waits until w's loader has loaded the file after it had loaded it n times.
func waitLoaded(t *testing.T, w *worker, n uint64) TicketStatus {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "the ticket key file to be loaded", func() bool { return w.loader.Status().Loads > n })
	return w.loader.Status()
}

var versions = []uint16{tls.VersionTLS12, tls.VersionTLS13}

// TestTicketsResumeAcrossWorkers: two workers reading the same key file; a session from either
// resumes on the other.
func TestTicketsResumeAcrossWorkers(t *testing.T) {
	e := newTicketEnv(t)
	e.rotate(t, time.Now())
	a, b := e.mustWorker(t, false), e.mustWorker(t, false)
	for _, v := range versions {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			fromA := e.client(v, &fixedCache{})
			if resumes(t, a, fromA) {
				t.Fatal("the first handshake resumed")
			}
			if !resumes(t, b, fromA) {
				t.Error("a session from worker a did not resume on worker b")
			}
			fromB := e.client(v, &fixedCache{})
			resumes(t, b, fromB)
			if !resumes(t, a, fromB) {
				t.Error("a session from worker b did not resume on worker a")
			}
		})
	}
}

// TestTicketsAcrossRotation: a ticket resumes through the rotations of its window, on a worker
// that watches the file, and is refused from the rotation that ends it; sessions go on resuming
// under the new keys.
func TestTicketsAcrossRotation(t *testing.T) {
	for _, v := range versions {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			e := newTicketEnv(t)
			e.rotate(t, t0)
			w := e.mustWorker(t, true)
			old := e.client(v, &fixedCache{})
			resumes(t, w, old) // the ticket under test, under the key of t0

			window := RotationPolicy{}.Window()
			for _, at := range []time.Duration{12 * time.Hour, 24 * time.Hour, 12*time.Hour + window - time.Second} {
				n := w.loader.Status().Loads
				res := e.rotate(t, t0.Add(at))
				if res.Written {
					waitLoaded(t, w, n)
				}
				if !resumes(t, w, old) {
					t.Fatalf("at +%v (keys %v): the ticket of t0 did not resume", at, created(res.Keys))
				}
			}
			// Its key stopped being current at +12h: the window is over at +12h+24h.
			n := w.loader.Status().Loads
			res := e.rotate(t, t0.Add(12*time.Hour+window))
			st := waitLoaded(t, w, n)
			if st.Err != nil || st.Keys != 3 || !st.Current.Equal(t0.Add(36*time.Hour)) {
				t.Fatalf("loader status %+v, want 3 keys, current from +36h", st)
			}
			if resumes(t, w, old) {
				t.Fatalf("at +36h (keys %v): the ticket of t0 resumed, past its window", created(res.Keys))
			}
			fresh := e.client(v, &fixedCache{})
			resumes(t, w, fresh)
			if !resumes(t, w, fresh) {
				t.Error("a new session did not resume")
			}
		})
	}
}

// TestTicketsAfterUpgrade: a worker of a new binary, with a new loader on the same file (and a
// new supervisor's rotator that finds the keys), resumes the sessions of the old one.
func TestTicketsAfterUpgrade(t *testing.T) {
	e := newTicketEnv(t)
	e.rotate(t, time.Now())
	old := e.mustWorker(t, false)
	sessions := map[uint16]*tls.Config{}
	for _, v := range versions {
		sessions[v] = e.client(v, &fixedCache{})
		resumes(t, old, sessions[v])
	}
	old.srv.close()

	r, err := NewTicketRotator(e.path, RotationPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := r.Rotate(time.Now()); err != nil || res.Written {
		t.Fatalf("the new supervisor's Rotate: %+v, %v; want the keys kept as they are", res, err)
	}
	upgraded := e.mustWorker(t, false)
	for _, v := range versions {
		if !resumes(t, upgraded, sessions[v]) {
			t.Errorf("%s: a session of the old worker did not resume on the upgraded one", tls.VersionName(v))
		}
	}
}

// TestTicketLoaderCorruptKeepsKeys: a corrupt file is an error naming it and the keys in force
// serve on; the rotator then replaces it, and the worker takes the new key.
func TestTicketLoaderCorruptKeepsKeys(t *testing.T) {
	e := newTicketEnv(t)
	e.rotate(t, time.Now())
	w := e.mustWorker(t, true)
	s := e.client(tls.VersionTLS13, &fixedCache{})
	resumes(t, w, s)

	good, _ := os.ReadFile(e.path)
	n := w.loader.Status().Loads
	writeFile(t, e.path, good[:len(good)-10]) // cut short
	st := waitLoaded(t, w, n)
	if st.Err == nil || !strings.Contains(st.Err.Error(), e.path) || st.Keys != 1 {
		t.Fatalf("status after a corrupt file: %+v; want an error naming %s and the key in force", st, e.path)
	}
	t.Log(st.Err)
	if err := w.loader.Load(); err == nil || err.Error() != st.Err.Error() {
		t.Errorf("Load: %v, want %v", err, st.Err)
	}
	if !resumes(t, w, s) {
		t.Fatal("after a corrupt file: the session did not resume on the keys in force")
	}

	n = w.loader.Status().Loads
	res := e.rotate(t, time.Now())
	if res.Replaced == nil {
		t.Fatalf("Rotate on the corrupt file: %+v, want it replaced", res)
	}
	if st := waitLoaded(t, w, n); st.Err != nil {
		t.Fatalf("status after the file was replaced: %+v", st)
	}
	if resumes(t, w, s) {
		t.Error("after the keys were replaced: a session under the lost key resumed")
	}
}

// TestTicketLoaderNoFile: a worker started before the file exists serves, with Go's keys of its
// own process (so its sessions do not resume on another worker), and takes the file's keys when it
// appears.
func TestTicketLoaderNoFile(t *testing.T) {
	e := newTicketEnv(t)
	a, err := e.startWorker(t, true)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), e.path) {
		t.Fatalf("Load with no file: %v, want fs.ErrNotExist naming %s", err, e.path)
	}
	b, _ := e.startWorker(t, true)
	s := e.client(tls.VersionTLS13, &fixedCache{})
	resumes(t, a, s)
	if !resumes(t, a, s) {
		t.Fatal("with no file: a session did not resume on its own worker")
	}
	if resumes(t, b, s) {
		t.Fatal("with no file: a session of worker a resumed on worker b, which has other keys")
	}

	na, nb := a.loader.Status().Loads, b.loader.Status().Loads
	e.rotate(t, time.Now())
	waitLoaded(t, a, na)
	waitLoaded(t, b, nb)
	s = e.client(tls.VersionTLS13, &fixedCache{})
	resumes(t, a, s)
	if !resumes(t, b, s) {
		t.Error("once the file appeared: a session of worker a did not resume on worker b")
	}
}

// TestTicketFileMarshalStable pins the format: a file written by this binary is read by the next.
func TestTicketFileMarshalStable(t *testing.T) {
	ks := TicketKeys{{Created: time.Unix(1767225600, 0), Key: [32]byte{1, 2, 3}}}
	want := "xlb-ticket-keys v1 1\n1767225600 0102030000000000000000000000000000000000000000000000000000000000\n"
	if got := ks.Marshal(); !bytes.Equal(got, []byte(want)) {
		t.Errorf("Marshal = %q, want %q", got, want)
	}
}
