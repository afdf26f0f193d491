package integration

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/xlbproxy/xlb/internal/etcdtest"
)

// xlbPath is the binary that TestMain built, in a directory removed when the tests end.
var xlbPath string

// eventLoop runs every `xlb run` of the tests with --event-loop (xlbArgs): `make test` runs the
// package both ways.
var eventLoop bool

func init() {
	flag.BoolVar(&eventLoop, "event-loop", false, "run every `xlb run` with --event-loop")
}

// xlbArgs is args of the built xlb, with --event-loop added to a `run` under -event-loop.
func xlbArgs(args []string) []string {
	if eventLoop && len(args) > 0 && args[0] == "run" {
		return append(args[:len(args):len(args)], "--event-loop")
	}
	return args
}

// buildTimeout bounds `go build` of the binary, which compiles everything on a cold cache.
const buildTimeout = 5 * time.Minute

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if _, err := exec.LookPath("curl"); err != nil {
		fmt.Fprintln(os.Stderr, "integration: curl is not on PATH (bash tools/install.sh installs it):", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "xlb-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	xlbPath = filepath.Join(dir, "xlb")

	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", xlbPath, "github.com/xlbproxy/xlb").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: go build github.com/xlbproxy/xlb: %v\n%s", err, out)
		return 1
	}

	code := m.Run()
	// Every test stops its processes, backends and connections in t.Cleanup, so nothing of the test
	// process may be left running: a goroutine still here is a wait that never ended.
	if code == 0 {
		if err := goleak.Find(etcdtest.LeakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "integration: leaked goroutines:", err)
			return 1
		}
	}
	return code
}
