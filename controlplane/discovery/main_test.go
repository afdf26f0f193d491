package discovery

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: a stream handler or the push
// loop of a Server, or a client or server of a test. Every test closes what it started in
// t.Cleanup, so nothing needs ignoring.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
