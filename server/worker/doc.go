// Package worker is the worker process of `xlb run`: `xlb worker`, started by the supervisor with
// the shared region, a control pipe, the health pipe and the listening sockets as inherited
// descriptors (FDRegion and the others) and its Spec in the environment (SpecEnv).
//
// A worker maps the region, follows its generations (dataplane/table), serves every inherited
// listener with a dataplane/proxy until SIGTERM, SIGINT or the end of its control pipe, then
// drains within the shutdown timeout. It writes its heartbeat into its region slot every
// Heartbeat, tells the supervisor of a backend's failure by a byte on the health pipe (coalesced,
// at most one per millisecond), and reports its per-backend metrics to the supervisor's metrics
// socket (server/telemetry). SIGHUP is ignored: a terminal's hang-up reaches the whole process
// group, and reloading is the supervisor's.
//
// Env.Serve is the serving of one process, which Main wraps; its tests drive it with a fake proxy.
package worker
