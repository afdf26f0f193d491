package upstream

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when one leaves a goroutine behind (a backend's, a pool's).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
