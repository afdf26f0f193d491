// Package server is the xlb process: its command line (`xlb run`, `xlb dataplane`,
// `xlb controlplane`, `xlb demo`, `xlb version`, `xlb help`), the loading and strict validation of
// its YAML configuration, the root hclog logger, the supervisor and the worker role, the gRPC
// servers of the control plane and their security, and the wiring of the other folders.
//
// A config.Config is built from either a file (config.Parse, config.Load) or the flags of `xlb run`, and
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
// # Supervisor and workers
//
// `xlb run` is a supervisor (supervisor.go). It locks its state directory (a second xlb on the same
// directory is refused with the first one's pid), removes the unix sockets there that a process
// killed by SIGKILL left (NAME.sock.PID of a PID no process has, or on which a connect is refused:
// the PID was reused), logging each, loads the region file there into sealed memory and maps that
// (dataplane/shm; the file stays a copy, saved as the region changes, and a damaged one is moved
// aside and rebuilt: region.go), binds the listeners, and starts its workers: the same binary, as
// /proc/self/exe, re-executed as
// `xlb worker` (server/worker) with the region, a control pipe and the listening sockets as inherited
// descriptors. By default every worker accepts on the same sockets: one accept queue per listener,
// so a dying worker strands no queued connection. With reuse_port each worker has its own socket
// of a SO_REUSEPORT group; the supervisor holds them all, so a dead worker's queue waits for its
// replacement. Workers accept through rawio.Listener (no keep-alive setsockopts per connection).
//
// A listener with tls (tls.go) is checked before anything is bound: every certificate, key and
// client CA file must load, or the start (or the upgrade) fails naming it. The supervisor then
// keeps the session ticket keys every worker shares, STATE_DIR/ticket-keys
// (dataplane/tlsterm.TicketRotator): made or rotated before the workers start, and rotated every
// minute from the loop, except once an upgrade began, whose new supervisor rotates from its start.
// The workers terminate TLS themselves (server/worker) and reload the files while serving.
//
// The supervisor is the region's only writer. A fresh region gets the configured sets before any
// worker starts; a region that holds a generation is served first and the file's sets are
// published after (static stability: a restart never waits on, or is broken by, the file). The file
// is watched with inotify on its directory (watch.go), and read again on SIGHUP; each change of its
// backend sets is one new generation. The watch follows the directory's inode: when that directory
// is moved away or removed (`mv conf conf.old; mkdir conf`, or the kubelet removing the directory
// that ..data pointed to when --config names a file through ..data), the supervisor logs it at WARN
// ("config directory moved away"), polls the path (50ms doubling to 1s) until a directory is there,
// then watches that one, logs it at INFO ("config directory is back") and reloads. A directory above
// the watched one being moved or replaced is something inotify does not tell: SIGHUP watches the
// directory at the path again ("config directory was replaced by another") besides reloading. The
// supervisor wakes idle workers through their control pipes, and logs "generation applied" with its
// latency once every live worker's slot shows the generation. A worker that exits unasked is
// restarted after a delay that doubles with each crash that follows a short run (50ms to 10s); one
// whose heartbeat (written every second) is older than the worker stall timeout is killed first. On
// SIGTERM or SIGINT the supervisor closes its listening sockets, sends SIGTERM to every worker and
// waits for them to drain, killing them past the shutdown timeout and a grace of 5s. Those
// decisions are server/supervisor's pure core; the loop here feeds it events (exits, ticks,
// publications, a rebuilt region, the stop) and carries out its actions on the processes. A worker whose
// control pipe ends (its supervisor died, even by SIGKILL) drains and exits by itself. Workers
// ignore SIGHUP, which a terminal's hang-up sends to the whole process group.
//
// Each worker runs with GOMAXPROCS = CPUs / workers unless the environment sets GOMAXPROCS; the
// default worker count, one per two CPUs, and why, is on defaultWorkers.
//
// # Backend sets from a control plane
//
// The supervisor's backend sets always come from a control plane (dpsync.go). `xlb dataplane`
// dials one (--control-plane); `xlb run` starts one inside itself (embedded.go): an in-memory store
// that the configuration file fills, served on STATE_DIR/control.sock, so that grpcurl works on a
// single machine too. The xds client (clients/xds) hands each response to the supervisor's loop,
// which decides (planApply, a pure function) what serves next: every set is validated alone
// (controlplane/resource, plus what this data plane cannot do: TLS to backends), and when the valid
// ones do not fit the region together they go in one at a time, by name; it publishes one
// generation, and answers once every live worker serves it: an ACK, or a NACK naming each rejected
// set, whose previous version keeps serving. The applied sets and their
// versions are saved beside the region (STATE_DIR/applied, not synced: a stale one is ignored), so a
// restarted data plane tells the control plane what it has.
//
// `xlb controlplane` (planes.go) serves the discovery and admin services over a durable store,
// with health and reflection.
//
// # The packages below
//
// This package holds the commands and their flags and the supervisor's loop. What they
// are built from has a package of its own, none of which imports this one (internal/archtest):
// server/config (the Config and its YAML file), server/cpserver (a control plane's services over a
// store, for `xlb controlplane` and the one inside `xlb run`), server/rpc (the gRPC server's TLS
// and authentication, the data plane's dial credentials, the state directory's unix sockets),
// server/supervisor (the supervisor's decisions about its workers, a pure core), server/worker
// (the worker process: `xlb worker` and the serving of one process), server/exit (the exit
// statuses),
// server/localadmin (the data plane's admin service, the one place that picks gRPC status codes),
// server/upgrade (the old supervisor's side of an upgrade, over an Env of OS calls),
// server/telemetry (the metrics path from workers to OpenTelemetry) and server/sysd (pid file,
// sd_notify, socket activation).
//
// Exit statuses: 0 for success (for run and demo, a clean shutdown), 1 when starting or serving
// failed, 2 for a bad command line or configuration.
package server
