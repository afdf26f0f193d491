package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/xlbproxy/xlb/controlplane/resource"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/testutil"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv("XLB_STORE_TEST_CHILD"); dir != "" {
		from, _ := strconv.Atoi(os.Getenv("XLB_STORE_TEST_FROM"))
		os.Exit(crashChild(dir, from))
	}
	goleak.VerifyTestMain(m)
}

// testSet is a valid set named name with backends backends, whose ports depend on seed.
func testSet(name string, backends, seed int) *discoveryv1.BackendSet {
	set := &discoveryv1.BackendSet{Name: name, Policy: discoveryv1.Policy_POLICY_LEAST_REQUEST}
	for i := range backends {
		set.Backends = append(set.Backends, &discoveryv1.Backend{
			Id:       fmt.Sprintf("b%d", i),
			Address:  fmt.Sprintf("10.0.%d.%d", i/250, i%250+1),
			Port:     uint32(1 + (seed+i)%65535),
			Weight:   uint32(1 + i%3),
			Zone:     "zone-a",
			Metadata: map[string]string{"rack": strconv.Itoa(i % 4)},
		})
	}
	if err := resource.Validate("set", set); err != nil {
		panic(err)
	}
	return set
}

func testLogger() (hclog.Logger, *testutil.SyncBuffer) {
	buf := new(testutil.SyncBuffer)
	return hclog.New(&hclog.LoggerOptions{Output: buf, Level: hclog.Trace}), buf
}

