package tlsterm

import (
	"crypto/tls"
	"path/filepath"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// BenchmarkHandshake measures a new client connection per operation, over loopback TCP to a
// server built from ServerConfig with shared ticket keys: dial, handshake, one byte, close. Both
// ends run in this process, so a handshake's cost is the client's and the server's together; the
// ratio of full to resumed is the point. Run:
//
//	go test -run '^$' -bench BenchmarkHandshake ./dataplane/tlsterm/
func BenchmarkHandshake(b *testing.B) {
	dir := b.TempDir()
	ca := testutil.NewCA(b, dir, "ca")
	s := mustStore(b, StoreConfig{Pairs: []Pair{pairOf(ca.IssueServer(b, dir, "site", "site.example.test"))}})
	cfg := ServerConfig(s)
	path := filepath.Join(dir, "ticket-keys")
	r, err := NewTicketRotator(path, RotationPolicy{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := r.Rotate(time.Now()); err != nil {
		b.Fatal(err)
	}
	l, err := NewTicketLoader(TicketLoaderConfig{Path: path, Servers: []*tls.Config{cfg}})
	if err != nil {
		b.Fatal(err)
	}
	if err := l.Load(); err != nil {
		b.Fatal(err)
	}
	srv := startServer(b, cfg)

	for _, v := range versions {
		for _, resumed := range []bool{false, true} {
			name := tls.VersionName(v) + "/full"
			client := &tls.Config{ServerName: "site.example.test", RootCAs: ca.Pool(), MinVersion: v, MaxVersion: v}
			if resumed {
				name = tls.VersionName(v) + "/resumed"
				client.ClientSessionCache = &fixedCache{}
				mustHandshake(b, srv.addr, client) // the ticket every iteration offers
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					st, err := handshake(srv.addr, client)
					if err != nil {
						b.Fatal(err)
					}
					if st.DidResume != resumed {
						b.Fatalf("DidResume %v, want %v", st.DidResume, resumed)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
			})
		}
	}
}
