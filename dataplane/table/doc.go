// Package table is xlb's typed model of backend sets (Set, Backend), and one generation of them as
// a worker serves it: decoded once from the shared region into plain, immutable values, then read
// by every request without locks.
//
// A Set is the one form of a backend set in the data plane: the proxy serves it, the supervisor
// writes it into the region (Records) and hands its health policy to the monitor. The zero value of
// every field means what its comment says. A Set is checked where it is made from outside, by the
// control plane's rules (server/backendset translates the control plane's form and refuses what
// controlplane/resource refuses); this package never validates one itself, and the proxy refuses only what it could not serve (proxy.Proxy.SetBackends).
//
// A Follower is a worker's side of the region. Generation is one atomic load, the whole cost of a
// request that sees no change; Load decodes the generation in force (shm.Region.Read retries past a
// half being rewritten, so a torn set is never returned); Observed records in the worker's slot
// that the worker now serves a generation, which is how the supervisor learns that a generation was
// applied by every worker.
package table
