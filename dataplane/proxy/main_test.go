package proxy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: a connection, pump, tunnel,
// reaper or access-log flusher of the proxy, or a backend or client of a test. Every test shuts
// its proxy down and closes its servers and clients in t.Cleanup, so nothing needs ignoring.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
