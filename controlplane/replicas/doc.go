// Package replicas shares what each control-plane replica knows of its own data planes through
// etcd, so that ListDataPlanes and GetLoad on any replica of `xlb controlplane --store etcd` show
// the data planes of all of them.
//
// # Keys
//
// Each replica writes, under one lease of its own (Config.TTL, 5s, kept alive), a key per data
// plane it has and one per data plane's load:
//
//	<prefix>/replicas/<replica id>/dataplanes/<node id>   xlb.admin.v1.DataPlane (with its health view)
//	<prefix>/replicas/<replica id>/load/<node id>         xlb.admin.v1.DataPlaneLoad (totals since this replica started)
//
// It writes them every Config.Interval (the load interval, 1s by default), and only the keys
// whose value changed, in transactions of at most 64 operations and 1 MiB; a data plane whose
// status or load alone is larger is not shared (logged once). A data plane that disconnected is
// shared Config.KeepDisconnected (10 minutes) longer, then its keys are deleted. A replica that
// dies stops renewing its lease, and its keys vanish TTL later; one that stops (Close) revokes
// it, and they vanish at once. A replica that lost its lease (etcd out of reach for a TTL)
// writes every key again under a new one when etcd is back.
//
// # Reads
//
// DataPlanes and Load read the other replicas' keys on demand, with one serializable Get of
// <prefix>/replicas/ (answered by one member, quorum or not, within Config.Timeout), and merge
// them with this replica's own state, read locally. A node that several replicas know (it moved
// from one to another) shows the status of the replica it is connected to, else of the one it
// left last. Its load totals are added over the replicas (each report reaches one replica, so
// none is counted twice) and its in-flight gauges are taken from that same replica. The totals
// of a replica that died vanish with its keys: GetLoad's sums are of the replicas alive. When
// etcd cannot be read, a replica shows its own data planes alone, and logs that (at most once a
// minute).
//
// # What a caller must never do
//
// Give two live replicas one id: each would overwrite the other's keys, and the first to stop
// would delete both's.
package replicas
