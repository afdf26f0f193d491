package shm

import (
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkPublishLarge publishes generations of 3 sets of 10,000 backends each into a fresh
// region, every backend new: the cost of a control plane's first push of that size. Each health
// slot search goes on from the slot found before it, so a generation costs O(backends + slots),
// not their product.
//
//	go test -run '^$' -bench PublishLarge ./dataplane/shm
func BenchmarkPublishLarge(b *testing.B) {
	var sets []Set
	for s := range 3 {
		set := Set{Name: fmt.Sprint("s", s)}
		for i := range 10_000 {
			set.Backends = append(set.Backends, Backend{ID: fmt.Sprint("b", i), Address: fmt.Sprintf("10.%d.%d.%d:8080", s, i>>8, i&255), Weight: 1})
		}
		sets = append(sets, set)
	}
	dir := b.TempDir()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		r, err := Create(filepath.Join(dir, fmt.Sprint("region", i)), Capacities{Sets: 8, Backends: 40_000, StringBytes: 2 << 20, Workers: 4})
		if err != nil {
			b.Fatal(err)
		}
		w := NewWriter(r)
		b.StartTimer()
		if _, err := w.Publish(sets); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		r.Close()
		b.StartTimer()
	}
}
