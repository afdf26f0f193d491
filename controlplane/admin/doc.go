// Package admin is the control plane's AdminService (proto/xlb/admin/v1): the gRPC API through
// which orchestration tooling and operators put, get, list and delete backend sets in the store,
// and see what each data plane applied or rejected.
//
// The server is the one place where the store's errors become gRPC status codes:
//
//	INVALID_ARGUMENT     a request that does not validate; the message names the field, as in
//	                     "backend_set.backends[2].port: want 1 to 65535, got 0"
//	NOT_FOUND            a get or delete of a set that does not exist
//	FAILED_PRECONDITION  a compare-and-set whose expected_version is not the set's current
//	                     version; the message says the current one
//	UNAVAILABLE          the store cannot take the write now (etcd without quorum, or not reached
//	                     within its timeout); the message names the store (logged at warn).
//	                     The write was not acknowledged (after a timeout it may still land):
//	                     retry it, which an identical put makes safe
//	PERMISSION_DENIED    the store's backend refused the write to this control plane (etcd: the
//	                     role of --etcd-username has no write permission on the prefix); the
//	                     message names etcd and the prefix (logged at error). Nothing was
//	                     written; a retry is refused the same way until etcd's roles change
//	INTERNAL             the store failed (it is logged at error)
//
// Every change is logged at info with the set's name and version, and the peer that asked. A put
// of a set identical to the stored one changes nothing (it is logged at debug) and returns the
// same version, so a put is safe to retry.
//
// The server keeps no state of its own: sets live in the Store, and data planes in DataPlanes
// (implemented by the discovery server, or by replicas.Registry across control-plane replicas). It
// never modifies what they return. A data plane that DataPlanes returns with its backend health
// keeps it; Load.Health fills in the others.
package admin
