// Package server is the xlb command: its command line (`xlb run`, `xlb dataplane`,
// `xlb controlplane`, `xlb demo`, `xlb version`, `xlb help`, and `xlb worker`, which only a
// supervisor starts), its flags and help, and the wiring of the packages below into those
// commands. What each process does is in its own package: server/supervisor (`xlb run` and `xlb
// dataplane`), server/worker (`xlb worker`), server/cpserver (`xlb controlplane`'s services).
//
// A config.Config is built from either a file (config.Parse, config.Load) or the flags of `xlb run`, and
// both reject what they do not understand: an unknown key, a value of the wrong type or range, a
// listener naming a backend set that does not exist. Errors about a file name its key path and line,
// as in
//
//	xlb.yaml:7: backend_sets[0].backends[1].weight: want an integer >= 0, got "x"
//
// Main is the one entry point; main.go at the module's root calls it and nothing else imports this
// package. The operating system (signals, the binary's path) is reached through a small env struct,
// so that tests drive the commands with buffers and a context instead of signals.
//
// `xlb controlplane` (planes.go) serves the discovery and admin services over a durable store,
// with health and reflection.
//
// # The packages below
//
// This package holds the commands and their flags. What they are built from has a package of its
// own, none of which imports this one (internal/archtest), one job each:
//
//	server/supervisor   the supervisor process, with its decisions about workers as a pure core
//	server/worker       the worker process: `xlb worker` and the serving of one process
//	server/config       the Config and its YAML file
//	server/backendset   the one translation between a control plane's set and table.Set
//	server/cpserver     a control plane's services over a store, for `xlb controlplane` and `xlb run`
//	server/localadmin   the data plane's admin service, the one place that picks gRPC status codes
//	server/upgrade      the old supervisor's side of an upgrade, over an Env of OS calls
//	server/rpc          the gRPC server's TLS and authentication, dial credentials, unix sockets
//	server/telemetry    the metrics path from workers to OpenTelemetry and Prometheus
//	server/sysd         pid file, sd_notify, socket activation
//	server/exit         the exit statuses
//
// Exit statuses: 0 for success (for run and demo, a clean shutdown), 1 when starting or serving
// failed, 2 for a bad command line or configuration.
package server
