// Package dirlock keeps two processes out of one directory: a lock file in it, held with an
// exclusive flock for as long as its *os.File is open, says the holder's pid, and a second
// process that asks for it is refused at once (no waiting) with a *HeldError that names that pid.
//
// The flock goes with the open file: it is released when the file is closed, by the holder or by
// the kernel when the holder dies (kill -9 included), and it passes to a process that inherits the
// descriptor (an upgrade). A stale pid left in the file by a dead holder is therefore harmless: only
// the flock decides. Two Locks of one file by one process conflict too (each opens its own file).
//
// A caller must never remove the lock file while it holds it: a second process would create a new
// file of that name, and lock it, beside the first.
package dirlock
