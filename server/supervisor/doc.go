// Package supervisor is the supervisor process of `xlb run` and `xlb dataplane`: Run.
//
// The supervisor (supervisor.go) locks its state directory (a second xlb on the same directory
// is refused with the first one's pid), removes the unix sockets there that a process
// killed by SIGKILL left (NAME.sock.PID of a PID no process has, or on which a connect is refused:
// the PID was reused), logging each, loads the region file there into sealed memory and maps that
// (dataplane/shm; the file stays a copy, saved as the region changes, and a damaged one is moved
// aside and rebuilt: region.go), binds the listeners, and starts its workers: the same binary, as
// /proc/self/exe, re-executed as `xlb worker` (server/worker) with the region, a control pipe and
// the listening sockets as inherited descriptors. By default every worker accepts on the same sockets: one accept queue per listener,
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
// decisions are the Core's (below); Run's loop feeds it events (exits, ticks, publications, a
// rebuilt region, the stop) and carries out its actions on the processes. A worker whose control
// pipe ends (its supervisor died, even by SIGKILL) drains and exits by itself. Workers ignore
// SIGHUP, which a terminal's hang-up sends to the whole process group.
//
// Each worker runs with GOMAXPROCS = CPUs / workers unless the environment sets GOMAXPROCS; the
// default worker count, one per two CPUs, and why, is on defaultWorkers.
//
// # Backend sets from a control plane
//
// The supervisor's backend sets always come from a control plane (dpsync.go). `xlb dataplane`
// dials those of --control-plane, in order (clients/xds fails over to the next); `xlb run` starts
// one inside itself (embedded.go): an in-memory store that the configuration file fills, served on
// STATE_DIR/control.sock, so that grpcurl works on a single machine too. The xds client (clients/xds) hands each response to the supervisor's loop,
// which decides (planApply, a pure function) what serves next: every set is validated and
// translated alone (server/backendset.FromProto: the rules of controlplane/resource; then the files
// of its TLS to backends are read, backendset.LoadTLS, so that a missing or bad CA, certificate or
// key is the set's NACK naming the field), and when the valid ones do not fit the region together
// they go in one at a time, by name; it publishes one generation, and answers once every live
// worker serves it: an ACK, or a NACK naming each rejected set, whose previous version keeps
// serving. The applied sets and their versions are saved beside the region (STATE_DIR/applied,
// not synced: a stale one is ignored), so a restarted data plane tells the control plane what it
// has. A set applied with insecure_skip_verify on some backends is logged at WARN, naming the set,
// its version and those backends, once per version applied. The monitor's HTTP probes of a TLS
// backend speak TLS with the backend's settings, their files read again when the set's version
// changes (health.go).
//
// # The core
//
// The supervisor's decisions about its workers are a pure core, Core: events in, actions out.
// The owner loop (Run's) owns the processes, the region and the clock. It tells a Core
// what happened: a worker Started or its start failed (StartFailed), a worker Exited, a generation
// was Published (and who waits for it: Await), the region was Rebuilt, a Stop was asked, and time
// passed (Tick, with a View of the region's worker slots). The Core answers with Actions: Start a
// worker, Signal one, Release one that exited (its control pipe, its region slot), FreeSlot of a
// process that is gone, Applied with the replies waiting for a generation, Ready, Done with the
// exit status. Next says when the owner must tick at the latest.
//
// What the core decides:
//   - A worker that exits unasked is restarted after RestartDelayMin, doubled with each crash
//     after a short run up to RestartDelayMax, and RestartDelayMin again after a run of
//     RestartStable. A start that fails counts as a crash.
//   - A worker whose heartbeat in its region slot is older than the stall timeout is killed once
//     (SIGKILL), and restarted as any worker that exits. A slot another process holds says
//     nothing of it.
//   - A region slot held by a pid that is not one of this supervisor's workers, and whose process
//     is gone (workers of a new binary an upgrade killed, or of a supervisor that died), is freed:
//     "applied" would otherwise wait on it for ever.
//   - A generation is applied once every live worker observed it, in order; one that waits past
//     AppliedWarn is logged once with the workers that lag. The supervisor is ready the first
//     moment every worker runs and serves the generation in force.
//   - A rebuilt region retires every worker (SIGTERM: it drains) and starts its replacement on
//     the new region; a retired worker's exit is no crash.
//   - A stop sends SIGTERM to every worker, drops the restarts due, kills what still runs past the
//     shutdown timeout and KillGrace, and is Done once every worker exited: 0, or 1 when one
//     failed (an exit by the SIGTERM itself is a stop) or had to be killed.
//
// Its tests (core_test.go) drive every scenario with a fake clock and a fake region, without a
// process.
package supervisor
