// Package server is the xlb process: its command line (`xlb run`, `xlb demo`, `xlb version`,
// `xlb help`), the loading and strict validation of its YAML configuration, the root hclog logger,
// and the wiring of dataplane/proxy to listeners and to SIGINT/SIGTERM.
//
// A Config is built from either a file (ParseConfig, LoadConfig) or the flags of `xlb run`, and
// both reject what they do not understand: an unknown key, a value of the wrong type or range, a
// listener naming a backend set that does not exist. Errors about a file name its key path and line,
// as in
//
//	xlb.yaml:7: backend_sets[0].backends[1].weight: want an integer >= 1, got "x"
//
// Main is the one entry point; main.go at the module's root calls it and nothing else imports this
// package. The operating system (signals, the proxy constructor) is reached through a small env
// struct, so that tests drive the commands with buffers and a context instead of signals.
//
// Exit statuses: 0 for success (for run and demo, a clean shutdown), 1 when starting or serving
// failed, 2 for a bad command line or configuration.
package server