// openT opens a store in dir with o, closed when the test ends.
func openT(t testing.TB, dir string, o options) *Store {
	t.Helper()
	log, _ := testLogger()
	s, err := open(dir, log, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ptr(s string) *string { return &s }

// contents is a store's sets as name → version.
func contents(s *Store) map[string]string {
	out := map[string]string{}
	for name, e := range s.Snapshot() {
		out[name] = e.Version
	}
	return out
}

func sameContents(t *testing.T, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d sets %v, want %d %v", len(got), got, len(want), want)
	}
	for name, v := range want {
		if got[name] != v {
			t.Fatalf("set %q at version %q, want %q", name, got[name], v)
		}
	}
}

func TestPutGetListDelete(t *testing.T) {
	for _, mode := range []string{"memory", "disk"} {
		t.Run(mode, func(t *testing.T) {
			dir := ""
			if mode == "disk" {
				dir = t.TempDir()
			}
			s := openT(t, dir, options{})
			if got := s.List(); len(got) != 0 {
				t.Fatalf("a new store lists %d sets", len(got))
			}
			web, api := testSet("web", 3, 1), testSet("api", 1, 2)
			vWeb, err := s.Put(web, nil)
			if err != nil {
				t.Fatal(err)
			}
			if vWeb != resource.Version(web) {
				t.Fatalf("put returned version %q, want resource.Version %q", vWeb, resource.Version(web))
			}
			vAPI, err := s.Put(api, nil)
			if err != nil {
				t.Fatal(err)
			}
			web.Backends[0].Port = 9 // the store keeps a copy
			e, err := s.Get("web")
			if err != nil {
				t.Fatal(err)
			}
			if e.Version != vWeb || e.Set.Backends[0].Port == 9 || resource.Version(e.Set) != vWeb {
				t.Fatalf("get web = %v at %q: the caller's later change leaked in, or the version is wrong", e.Set, e.Version)
			}
			list := s.List()
			if len(list) != 2 || list[0].Set.GetName() != "api" || list[1].Set.GetName() != "web" ||
				list[0].Version != vAPI || list[1].Version != vWeb {
				t.Fatalf("list = %v, want api then web", list)
			}
			vWeb2, err := s.Put(testSet("web", 4, 1), nil)
			if err != nil || vWeb2 == vWeb {
				t.Fatalf("replace web: version %q (was %q), %v", vWeb2, vWeb, err)
			}
			if err := s.Delete("api", nil); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get("api"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("get a deleted set: %v, want ErrNotFound", err)
			}
			if err := s.Delete("api", nil); !errors.Is(err, ErrNotFound) {
				t.Fatalf("delete a deleted set: %v, want ErrNotFound", err)
			}
			sameContents(t, contents(s), map[string]string{"web": vWeb2})
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Put(api, nil); err == nil {
				t.Fatal("a put after Close succeeded")
			}
			if _, err := s.Get("web"); err != nil {
				t.Fatalf("get after Close: %v; reads keep the last state", err)
			}
		})
	}
}

func TestCompareAndSet(t *testing.T) {
	s := openT(t, t.TempDir(), options{})
	v1, err := s.Put(testSet("web", 1, 1), ptr(""))
	if err != nil {
		t.Fatalf("put with expected \"\" of a missing set: %v", err)
	}
	mismatch := func(what string, err error, current string) {
		t.Helper()
		if !errors.Is(err, ErrVersionMismatch) {
			t.Fatalf("%s: %v, want ErrVersionMismatch", what, err)
		}
		if !strings.Contains(err.Error(), current) {
			t.Fatalf("%s: %q does not say the current version %s", what, err, current)
		}
	}
	_, err = s.Put(testSet("web", 2, 1), ptr(""))
	mismatch(`put with expected "" of an existing set`, err, strconv.Quote(v1))
	_, err = s.Put(testSet("web", 1, 1), ptr(""))
	mismatch(`an identical put with expected ""`, err, strconv.Quote(v1))
	_, err = s.Put(testSet("api", 1, 1), ptr(v1))
	mismatch("put with a version of a missing set", err, "none")
	v2, err := s.Put(testSet("web", 2, 1), ptr(v1))
	if err != nil {
		t.Fatalf("put with the current version: %v", err)
	}
	_, err = s.Put(testSet("web", 3, 1), ptr(v1))
	mismatch("put with a stale version", err, strconv.Quote(v2))
	err = s.Delete("web", ptr(v1))
	mismatch("delete with a stale version", err, strconv.Quote(v2))
	err = s.Delete("web", ptr(""))
	mismatch(`delete with expected ""`, err, strconv.Quote(v2))
	if err := s.Delete("api", ptr("")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete a missing set: %v, want ErrNotFound", err)
	}
	sameContents(t, contents(s), map[string]string{"web": v2})
	if err := s.Delete("web", ptr(v2)); err != nil {
		t.Fatalf("delete with the current version: %v", err)
	}
	sameContents(t, contents(s), map[string]string{})
}

func TestIdenticalPutChangesNothing(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, options{})
	ch, cancel := s.Subscribe()
	defer cancel()
	v, err := s.Put(testSet("web", 2, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("a change did not notify")
	}
	size := func() int64 {
		fi, err := os.Stat(filepath.Join(dir, logName(1)))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before, snap := size(), s.Snapshot()
	for _, expected := range []*string{nil, &v} {
		again, err := s.Put(testSet("web", 2, 1), expected)
		if err != nil || again != v {
			t.Fatalf("identical put: %q, %v; want %q", again, err, v)
		}
	}
	select {
	case <-ch:
		t.Fatal("an identical put notified")
	default:
	}
	if after := size(); after != before {
		t.Fatalf("an identical put wrote %d bytes", after-before)
	}
	if after := s.Snapshot(); fmt.Sprintf("%p", after) != fmt.Sprintf("%p", snap) {
		t.Fatal("an identical put made a new snapshot")
	}
}

func TestSubscribe(t *testing.T) {
	s := openT(t, "", options{})
	a, cancelA := s.Subscribe()
	b, _ := s.Subscribe()
	for i := range 3 {
		if _, err := s.Put(testSet("web", 1, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	for name, ch := range map[string]<-chan struct{}{"a": a, "b": b} {
		select {
		case <-ch:
		default:
			t.Fatalf("subscriber %s not told of 3 changes", name)
		}
		select {
		case <-ch:
			t.Fatalf("subscriber %s told twice: changes must coalesce in a buffer of 1", name)
		default:
		}
	}
	cancelA()
	cancelA()
	if _, ok := <-a; ok {
		t.Fatal("a cancelled subscription's channel is open")
	}
	if err := s.Delete("web", nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-b; !ok {
		t.Fatal("a delete did not notify")
	}
	s.Close()
	if _, ok := <-b; ok {
		t.Fatal("Close did not close a subscription's channel")
	}
	c, cancelC := s.Subscribe()
	cancelC()
	if _, ok := <-c; ok {
		t.Fatal("a subscription after Close is open")
	}
}

func TestReopenRestoresVersions(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, options{})
	want := map[string]*discoveryv1.BackendSet{}
	for i := range 20 {
		set := testSet(fmt.Sprintf("s%d", i%7), 1+i%5, i)
		if _, err := s.Put(set, nil); err != nil {
			t.Fatal(err)
		}
		want[set.Name] = set
		if i%6 == 5 {
			name := fmt.Sprintf("s%d", (i+3)%7)
			if err := s.Delete(name, nil); err == nil {
				delete(want, name)
			} else if !errors.Is(err, ErrNotFound) {
				t.Fatal(err)
			}
		}
	}
	before := contents(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, options{})
	sameContents(t, contents(s), before)
	for name, set := range want {
		e, err := s.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(e.Set, set) || e.Version != resource.Version(set) {
			t.Fatalf("set %q reopened as %v at %q, want %v", name, e.Set, e.Version, set)
		}
	}
	if len(want) != len(before) {
		t.Fatalf("%d sets, want %d", len(before), len(want))
	}
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, options{})
	_, err := Open(dir, nil)
	if err == nil {
		t.Fatal("a second Open of a locked directory succeeded")
	}
	if want := "pid " + strconv.Itoa(os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Fatalf("the refusal %q does not name the holder (%s)", err, want)
	}
	s.Close()
	s2, err := Open(dir, nil)
	if err != nil {
		t.Fatalf("open after Close: %v", err)
	}
	s2.Close()
}

// TestReadsDuringWrites runs readers beside a writer, for the race detector, and checks that every
// state a reader sees is whole.
func TestReadsDuringWrites(t *testing.T) {
	s := openT(t, t.TempDir(), options{compactBytesMin: 2048})
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				list := s.List()
				for i, e := range list {
					if i > 0 && list[i-1].Set.Name >= e.Set.Name {
						errs <- fmt.Errorf("list out of order: %q before %q", list[i-1].Set.Name, e.Set.Name)
						return
					}
				}
				for name, e := range s.Snapshot() {
					if e.Set.Name != name || e.Version == "" {
						errs <- fmt.Errorf("snapshot entry %q holds set %q at %q", name, e.Set.Name, e.Version)
						return
					}
				}
			}
		})
	}
	for i := range 300 {
		if _, err := s.Put(testSet(fmt.Sprintf("s%d", i%11), 2, i), nil); err != nil {
			t.Fatal(err)
		}
		if i%4 == 0 {
			s.Delete(fmt.Sprintf("s%d", (i+5)%11), nil)
		}
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func BenchmarkPut(b *testing.B) {
	for _, mode := range []string{"fsync", "memory"} {
		b.Run(mode, func(b *testing.B) {
			dir := ""
			if mode == "fsync" {
				dir = b.TempDir()
			}
			s := openT(b, dir, options{})
			sets := make([]*discoveryv1.BackendSet, 64)
			for i := range sets {
				sets[i] = testSet("web", 10, i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := s.Put(sets[i%len(sets)], nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkGet(b *testing.B) {
	s := openT(b, "", options{})
	for i := range 100 {
		s.Put(testSet(fmt.Sprintf("s%d", i), 10, i), nil)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get("s42"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFailedAppendStopsWrites breaks the log under the store (its file closed), and checks that
// the failed put changes nothing, that later writes are refused until a restart, that reads go on,
// and that a reopen finds every acknowledged write.
func TestFailedAppendStopsWrites(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, options{})
	v, err := s.Put(testSet("web", 1, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.wal.Close()
	s.mu.Unlock()
	if _, err := s.Put(testSet("api", 1, 1), nil); err == nil {
		t.Fatal("a put to a broken log succeeded")
	}
	_, err = s.Put(testSet("api", 1, 1), nil)
	if err == nil || !strings.Contains(err.Error(), "no more writes") {
		t.Fatalf("the put after a failed one: %v, want a refusal", err)
	}
	if err := s.Delete("web", nil); err == nil {
		t.Fatal("a delete after a failed append succeeded")
	}
	sameContents(t, contents(s), map[string]string{"web": v})
	s.Close()
	s = openT(t, dir, options{})
	sameContents(t, contents(s), map[string]string{"web": v})
}
