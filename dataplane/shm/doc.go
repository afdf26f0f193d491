// Package shm is the shared region: one piece of memory, mapped MAP_SHARED by the supervisor (its
// only writer) and by every worker (readers), through which backend sets, health and worker
// liveness pass between processes without locks or system calls. It is the only package of xlb,
// with rawio, that uses unsafe, and the only one that maps memory.
//
// # Sealed memory, and a file as its copy
//
// A mapping of a file faults (SIGBUS, which kills a Go process) on every access past the file's
// end: a region file truncated by anyone (truncate -s 0, a copy over it) would kill every worker
// and the supervisor at once. So the region that processes map is not the state directory's file
// but a memfd sealed against shrinking and growing (New, Load; F_SEAL_SHRINK|F_SEAL_GROW|
// F_SEAL_SEAL): its size is fixed for ever, ftruncate of it fails with EPERM, also through
// /proc/PID/fd. It has no path: the supervisor passes it to each worker and to the new binary of an
// upgrade as an inherited descriptor. The file is a copy (Save, replaced at once by a rename),
// which a restarted supervisor loads with read(2), never mapping it (Load): truncating, removing or
// rewriting it harms no running process. Create and Open map a file (for tests and tools): such a
// region is not sealed (Sealed), and must not be one that others may truncate. A binary that maps
// an inherited descriptor (OpenFile) takes either: an older binary's file across an upgrade, or
// this one's sealed memory across a downgrade.
//
// # Layout (version 3)
//
// All integers are little-endian, which is also how the words are accessed in memory: the region is
// for little-endian hosts (amd64, arm64), where every mapping of it reads the same bytes. Every
// atomic word is 8-byte aligned. TestLayout pins every
// offset and size; changing one means a new LayoutVersion, which older binaries refuse to map.
//
//	header      256 B   magic, layout version, capacities (TLS profiles at offset 88), section
//	                    offsets (the in-flight counters' at 96), the generation word (offset 128),
//	                    the health epoch beside it (136), and the worker slots used (144)
//	half 0      64 B half header (seq, gen, counts, checksum) + payload
//	half 1      the same
//	health      HealthSlotsMax × 64 B, stable across generations
//	workers     WorkersMax × 64 B: pid, observed generation, heartbeat
//	in flight   WorkersMax × HealthSlotsMax × 4 B: int32 counters, [worker slot][health slot]
//
// A half's payload is the sets (48 B each), then their backends (32 B each), then the TLS profiles
// (32 B each), then the strings they point into, packed; its checksum is CRC-32C over the payload.
// A set record's byte 7 is its failure statuses (what workers count as a backend's failure). A
// backend record's bytes 24-27 name its TLS profile: 0 for plain TCP, n for the half's n-th
// profile. A profile is one distinct TLS setting of the generation, shared by every backend, of
// any set, that has it: server name, CA file, client certificate and key files (each a string:
// offset and length), the minimum version (bytes 24-25) and flags (byte 26: 1 skips verification,
// 2 turns resumption off). The half header's word at 36 counts the profiles. Profiles count
// against Capacities.TLSProfiles and their strings against StringBytes; Check measures them as
// Publish does.
//
// A set record's bytes 16 to 43 are its affinity: byte 16 the hash kind (0 none, 1 header, 2
// cookie, 3 client address) with the hash name at 20 (offset) and 24 (length); byte 17 flags (1
// sticky, 2 no HttpOnly), byte 18 SameSite (0 lax, 1 strict, 2 none), and the sticky cookie's
// name (length at 26, offset at 28), path (offset at 32, length at 36) and max age in seconds
// (40). Their strings count against StringBytes.
//
// # In-flight counters
//
// Each worker counts its requests in flight on each backend of a least_request set in its own
// row of int32s, indexed by the backend's health slot (stable across generations, so a request
// that ends in a later generation uncounts where it counted); every worker reads the sum over
// the worker slots in use (the header's word at 144, 1 + the highest slot ever claimed), which
// is WorkersUsed atomic loads a candidate. A row is a worker's alone, so workers never share a
// cache line. ClaimWorker zeroes a row before it names the pid, and a worker counts only while
// its slot names its pid; ReleaseWorker zeroes it again, so the requests of a worker that
// crashed never stick. A count summed below zero reads as zero. A health slot reused by another
// backend keeps the counts of the requests still in flight on the old one: they end there.
//
// Cost: 4 bytes × WorkersMax × 2 × BackendsMax. At the defaults (64 workers, 4096 backends) 2
// MiB; at 10,000 backends and 64 workers 4.9 MiB. Capacities whose counters pass
// InFlightBytesMax (64 MiB) are refused, naming both.
//
// The health epoch, a set record's byte 7 and the health words came after the first regions of
// layout 1 were written, in bytes that those left zero; zero means what those regions meant (no
// health change, no status counts as a failure, a healthy backend), so binaries before and after
// read each other's regions alike, and an upgrade across them keeps working.
//
// Layout 2 added the TLS profiles. That could not be done in bytes a version 1 binary ignores: it
// would read a TLS backend as a plain one and connect to it in clear text. So the version moved:
// each binary refuses the other's region (ErrLayout; ErrOldLayout too for an older one, which the
// supervisor moves aside and rebuilds from the sets it applied, as it does a damaged one). An
// upgrade from a binary of layout 1 is thus refused by the new binary (the old one serves on): it
// takes a restart.
//
// Layout 3 added the sets' affinity and the in-flight counters, again in a new version: a layout
// 2 binary would serve a sticky or maglev set as round robin, and its workers would not count in
// flight. An upgrade from layout 2 takes a restart too.
//
// # Protocol
//
// The writer writes generation g+1 into the half not in use (half (g+1)&1): it makes that half's
// seq odd, writes, stores gen and checksum, makes seq even, and only then stores g+1 in the
// generation word. A reader loads the generation word (one atomic load, the cost of a request that
// sees no change), reads that half's seq, copies the payload, checks gen, checksum and an unchanged,
// even seq, and retries otherwise: a half being rewritten is never acted on. The writer never waits
// for readers; a stalled or killed reader blocks nothing.
//
// Every word of the region is read and written with sync/atomic, so that the race detector and the
// Go memory model see the region's cross-process accesses as the synchronised accesses they are.
//
// Read allocates the decoded generation; a worker calls it once per generation, not per request.
//
// # Damage
//
// A region can be damaged from outside (its file overwritten, zeroed, cut short). Open refuses a
// file that is not a whole region, Read refuses a half that is not what its writer left, and
// Verify (and Writer.Verify, which also checks the generation word against the last one it
// stored) checks a mapped region; every such error wraps ErrZeroed (the header's magic is 0) or
// ErrCorrupt (anything else: a header that does not match its layout, a checksum or a record
// that fails, a half holding another generation under an unchanged generation word), never
// ErrEmpty, so that no reader takes a zeroed region for one with nothing published. Since the
// writer rewrites half g&1 only after moving the generation word past g, a reader that finds that
// half odd or of another generation while the word still says g knows it is damaged, not being
// written. What to do about damage is the caller's: the supervisor moves the file aside and
// rebuilds (NewWriterAfter keeps the generations going up across the new region).
//
// # Health slots
//
// A slot's HealthWords words belong to dataplane/health, which says who writes each: this package
// keeps them across generations and zeroes them when a slot is taken, and offers atomic loads,
// stores, swaps and compare-and-swaps on them. BumpHealthEpoch, after the supervisor has written
// routes into the slots, tells the workers to read them again.
//
// A caller must never keep a slice of the mapping past Close, and never write the region except
// through Writer, the worker-slot methods, the health-word methods and BumpHealthEpoch.
package shm
