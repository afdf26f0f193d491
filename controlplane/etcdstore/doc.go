// Package etcdstore keeps a control plane's backend sets in etcd, so that several control-plane
// replicas share them: a put on any replica reaches the data planes of every replica, and a
// replica that dies takes nothing with it. It is the store of `xlb controlplane --store etcd`;
// the write-ahead log of package store stays the default for one machine.
//
// # Keys
//
// Every set is one key, <prefix>/sets/<name> (prefix Config.Prefix, "/xlb" by default), whose
// value is the set and its version as a protobuf xlb.discovery.v1.VersionedBackendSet. The version
// is the one package store gives a set (resource.Version, a hash of its deterministic encoding),
// so data planes see the same versions whichever store a control plane runs on. A key that holds
// no valid set (written by hand, by a newer xlb) is logged at error and not served; a valid set
// of an earlier value is served instead, if this replica saw one.
//
// # Writes
//
// Put and Delete are compare-and-set transactions on the key's mod_revision: the decision (does
// expected_version match, is the set identical) is made on etcd's current entry, never on this
// replica's view, which may lag. One transaction usually does: it commits if the key is still at
// the mod_revision the view knows, and else returns etcd's entry, on which the decision is made
// again (at most 8 times, then the write fails as unavailable). A put of a set identical to the
// one in etcd writes nothing and returns the same version (etcd confirms it with a linearizable
// read). A write that was committed survives the death of this replica and of any minority of
// etcd's members (etcd's own guarantee: a commit is on a quorum's disks).
//
// A request to etcd that fails (a leader election, a member down), or that has no answer within
// 2s, is made again until Config.Timeout (5s) has passed since the write began. The 2s matter
// when the leader dies: a proposal a follower forwarded to it is lost, and etcd says so only
// after its request timeout (5s and two election timeouts, 7s by default), while a new leader
// takes the request made again about a second after the death. Past Config.Timeout the write
// fails with an error that wraps store.ErrUnavailable and names etcd's endpoints, which the admin
// API returns as UNAVAILABLE. A request made again while an earlier one may still commit is
// safe: both compare the key's mod_revision, and a write that finds its own value there (its
// earlier request committed) returns as done. Such a write was not acknowledged, but it may still have been committed (a timeout
// cannot tell): read the set, or put it again, which is safe. A request that etcd refuses (one
// larger than its --max-request-bytes, 1.5 MiB by default) fails at once. So does one that etcd's
// authorization refuses (the client's user has no role with write on the key): its error wraps
// store.ErrPermissionDenied, never ErrUnavailable, and names etcd and the prefix; the admin API
// returns it as PERMISSION_DENIED. Open fails the same way when the user may not read the prefix.
//
// # Reads
//
// Get, List and Snapshot read this replica's view, an immutable map replaced whole on each change
// (copy on write): they never wait for etcd and keep working when etcd is gone. The view is
// listed (linearizably) by Open and then follows a watch from the revision of that listing, so
// no change falls between them. A change by another replica shows here when the watch delivers
// it (milliseconds on a healthy cluster). A Put or Delete that etcd committed goes into this
// replica's view as it returns, ahead of the watch (which may be slow, or coming back after a
// loss), so a read after a write on the same replica sees it; the watch's events of that key up
// to the write's revision are then older than the view, and skipped. Subscribe tells of every
// change of the view (buffered 1, coalescing), which is what discovery pushes.
//
// The watch requires a leader (a member cut off from the quorum ends it). A watch that ends, or
// cannot be made, is made again from the view's revision with a backoff (100ms up to 5s); one
// whose revision etcd compacted lists every set again and replaces the view whole. None of these
// clears the view: while etcd is unreachable the data planes keep what they were served, and
// changes made meanwhile by others arrive when the watch is back.
//
// # What a caller must never do
//
// Modify a resource.Versioned's Set, or the map Snapshot returns: both are shared. Close the etcd
// client before the store: Close stops the watch, and the client is the caller's to close after.
package etcdstore
