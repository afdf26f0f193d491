// Package admin is a typed Go client of the control plane's AdminService, for orchestration
// tooling: put, get, list and delete backend sets, list data planes, and wait until the data
// planes serve a version of a set.
//
// # Retries
//
// A call that fails with UNAVAILABLE (the control plane is down, restarting, or unreachable) is
// tried again, up to 5 attempts in all by default, after a jittered delay that starts at 50ms and
// doubles up to 2s (WithAttempts, WithBackoff). No other code is retried, and the context bounds
// every attempt and every delay.
//
// Retrying a write is safe because writes are idempotent by content: a put of the set that is
// already stored changes nothing and returns the same version. Two cases of an attempt that
// succeeded but whose answer was lost are handled:
//
//   - A compare-and-set put retries into FAILED_PRECONDITION, since the version it expected is gone
//     (it replaced it). Put then gets the set, and succeeds if its version is
//     resource.Version(set): the set is what the caller put. If another writer changed the set in
//     between, the FAILED_PRECONDITION stands.
//   - A delete retries into NOT_FOUND. After a retry, Delete takes NOT_FOUND as success: the set
//     does not exist, as asked. (So a Delete of a set that never existed, whose first attempt was
//     UNAVAILABLE, returns nil.)
//
// Errors are wrapped with what the call was doing; status.Code and status.FromError see through
// the wrapping to the gRPC code.
package admin
