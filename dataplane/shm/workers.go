package shm

import (
	"fmt"
	"sync/atomic"
)

// Worker slot fields.
const (
	offWorkerPID       = 0 // 0 for a free slot
	offWorkerObserved  = 8
	offWorkerHeartbeat = 16 // Unix nanoseconds
	offWorkerStarted   = 24 // Unix nanoseconds
)

// WorkerState is what a worker slot says.
type WorkerState struct {
	PID                int
	Observed           uint64 // the newest generation the worker has decoded and serves
	Heartbeat, Started int64  // Unix nanoseconds
}

func (r *Region) workerOff(i int) int {
	if i < 0 || i >= r.l.caps.Workers {
		panic(fmt.Sprintf("shm: worker slot %d of %d", i, r.l.caps.Workers))
	}
	return r.l.workers + i*workerSlotBytes
}

// ClaimWorker takes slot i for the worker with pid, started at now (Unix nanoseconds). The
// supervisor claims a slot for each worker it starts, once it knows the pid, and releases it when
// the worker exits. Claiming leaves the observed generation alone: a quick worker may have recorded
// one before its supervisor got to claim the slot.
//
// The slot's in-flight counters are zeroed first, and the slot counts in WorkersUsed from then on:
// a worker counts its requests only once its slot names its pid (InFlightAdd's caller checks
// WorkerPID), so that nothing it counts is zeroed here.
func (r *Region) ClaimWorker(i, pid int, now int64) {
	off := r.workerOff(i)
	r.zeroInFlight(i)
	for {
		used := r.load64(offWorkersUsed)
		if used >= uint64(i+1) || atomic.CompareAndSwapUint64(r.word64(offWorkersUsed), used, uint64(i+1)) {
			break
		}
	}
	r.store64(off+offWorkerHeartbeat, uint64(now))
	r.store64(off+offWorkerStarted, uint64(now))
	r.store64(off+offWorkerPID, uint64(pid))
}

// ReleaseWorker frees slot i and forgets what its worker observed, for the next one, and zeroes
// its in-flight counters: the requests of a worker that crashed never count again.
func (r *Region) ReleaseWorker(i int) {
	off := r.workerOff(i)
	r.store64(off+offWorkerPID, 0)
	r.store64(off+offWorkerObserved, 0)
	r.zeroInFlight(i)
}

// WorkerPID is the pid that slot i names, 0 for a free slot: one atomic load.
func (r *Region) WorkerPID(i int) int { return int(r.load64(r.workerOff(i) + offWorkerPID)) }

// WorkersUsed is 1 + the highest worker slot ever claimed in this region: the slots whose
// in-flight counters InFlight sums.
func (r *Region) WorkersUsed() int {
	return int(min(r.load64(offWorkersUsed), uint64(r.l.caps.Workers)))
}

// inFlightCounterBytes is the size of one in-flight counter, an int32.
const inFlightCounterBytes = 4

// The in-flight counters: an int32 for each [worker slot][health slot], packed, each written by
// its worker alone (atomic adds) and read by every worker. A worker's counters are contiguous, so
// workers never share a cache line; a sum over workers reads WorkersUsed lines.

func (r *Region) inFlightOff(worker int, slot uint32) int {
	if worker < 0 || worker >= r.l.caps.Workers || int(slot) >= r.l.healthSlots {
		panic(fmt.Sprintf("shm: in-flight counter of worker %d, health slot %d: the region has %d workers and %d slots", worker, slot, r.l.caps.Workers, r.l.healthSlots))
	}
	return r.l.inFlight + (worker*r.l.healthSlots+int(slot))*inFlightCounterBytes
}

// InFlightAdd adds delta to worker's count of its requests in flight on the backend of health slot
// slot. Only the worker of the slot calls it, while the slot names its pid.
func (r *Region) InFlightAdd(worker int, slot uint32, delta int32) {
	atomic.AddUint32(r.word32(r.inFlightOff(worker, slot)), uint32(delta))
}

// InFlight is the requests in flight on the backend of health slot slot, summed over the worker
// slots in use; never negative (a worker's decrement that raced the zeroing of its released slot
// counts nothing). It costs WorkersUsed atomic loads, and allocates nothing.
func (r *Region) InFlight(slot uint32) int64 {
	if int(slot) >= r.l.healthSlots {
		panic(fmt.Sprintf("shm: in-flight count of health slot %d of %d", slot, r.l.healthSlots))
	}
	var n int64
	off := r.l.inFlight + int(slot)*inFlightCounterBytes
	stride := r.l.healthSlots * inFlightCounterBytes
	for w := range r.WorkersUsed() {
		n += int64(int32(r.load32(off + w*stride)))
	}
	return max(n, 0)
}

// InFlightOf is worker's own count on health slot slot, for tests and tools.
func (r *Region) InFlightOf(worker int, slot uint32) int32 {
	return int32(r.load32(r.inFlightOff(worker, slot)))
}

func (r *Region) zeroInFlight(worker int) {
	if r.l.healthSlots == 0 {
		return
	}
	off := r.inFlightOff(worker, 0)
	for j := range r.l.healthSlots {
		r.store32(off+j*inFlightCounterBytes, 0)
	}
}

// Observe records, in the worker's slot i, that it serves generation g.
func (r *Region) Observe(i int, g uint64) { r.store64(r.workerOff(i)+offWorkerObserved, g) }

// Beat records that the worker of slot i was alive at now (Unix nanoseconds).
func (r *Region) Beat(i int, now int64) { r.store64(r.workerOff(i)+offWorkerHeartbeat, uint64(now)) }

// Worker reads slot i.
func (r *Region) Worker(i int) WorkerState {
	off := r.workerOff(i)
	return WorkerState{
		PID:       int(r.load64(off + offWorkerPID)),
		Observed:  r.load64(off + offWorkerObserved),
		Heartbeat: int64(r.load64(off + offWorkerHeartbeat)),
		Started:   int64(r.load64(off + offWorkerStarted)),
	}
}

// MinObserved is the oldest generation a live worker serves, and how many workers are live. With
// none live, it is the generation in force.
func (r *Region) MinObserved() (gen uint64, live int) {
	gen = r.Generation()
	for i := 0; i < r.l.caps.Workers; i++ {
		if w := r.Worker(i); w.PID != 0 {
			live++
			gen = min(gen, w.Observed)
		}
	}
	return gen, live
}
