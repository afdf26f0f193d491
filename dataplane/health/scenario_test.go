package health

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The scenario scripts of testdata/*.txt drive a set of machines as the monitor does, and pin what
// they do, in the style of etcd-io/raft's interaction tests. Each block is a command, a line
// "----", and the expected output, up to a blank line:
//
//	config backends=3 consecutive=3 probe=http fall=2 rise=2 base=10s max=60s window=30s cap=50 panic=0 statuses=none
//	fail b=0 n=3 kind=connect      the shared counter of b0 grows by n, then b0 is told
//	ok b=0                         a request succeeded: the counter is zeroed, then b0 is told
//	probe b=0 pass|fail [kind=timeout]
//	trial b=0 pass|fail [kind=timeout]
//	admin b=0 active|draining|disabled
//	tick +5s                       the clock moves on, and every machine is ticked
//
// The output is every backend's machine and route after the command, the effects it asked for,
// and the set's view. go test ./dataplane/health -run Scenarios -rewrite rewrites the expected
// outputs: read every change before committing it.

var rewrite = flag.Bool("rewrite", false, "rewrite the expected outputs of testdata/*.txt")

// t0 is the clock of a script at its start.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type scenario struct {
	cfg      Config
	machines []*Machine
	active   []bool
	counter  []int  // the shared traffic failure counter of each backend (the region's word)
	kinds    []Kind // the last failure's kind
	now      time.Time
	effects  []string
}

func (s *scenario) members() []Member {
	ms := make([]Member, len(s.machines))
	for i, m := range s.machines {
		ms[i] = Member{Machine: m, Active: s.active[i]}
	}
	return ms
}

// step feeds ev to backend i, as the monitor does: the cap is read from the set first.
func (s *scenario) step(i int, ev Event) {
	ev.Now = s.now
	from := s.machines[i].Status
	eff := s.machines[i].Step(&s.cfg, ev, MayEject(&s.cfg, s.members()))
	if to := s.machines[i].Status; to != from {
		transitionsSeen[[2]Status{from, to}] = true
	}
	s.apply(i, eff)
}

// transitionsSeen are the changes of status that the scripts made, from and to.
var transitionsSeen = map[[2]Status]bool{}

// transitions are every change of status the machine makes (doc.go's diagram): the scripts must
// make each of them.
var transitions = [][2]Status{
	{Healthy, Ejected},         // failures, by requests or probes
	{SlowStarting, Ejected},    // failures during the ramp
	{Ejected, Recovering},      // the time is over; probes decide
	{Ejected, Trial},           // the time is over; no probes: a trial decides
	{Ejected, Healthy},         // the time is over, and the probes during it passed
	{Ejected, SlowStarting},    // the same, into a slow start
	{Recovering, Healthy},      // Rise probes passed
	{Recovering, SlowStarting}, // the same, into a slow start
	{Trial, Healthy},           // the trial passed
	{Trial, SlowStarting},      // the same, into a slow start
	{Trial, Ejected},           // the trial failed: out again, for longer
	{SlowStarting, Healthy},    // the ramp is over
	{Trial, Recovering},        // the set got probes: they decide instead of a trial
	{Recovering, Trial},        // the set lost its probes: a trial decides instead
}

func (s *scenario) apply(i int, eff Effect) {
	if eff&ResetFailures != 0 {
		s.counter[i] = 0
		s.effects = append(s.effects, fmt.Sprintf("reset-failures b%d", i))
	}
	if eff&OfferTrial != 0 {
		s.effects = append(s.effects, fmt.Sprintf("offer-trial b%d", i))
	}
}

func (s *scenario) rel(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return "+" + t.Sub(t0).String()
}

func (s *scenario) output() string {
	var b strings.Builder
	routes := make([]Route, len(s.machines))
	v := Routes(&s.cfg, s.members(), s.now, routes)
	for i, m := range s.machines {
		r := routes[i]
		route := "in"
		switch {
		case r.Trial:
			route = "trial"
		case r.Out:
			route = "out"
		}
		if r.Panic {
			route += "(panic)"
		}
		admin := ""
		if !s.active[i] {
			admin = " inactive"
		}
		fmt.Fprintf(&b, "b%d:%s %s ej=%d pf=%d pp=%d fails=%d since=%s until=%s route=%s w=%d",
			i, admin, m.Status, m.Ejections, m.ProbeFails, m.ProbePasses, m.Fails, s.rel(m.Since), s.rel(m.Until), route, r.WeightPermille)
		if m.Status == Ejected || m.Status == Recovering || m.Status == Trial {
			fmt.Fprintf(&b, " cause=%q", m.Cause.String())
		}
		if m.WantsOut(&s.cfg) {
			b.WriteString(" capped")
		}
		b.WriteString("\n")
	}
	if len(s.effects) > 0 {
		fmt.Fprintf(&b, "effects: %s\n", strings.Join(s.effects, "; "))
	}
	fmt.Fprintf(&b, "set: active=%d in=%d out=%d max_out=%d panic=%v\n", v.Active, v.In, v.Out, v.MaxOut, v.Panic)
	return b.String()
}

func kindOf(t *testing.T, name string) Kind {
	for k := KindNone; k < kindCount; k++ {
		if strings.ReplaceAll(k.String(), " ", "_") == name {
			return k
		}
	}
	switch name {
	case "connect":
		return KindConnect
	case "reset":
		return KindReset
	case "malformed":
		return KindMalformed
	case "status":
		return KindStatus
	}
	t.Fatalf("unknown kind %q", name)
	return 0
}

// run runs one command and returns its output.
func (s *scenario) run(t *testing.T, line string) string {
	fields := strings.Fields(line)
	args := map[string]string{}
	var flags []string
	for _, f := range fields[1:] {
		if k, v, ok := strings.Cut(f, "="); ok {
			args[k] = v
		} else {
			flags = append(flags, f)
		}
	}
	num := func(key string, def int) int {
		v, ok := args[key]
		if !ok {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("%q: %s=%q: %v", line, key, v, err)
		}
		return n
	}
	dur := func(key string) time.Duration {
		v, ok := args[key]
		if !ok {
			return 0
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%q: %s=%q: %v", line, key, v, err)
		}
		return d
	}
	s.effects = nil
	b := num("b", 0)
	pass := len(flags) > 0 && flags[0] == "pass"
	switch fields[0] {
	case "config":
		c := Config{PanicThreshold: num("panic", 0)}
		switch args["probe"] {
		case "http":
			c.Probe.Kind = ProbeHTTP
		case "tcp":
			c.Probe.Kind = ProbeTCP
		}
		c.Probe.Fall, c.Probe.Rise = num("fall", 0), num("rise", 0)
		c.Outlier.Disabled = args["outlier"] == "off"
		c.Outlier.ConsecutiveFailures = num("consecutive", 0)
		c.Outlier.BaseEjectionTime, c.Outlier.MaxEjectionTime = dur("base"), dur("max")
		c.Outlier.MaxEjectionPercent = num("cap", 0)
		c.SlowStart.Window, c.SlowStart.MinWeightPercent = dur("window"), num("min_weight", 0)
		s.cfg = c.WithDefaults()
		if _, ok := args["backends"]; ok {
			n := num("backends", 3)
			*s = scenario{cfg: s.cfg, now: t0, machines: make([]*Machine, n), active: make([]bool, n), counter: make([]int, n), kinds: make([]Kind, n)}
			for i := range s.machines {
				s.machines[i], s.active[i] = &Machine{}, true
			}
		}
	case "fail":
		s.counter[b] += num("n", 1)
		kind := KindConnect
		if k, ok := args["kind"]; ok {
			kind = kindOf(t, k)
		}
		s.step(b, Event{Kind: EvTraffic, Count: s.counter[b], Fail: kind, Status: num("status", 0)})
	case "ok":
		s.counter[b] = 0
		s.step(b, Event{Kind: EvTraffic, Count: 0})
	case "probe", "trial":
		kind := KindTimeout
		if k, ok := args["kind"]; ok {
			kind = kindOf(t, k)
		}
		ev := Event{Kind: EvProbe, OK: pass, Fail: kind, Status: num("status", 0)}
		if fields[0] == "trial" {
			ev.Kind = EvTrial
		}
		if pass {
			ev.Fail = KindNone
		}
		s.step(b, ev)
	case "admin":
		s.active[b] = flags[0] == "active"
	case "tick":
		if len(flags) > 0 {
			d, err := time.ParseDuration(strings.TrimPrefix(flags[0], "+"))
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			s.now = s.now.Add(d)
		}
		for i := range s.machines {
			s.step(i, Event{Kind: EvTick})
		}
	default:
		t.Fatalf("unknown command %q", line)
	}
	return s.output()
}

func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenario scripts: %v", err)
	}
	ran := 0
	defer func() {
		if ran < len(files) || t.Failed() {
			return // a -run that picked some scripts only
		}
		for _, tr := range transitions {
			if !transitionsSeen[tr] {
				t.Errorf("no script makes the transition %v -> %v", tr[0], tr[1])
			}
		}
		for tr := range transitionsSeen {
			if !slices.Contains(transitions, tr) {
				t.Errorf("a script makes the transition %v -> %v, which transitions does not list", tr[0], tr[1])
			}
		}
	}()
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			ran++
			f, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var out strings.Builder // the file as it should be, for -rewrite
			s := &scenario{now: t0}
			sc := bufio.NewScanner(f)
			lineNo := 0
			next := func() (string, bool) {
				if !sc.Scan() {
					return "", false
				}
				lineNo++
				return sc.Text(), true
			}
			for {
				line, ok := next()
				if !ok {
					break
				}
				if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
					out.WriteString(line + "\n")
					continue
				}
				cmdLine := lineNo
				if sep, ok := next(); !ok || sep != "----" {
					t.Fatalf("%s:%d: want ---- after %q", file, cmdLine, line)
				}
				var want strings.Builder
				for {
					l, ok := next()
					if !ok || l == "" {
						break
					}
					want.WriteString(l + "\n")
				}
				got := s.run(t, line)
				fmt.Fprintf(&out, "%s\n----\n%s\n", line, got)
				if !*rewrite && got != want.String() {
					t.Errorf("%s:%d: %s\ngot:\n%swant:\n%s", file, cmdLine, line, got, want.String())
				}
			}
			if err := sc.Err(); err != nil {
				t.Fatal(err)
			}
			if *rewrite {
				if err := os.WriteFile(file, []byte(strings.TrimSuffix(out.String(), "\n")+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
