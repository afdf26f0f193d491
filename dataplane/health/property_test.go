package health

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// The properties of a set of machines under any sequence of events, checked after every step:
//
//   - a backend that is not active (draining, disabled) is never routed: out, no trial, in panic too;
//   - no ejection takes the set's out count past its cap;
//   - an ejection never ends before its time;
//   - readmission zeroes the counters;
//   - in panic every active backend is routed, and out of panic only those in (and trials);
//   - the region words give back the machine (to the millisecond) and its route.
//
// TestSetProperties runs random sequences; FuzzSet lets the fuzzer choose them (its seeds are under
// testdata/fuzz/FuzzSet).

// propertyRun drives a set from the bytes of data, reporting the first broken property.
func propertyRun(data []byte) error {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	n := 1 + int(next()%6)
	c := Config{PanicThreshold: int(next() % 101)}
	if next()%2 == 0 {
		c.Probe = Probe{Kind: ProbeHTTP, Fall: 1 + int(next()%4), Rise: 1 + int(next()%4)}
	}
	c.Outlier = Outlier{Disabled: next()%5 == 0, ConsecutiveFailures: 1 + int(next()%6),
		BaseEjectionTime: time.Duration(1+next()%10) * time.Second, MaxEjectionPercent: int(next() % 101)}
	if next()%2 == 0 {
		c.SlowStart = SlowStart{Window: time.Duration(1+next()%20) * time.Second}
	}
	c = c.WithDefaults()
	ms := make([]*Machine, n)
	members := make([]Member, n)
	counter := make([]int, n)
	for i := range ms {
		ms[i] = &Machine{}
		members[i] = Member{Machine: ms[i], Active: true}
	}
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	routes := make([]Route, n)
	for step := 0; len(data) > 0; step++ {
		op, i := next(), int(next())%n
		m := ms[i]
		before := *m
		var ev Event
		switch op % 8 {
		case 0, 1:
			counter[i] += 1 + int(next()%3)
			ev = Event{Kind: EvTraffic, Count: counter[i], Fail: Kind(1 + next()%5)}
		case 2:
			counter[i] = 0
			ev = Event{Kind: EvTraffic}
		case 3:
			ev = Event{Kind: EvProbe, OK: next()%2 == 0, Fail: KindTimeout}
		case 4:
			ev = Event{Kind: EvTrial, OK: next()%2 == 0, Fail: KindTimeout}
		case 5:
			members[i].Active = !members[i].Active
		default:
			now = now.Add(time.Duration(next()) * 100 * time.Millisecond)
			ev = Event{Kind: EvTick}
		}
		ev.Now = now
		outBefore := View(&c, members).Out
		if op%8 != 5 {
			eff := m.Step(&c, ev, MayEject(&c, members))
			if eff&ResetFailures != 0 {
				counter[i] = 0
			}
		}
		v := Routes(&c, members, now, routes)
		// What the region holds differs only for backends that are not active, which workers leave
		// out by their state.
		regionRoutes := make([]Route, len(routes))
		if rv := RegionRoutes(&c, members, now, regionRoutes); rv != v {
			return fmt.Errorf("step %d: RegionRoutes' view %+v, Routes' %+v", step, rv, v)
		}
		for j := range routes {
			if members[j].Active && regionRoutes[j] != routes[j] {
				return fmt.Errorf("step %d: b%d is active: region route %+v, route %+v", step, j, regionRoutes[j], routes[j])
			}
		}
		where := fmt.Sprintf("step %d (op %d on b%d, %+v): %v -> %v", step, op%8, i, ev, before.Status, m.Status)
		if before.Status.In() && !m.Status.In() && v.Out > v.MaxOut && v.Out > outBefore {
			return fmt.Errorf("%s: an ejection made %d of %d active backends out, past the cap of %d", where, v.Out, v.Active, v.MaxOut)
		}
		if before.Status == Ejected && now.Before(before.Until) && m.Status != Ejected {
			return fmt.Errorf("%s: left an ejection before its end %v", where, before.Until)
		}
		if !before.Status.In() && m.Status.In() && (m.Fails != 0 || m.ProbeFails != 0 || m.ProbePasses != 0) {
			return fmt.Errorf("%s: readmitted with counters %+v", where, m)
		}
		for j, r := range routes {
			switch {
			case !members[j].Active && (!r.Out || r.Trial):
				return fmt.Errorf("%s: b%d is not active but routed: %+v", where, j, r)
			case members[j].Active && v.Panic && r.Out:
				return fmt.Errorf("%s: b%d is active in panic but out", where, j)
			case members[j].Active && !v.Panic && r.Out == ms[j].Status.In():
				return fmt.Errorf("%s: b%d is %v but routed %+v", where, j, ms[j].Status, r)
			case r.WeightPermille < 1 || r.WeightPermille > 1000:
				return fmt.Errorf("%s: b%d weight %d‰", where, j, r.WeightPermille)
			}
			w0, w3, w4 := Encode(ms[j], r)
			dm, dr, err := Decode(w0, w3, w4)
			if err != nil {
				return fmt.Errorf("%s: b%d: %v", where, j, err)
			}
			want := *ms[j]
			want.Fails, want.FailKind, want.FailStatus = 0, KindNone, 0 // not in the words
			want.Since, want.Until = truncMs(want.Since), truncMs(want.Until)
			if dm != want || dr != r {
				return fmt.Errorf("%s: b%d: words give %+v %+v, want %+v %+v", where, j, dm, dr, want, r)
			}
		}
	}
	return nil
}

func truncMs(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return time.UnixMilli(t.UnixMilli())
}

func TestSetProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for trial := range 3000 {
		data := make([]byte, 20+r.IntN(400))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		if err := propertyRun(data); err != nil {
			t.Fatalf("trial %d (input %x): %v", trial, data, err)
		}
	}
}

func FuzzSet(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := propertyRun(data); err != nil {
			t.Fatal(err)
		}
	})
}

// TestWords pins the encoding of the words that workers read and write.
func TestWords(t *testing.T) {
	if r := RouteOf(0); r.Out || r.Trial || r.Panic || r.WeightPermille != 1000 {
		t.Errorf("RouteOf(0) = %+v; a zeroed slot must be in at full weight", r)
	}
	if m, r, err := Decode(0, 0, 0); err != nil || m != (Machine{}) || r.Out {
		t.Errorf("Decode(0, 0, 0) = %+v, %+v, %v; want a healthy machine", m, r, err)
	}
	w := uint64(0)
	for i := 1; i <= 3; i++ {
		w = AddFailure(w, KindStatus, 503)
		if n, k, s := FailuresOf(w); n != i || k != KindStatus || s != 503 {
			t.Fatalf("after %d failures: %d, %v, %d", i, n, k, s)
		}
	}
	tw := TrialWord(TrialFailed, 1<<24+5, KindReset, 0)
	if s, seq, k, _ := TrialOf(tw); s != TrialFailed || seq != 5 || k != KindReset {
		t.Errorf("TrialOf(TrialWord(failed, 2^24+5, reset)) = %v, %d, %v", s, seq, k)
	}
	for _, bad := range []uint64{uint64(statusCount), 1 << 45, 1001 << 48, uint64(kindCount) << 32} {
		if _, _, err := Decode(bad, 0, 0); err == nil {
			t.Errorf("Decode(%#x) accepted a word no Encode makes", bad)
		}
	}
}
