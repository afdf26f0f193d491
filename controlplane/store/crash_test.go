package store

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/controlplane/resource"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/testutil"
)

// crashOp is the i-th change of the crash test: a delete of a set when set is nil, else a put.
func crashOp(i int) (name string, set *discoveryv1.BackendSet) {
	name = fmt.Sprintf("s%02d", i%23)
	if i%5 == 4 {
		return name, nil
	}
	return name, testSet(name, 1+i%7, i)
}

// crashCompactBytes makes the child compact often, so that kills land in compactions too.
const crashCompactBytes = 4096

// crashChild is the body of the re-executed test binary: from change from on, it makes the
// changes of crashOp on the store in dir, printing each one once it is acknowledged, until it is
// killed.
func crashChild(dir string, from int) int {
	s, err := open(dir, nil, options{compactBytesMin: crashCompactBytes})
	if err != nil {
		fmt.Println("open:", err)
		return 1
	}
	for i := from; i < from+1_000_000; i++ {
		name, set := crashOp(i)
		if set != nil {
			v, err := s.Put(set, nil)
			if err != nil {
				fmt.Println("put:", err)
				return 1
			}
			fmt.Printf("%d put %s\n", i, v)
			continue
		}
		switch err := s.Delete(name, nil); {
		case err == nil:
			fmt.Printf("%d del\n", i)
		case errors.Is(err, ErrNotFound):
			fmt.Printf("%d none\n", i)
		default:
			fmt.Println("delete:", err)
			return 1
		}
	}
	return 0
}

// TestKill9 runs a child process that changes the store and prints each change it acknowledged,
// kills it with SIGKILL at a random point (some in a compaction), reopens the store, and checks
// that it holds every acknowledged change with its version: exactly the acknowledged state, or
// that and the one change that was durable but not yet printed. Several rounds continue on the
// same directory.
func TestKill9(t *testing.T) {
	dir := t.TempDir()
	model := map[string]string{} // name → version, as acknowledged
	next := 0
	for round := range 8 {
		from := next
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "XLB_STORE_TEST_CHILD="+dir, "XLB_STORE_TEST_FROM="+strconv.Itoa(from))
		stderr := new(testutil.SyncBuffer)
		cmd.Stderr = stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := rand.IntN(600)
		if killAfter == 0 {
			cmd.Process.Signal(syscall.SIGKILL)
		}
		// Read every line the child printed: those after the kill were acknowledged before it.
		lines := bufio.NewScanner(stdout)
		acked := 0
		for lines.Scan() {
			line := lines.Text()
			f := strings.Fields(line)
			i, err := strconv.Atoi(f[0])
			if err != nil || i != from+acked || len(f) < 2 {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: the child printed %q, want change %d\n%s", round, line, from+acked, stderr)
			}
			name, set := crashOp(i)
			_, had := model[name]
			switch {
			case f[1] == "put" && len(f) == 3 && set != nil && f[2] == resource.Version(set):
				model[name] = f[2]
			case f[1] == "del" && set == nil && had:
				delete(model, name)
			case f[1] == "none" && set == nil && !had:
			default:
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: the child printed %q; the model has %q: %v", round, line, name, had)
			}
			acked++
			if acked == killAfter {
				// A random point in the next few changes (each takes about an fsync), not always
				// the start of the next one.
				time.AfterFunc(rand.N(5*time.Millisecond), func() { cmd.Process.Signal(syscall.SIGKILL) })
			}
		}
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		select {
		case err := <-waited:
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("round %d: the child ended with %v, not by SIGKILL\n%s", round, err, stderr)
			}
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			<-waited
			t.Fatalf("round %d: the child did not end", round)
		}

		log, logs := testLogger()
		s, err := open(dir, log, options{compactBytesMin: crashCompactBytes})
		if err != nil {
			t.Fatalf("round %d: reopen after kill -9 at change %d: %v", round, from+acked, err)
		}
		got := contents(s)
		s.Close()
		if strings.Contains(logs.String(), "[WARN]") || strings.Contains(logs.String(), "removed") {
			t.Logf("round %d: the kill left work for the reopen:\n%s", round, logs)
		}
		// The change after the last acknowledged one may have been made but not yet printed.
		also := map[string]string{}
		for k, v := range model {
			also[k] = v
		}
		name, set := crashOp(from + acked)
		if set != nil {
			also[name] = resource.Version(set)
		} else {
			delete(also, name)
		}
		switch {
		case equal(got, model):
			t.Logf("round %d: killed after %d acknowledged changes; all there", round, acked)
		case equal(got, also):
			t.Logf("round %d: killed after %d acknowledged changes; all there, and the next one", round, acked)
			model = also
		default:
			t.Fatalf("round %d: killed after change %d; reopened to %d sets %v, want %v (or with change %d: %v)\n%s",
				round, from+acked-1, len(got), got, model, from+acked, also, logs)
		}
		// Go on past the change that may or may not be there.
		next = from + acked + 1
	}
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
