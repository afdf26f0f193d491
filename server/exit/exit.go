// Package exit is the exit statuses of the xlb command, shared by its processes: the command
// line, the supervisor's core and the worker.
package exit

const (
	// OK: the command did what was asked; for run and demo, a clean shutdown.
	OK = 0
	// Failure: starting or serving failed (a listen error, the proxy refused its config, ...).
	Failure = 1
	// Usage: the command line or the configuration it points at is wrong.
	Usage = 2
)
