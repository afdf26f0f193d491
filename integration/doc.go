// Package integration holds xlb's black-box tests. TestMain builds the binary once with the `go` on
// PATH; each test runs it as a real process (`xlb run`, `xlb demo`, ...) on loopback ports chosen by
// the kernel, in front of net/http backends of the test process, and talks to it with real clients:
// curl, and raw TCP connections where a test needs to hold a connection open or idle.
//
// What the tests rely on from the host: Linux (/proc for RSS and for telling which process owns a
// listening socket), curl on PATH (tools/install.sh installs it), and loopback networking.
//
// Every wait is on a condition with a deadline. Every process a test starts is stopped by its PID
// (SIGTERM, then SIGKILL only if it did not exit in time) in t.Cleanup, and its stderr and stdout
// are written to the test log when the test failed. BenchmarkIdleConnMemory, which opens 10,000
// connections, runs only with -bench.
//
// workers_test.go tests the supervisor and its workers (`xlb run --workers 2`) through the
// supervisor's JSON log: a worker killed under load, 200 rewrites of the configuration file under
// load (each request checked against the generations in force while it was in flight), a bad file,
// a restart on the same state directory. BenchmarkReloadApplied measures the time from a write of
// the file to "generation applied" (go test -run XXX -bench ReloadApplied -benchtime 200x
// ./integration). The rewrites are random: -args -reload-seed=N repeats the ones of a logged seed.
package integration
