// Package supervisor is the decisions of `xlb run`'s supervisor about its workers, as a pure core:
// events in, actions out.
//
// The owner loop (package server) owns the processes, the region and the clock. It tells a Core
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
