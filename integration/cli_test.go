package integration

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// TestCommands: the commands that answer and exit, with their exit statuses.
func TestCommands(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args     []string
		code     int
		stdout   string // a regexp the standard output must match
		stderr   string // a regexp the standard error must match
		quietOut bool   // nothing on standard output
		quietErr bool   // nothing on standard error
	}{
		{args: []string{"version"}, stdout: `^xlb \S+\n$`, quietErr: true},
		{args: []string{"help"}, stdout: `(?m)^Usage:\n(.*\n)*\s+xlb run `, quietErr: true},
		{args: []string{"help", "run"}, stdout: `(?m)^\s+--listen ADDR$`, quietErr: true},
		{args: []string{"frobnicate"}, code: 2, stderr: `frobnicate`, quietOut: true},
		{args: []string{"run", "--no-such-flag"}, code: 2, stderr: `no-such-flag`, quietOut: true},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, xlbPath, tc.args...)
			var stdout, stderr testutil.SyncBuffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var code int
			if ee, ok := err.(*exec.ExitError); ok && ee.Exited() {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("xlb %s: %v", strings.Join(tc.args, " "), err)
			}
			out, errOut := stdout.String(), stderr.String()
			if code != tc.code {
				t.Errorf("exit status %d, want %d", code, tc.code)
			}
			if tc.stdout != "" && !regexp.MustCompile(tc.stdout).MatchString(out) {
				t.Errorf("stdout does not match %q:\n%s", tc.stdout, out)
			}
			if tc.stderr != "" && !regexp.MustCompile(tc.stderr).MatchString(errOut) {
				t.Errorf("stderr does not match %q:\n%s", tc.stderr, errOut)
			}
			if tc.quietOut && out != "" {
				t.Errorf("stdout is not empty:\n%s", out)
			}
			if tc.quietErr && errOut != "" {
				t.Errorf("stderr is not empty:\n%s", errOut)
			}
		})
	}
}

// curlLine finds the lines of the demo's banner that start with curl.
var curlLine = regexp.MustCompile(`(?m)^\s*(curl .*)$`)

// TestDemo: `xlb demo --listen ADDR` starts, and the curl command lines it prints work as printed
// (run by sh, as a user pasting them would): a GET answered by a demo backend, and a POST echoed.
// SIGTERM stops it with status 0.
func TestDemo(t *testing.T) {
	t.Parallel()
	x := startXLB(t, func(addr string) []string { return []string{"demo", "--listen", addr} })

	// The banner is printed once every listener is bound, which waitListening has seen; wait for it
	// to be written out in full (it ends with the line that says how to stop).
	var lines []string
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		out := x.stdout.String()
		if strings.Contains(out, "stops it") {
			for _, m := range curlLine.FindAllStringSubmatch(out, -1) {
				lines = append(lines, m[1])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no banner on stdout within %v:\n%s", readyTimeout, out)
		}
		<-tick.C
	}
	if len(lines) < 2 {
		t.Fatalf("the banner has %d curl lines, want 2:\n%s", len(lines), x.stdout.String())
	}
	for _, line := range lines {
		if !strings.Contains(line, "http://"+x.addr+"/") {
			t.Errorf("the banner's %q does not name the listener http://%s/", line, x.addr)
		}
	}

	get := runShell(t, lines[0]+` -w '\n@@ %{http_code}\n'`)
	if !regexp.MustCompile(`(?s)^backend b[123] \(127\.0\.0\.1:\d+\)\nmethod: GET\n.*\n@@ 200\n$`).MatchString(get) {
		t.Errorf("%s answered:\n%s\nwant a 200 from a demo backend b1..b3 for the GET", lines[0], get)
	}
	post := runShell(t, lines[1]+` -w '\n@@ %{http_code}\n'`)
	if !regexp.MustCompile(`(?s)^backend b[123] .*\nmethod: POST\n.*body bytes: 10\n.*@@ 200\n$`).MatchString(post) {
		t.Errorf("%s answered:\n%s\nwant a 200 from a demo backend that saw a POST of 10 bytes", lines[1], post)
	}

	x.signal(syscall.SIGTERM)
	if code := x.waitExitCode(stopTimeout); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
}

// runShell runs a command line with sh -c and returns its standard output.
func runShell(tb testing.TB, line string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), curlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", line)
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("sh -c %q: %v\n%s", line, err, stderr.String())
	}
	return string(out)
}
