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
// -event-loop runs every test with Config.EventLoop: `make test` runs the package both ways.
func TestMain(m *testing.M) {
	flag.BoolVar(&forceEventLoop, "event-loop", false, "serve every plain listener from an event loop")
	flag.Parse()
	if forceEventLoop {
		os.Stderr.WriteString("proxy tests: event loops\n")
	}
	goleak.VerifyTestMain(m)
}
