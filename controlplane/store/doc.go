// Package store is the control plane's durable store of backend sets: every set by name, each with
// its version (resource.Version), kept in a directory that survives kill -9 and power loss.
//
// # Guarantees
//
// A Put or Delete that returned nil is on disk (written and fsynced) before it returns, and a
// restart restores every set with exactly the version it had: versions are stored, not
// recomputed. Writes are serialised; reads (Get, List, Snapshot) never wait for a write: they load
// the current state, an immutable map replaced whole on every change (copy on write, so a change
// costs a copy of the map of names, not of the sets). A read never sees a write that is not yet
// durable. A put of a set identical to the stored one writes nothing, notifies nobody and returns
// the same version. A Store opened on "" keeps everything in memory (for `xlb run`, whose YAML
// file is the source of truth).
//
// One process at a time: Open takes an exclusive flock on the directory's LOCK file, which holds
// the owner's pid, and refuses a directory locked by another process with that pid.
//
// # On-disk format (version 1)
//
// A directory holds LOCK, at most one snapshot, and one or more logs:
//
//	LOCK                      the flock, the pid of its holder, and once a log exists a line that says so
//	snapshot                  every set at the start of log <seq> (written as snapshot.tmp, fsynced, renamed)
//	wal-<seq as 16 hex>       the write-ahead log: the changes since, in order
//	torn-<log>-<offset>       the bytes of a torn append cut off a log's end (see Opening)
//
// Every file starts with a 24-byte header, then records. Integers are little-endian.
//
//	header  = magic [8]byte ("XLBSTLOG" or "XLBSTSNP") | format u32 (1) | seq u64 | crc u32
//	record  = length u32 | crc u32 | payload [length]byte
//	payload = kind u8 | body
//	  put    (1): uvarint len(version) | version | the BackendSet, protobuf-encoded
//	  delete (2): the set's name
//	  end    (3): uvarint number of put records (the snapshot's last record)
//
// Each crc is CRC-32C (Castagnoli): a header's over its first 20 bytes, a record's over its length
// field and payload. A payload is at most 64 MiB; a Put of a bigger set is refused.
//
// A log is appended to with one write and one fdatasync per change. When the logs since the last
// snapshot pass max(4 MiB, 2 × the snapshot's size), the store compacts: it creates log
// seq+1 (fsynced, and the directory too) and appends there from then on, writes every set to
// snapshot.tmp with seq+1 in its header (fsync, rename to snapshot, directory fsync), and only
// then removes the older logs. A crash at any step leaves a directory that opens to the same sets.
//
// # Opening
//
// Open replays the snapshot, then every log from the snapshot's seq on (which must be contiguous),
// and appends to the last. A torn append at the end of the last log — a record cut short by a
// crash, a zero-filled tail, or a last record that fails its checksum and has its part of some
// 512-byte sector (at least 8 bytes) zeroed, as a power loss leaves — is copied to a file of its
// own, torn-<log>-<offset> (fsynced), then cut off the log, and logged at warn: it was never
// acknowledged, and were that diagnosis ever wrong, its bytes are still there. So is a last log whose header is cut short or zero (its
// creation was cut short: it holds nothing); it gets its header again. Anything else that does not check out (a bad checksum or
// length before the end, a length that runs past the end of the file although a whole record
// follows it (each append is one record, so a torn one is followed by nothing whole), a torn
// record in an older log, a bad header, a snapshot cut short, a
// missing log) is an error naming the file and the offset, and Open refuses to start rather than
// drop writes it acknowledged. So is a directory whose LOCK says it held a store but that has no
// log and no snapshot (they were removed): opening it empty would erase every set; removing LOCK
// says that is meant.
//
// # Failures
//
// A failed append is undone (truncated) when it can be; when it cannot, or when an fsync fails
// (after which the kernel may have dropped the pages), the store takes no more writes and every
// Put and Delete fails until the process restarts and recovers from the files. A failed compaction
// is logged and retried later; the logs it did not replace are kept.
//
// Callers must never modify a resource.Versioned's Set, or the map Snapshot returns: both are shared.
package store
