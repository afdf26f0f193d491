package shm

import "fmt"

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
func (r *Region) ClaimWorker(i, pid int, now int64) {
	off := r.workerOff(i)
	r.store64(off+offWorkerHeartbeat, uint64(now))
	r.store64(off+offWorkerStarted, uint64(now))
	r.store64(off+offWorkerPID, uint64(pid))
}

// ReleaseWorker frees slot i and forgets what its worker observed, for the next one.
func (r *Region) ReleaseWorker(i int) {
	off := r.workerOff(i)
	r.store64(off+offWorkerPID, 0)
	r.store64(off+offWorkerObserved, 0)
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
