package proxy

import (
	"flag"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: a connection, pump, tunnel,
// reaper or access-log flusher of the proxy, or a backend or client of a test. Every test shuts
// its proxy down and closes its servers and clients in t.Cleanup, so nothing needs ignoring.
//
// -goroutine-per-connection runs every test with Config.GoroutinePerConnection: `make test` runs
// the package both ways.
func TestMain(m *testing.M) {
	flag.BoolVar(&forceGoroutinePerConnection, "goroutine-per-connection", false, "serve every plain listener with a goroutine per connection")
	flag.Parse()
	if forceGoroutinePerConnection {
		os.Stderr.WriteString("proxy tests: a goroutine per connection\n")
	}
	goleak.VerifyTestMain(m)
}
