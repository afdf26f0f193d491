package server

import (
	"context"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// env is what the commands need from the process around them. Main fills it with the real thing;
// tests give buffers and a context they cancel themselves.
type env struct {
	stdout, stderr io.Writer
	// stopContext returns a context that ends when the process is asked to stop (SIGINT, SIGTERM),
	// and a func that releases it.
	stopContext func() (context.Context, context.CancelFunc)
	// exe is the binary that the supervisor starts as its workers: /proc/self/exe, this very
	// binary even when the file it came from was replaced since.
	exe string
	// binary is the path this process was started from, which an upgrade starts again: the
	// new binary is whatever is there then.
	binary string
}

// osEnv is the env of the real process.
func osEnv(stdout, stderr io.Writer) *env {
	return &env{
		stdout:      stdout,
		stderr:      stderr,
		stopContext: signalContext,
		exe:         "/proc/self/exe",
		binary:      executable(),
	}
}

// executable is the path of this process's binary, as it was when the process started.
func executable() string {
	p, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return strings.TrimSuffix(p, " (deleted)")
}

// signalContext ends on the first SIGINT or SIGTERM. After it, the signals get their default
// behaviour back, so a second Ctrl-C kills the process at once instead of waiting for the shutdown.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}
