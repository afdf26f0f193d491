package server

import (
	"github.com/xlbproxy/xlb/server/worker"

	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The supervisor of a test starts its workers as /proc/self/exe, which is this test binary:
	// here it becomes the worker that `xlb worker` would be.
	if len(os.Args) > 1 && os.Args[1] == worker.Command {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}
