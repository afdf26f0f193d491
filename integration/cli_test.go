package integration

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"

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
