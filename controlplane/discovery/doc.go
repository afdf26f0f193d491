// Package discovery is the control plane's side of xDS-lite: the DiscoveryService server that
// streams versioned backend sets to data planes and records what each applied or rejected.
//
// # Protocol
//
// The protocol is the header comment of proto/xlb/discovery/v1/discovery.proto; this server keeps
// it as follows.
//
//   - The first request of a stream must name its node (node.id), else the stream ends with
//     INVALID_ARGUMENT; a later request may omit the node but must not change it (INVALID_ARGUMENT).
//     A second stream of the same node id replaces the first, which ends with ABORTED; the server
//     logs that at warn with both peers' addresses (two processes with one node id show as a
//     stream of warnings, each replacing the other).
//   - The first request's subscribe is the set names the node wants (empty or "*": every set); a
//     later request with a non-empty subscribe replaces it. More than SetsPerNodeMax names, or a
//     name that is not a valid set name, ends the stream with INVALID_ARGUMENT naming the field.
//   - Nonces are a counter per stream. A request whose response_nonce is neither empty nor the
//     latest sent on its stream is stale and ignored entirely (logged at debug). The first request
//     answers nothing: its response_nonce and errors are ignored.
//   - A request with errors is a NACK; nothing else is (versions are never compared to tell).
//     Every request that is not stale replaces the node's applied versions, generation and
//     workers; each error records that the node rejected that version of that set.
//   - A response holds the sets the node wants whose version it neither applies nor rejected, up
//     to resource.ResponseBytesTarget of them (by name; one set alone when it is larger), and, as
//     removed, every set the node applies that no longer exists or that it does not want. The rest
//     go in the next response, after the answer. An empty one is never sent, and none is sent while
//     the previous one is unanswered.
//   - A change of the Source is pushed Config.Debounce after it: every change within that window
//     goes out in the same push. Each stream also looks again after each answer it receives.
//   - Deltas: to a stream whose first request set accept_deltas, a set goes as a BackendSetDelta
//     (its fields but backends, and its backends as runs of the base's and new ones) when the
//     snapshot has a delta of it on the version the snapshot before had (newDelta: only when the
//     delta encodes in under half the set's whole), the node serves that version, and that version
//     was sent on this stream (stream.sent). Otherwise it goes whole. So a data plane that just
//     connected, or one that missed a version, is sent whole sets; the xds client (clients/xds)
//     keeps what it was sent, to make deltas whole.
//
// What a node rejected is kept across its streams (a data plane that reconnects is not sent again
// what it refused) until its set is deleted from the Source while the node does not serve it. A
// rejected version is sent again Config.NackRetry after the NACK (doubled with each rejection in a
// row of that version, at most 32-fold): a data plane over its capacity then may have room later,
// and one that rejects it still is asked seldom.
//
// # Costs
//
// A push takes one Snapshot of the Source, shared by every stream. A stream finds what to send by
// comparing versions: a set is never hashed or encoded to decide. Each version of a set is encoded
// once, when it enters a snapshot, whole and as its delta on the version before (comparing the
// two versions' backends by id, once), and every response of every stream that carries it copies
// those bytes (as unknown fields of the server's message, which the data plane decodes as its sets
// and deltas; a response of one set or delta shares them without a copy until gRPC marshals it): a
// push to N streams does not marshal the set N times. A change of a few backends of a large set
// sends each data plane those backends, not the set: the push of one changed weight in a set of
// 1,000 backends of BenchmarkControlPlanePush (integration) is a response of 111 bytes instead of
// 22.8 KB, to every data plane (bench/RESULTS.md has the push latencies). A set that cannot be
// encoded (a string that is not UTF-8) is logged at error and never sent; data planes keep what
// they have of it.
//
// # Bounds
//
// The server remembers every node since its start, up to DataPlanesMax; past it, the node that
// disconnected first is forgotten. What one request may carry (applied versions, errors, workers)
// is bounded by gRPC's message size limit, which the gRPC server around this one sets to
// resource.MessageBytesMax, as the data plane does for what it receives.
//
// # What a caller must never do
//
// Mutate a set or a map returned by Source.Snapshot: streams send them concurrently.
package discovery
