package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/internal/testutil"
)

// The test of `xlb run --otlp-endpoint`: the supervisor pushes its per-backend totals as OTLP/gRPC
// metrics to a real OpenTelemetry Collector (.tools/bin/otelcol-xlbtest, built by tools/install.sh
// from tools/otelcol/builder-config.yaml), whose file exporter writes each export it receives as
// one line of OTLP JSON. The test reads that file as any consumer of the metrics would.

const (
	// otelRequests is how many requests TestOTelExport sends through xlb.
	otelRequests = 100
	// otelInterval is the --metrics-interval of TestOTelExport: how often workers report to the
	// supervisor, and the supervisor exports.
	otelInterval = 200 * time.Millisecond
	// otelExportTimeout bounds the wait for the exported totals to match what the backends saw.
	otelExportTimeout = 30 * time.Second
	// otelPollInterval is the period at which the exported file is read again.
	otelPollInterval = 50 * time.Millisecond
	// otelSumCumulative is AggregationTemporality CUMULATIVE of OTLP's metrics.proto.
	otelSumCumulative = 2
)

// otelcolPath is the collector as tools/install.sh builds it: .tools/bin of the module's root.
var otelcolPath = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("go env GOMOD: not in a module")
	}
	p := filepath.Join(filepath.Dir(mod), ".tools", "bin", "otelcol-xlbtest")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("the OpenTelemetry Collector of the tests: %w; run bash tools/install.sh", err)
	}
	return p, nil
})

// collector is a running otelcol-xlbtest that receives OTLP/gRPC on addr and writes what it
// receives to file. Cleanup stops it by its PID: SIGTERM, then SIGKILL when it has not exited
// within stopTimeout (which fails the test).
type collector struct {
	tb   testing.TB
	cmd  *exec.Cmd
	addr string
	// file is where the file exporter writes: one ExportMetricsServiceRequest in OTLP JSON a line.
	file string
	// stderr is the collector's log so far.
	stderr testutil.SyncBuffer
	// exited is closed once the process has exited and been waited for.
	exited chan struct{}
}

// collectorConfig is the collector's configuration: the OTLP receiver (gRPC only) on addr, the
// file exporter writing to file, one metrics pipeline between them, and no internal telemetry
// (which would listen on :8888).
func collectorConfig(addr, file string) string {
	return fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
exporters:
  file:
    path: %s
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [file]
`, addr, file)
}

// startCollector starts the collector on a free loopback port and waits until it listens there,
// trying another port (up to startAttempts) when another process took the one chosen first.
func startCollector(tb testing.TB) *collector {
	tb.Helper()
	path, err := otelcolPath()
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	for attempt := 1; ; attempt++ {
		c := &collector{tb: tb, addr: freeAddr(tb), file: filepath.Join(dir, "metrics.jsonl"), exited: make(chan struct{})}
		cfg := filepath.Join(dir, "otelcol.yaml")
		if err := os.WriteFile(cfg, []byte(collectorConfig(c.addr, c.file)), 0o644); err != nil {
			tb.Fatal(err)
		}
		c.cmd = exec.Command(path, "--config", cfg)
		c.cmd.Stdout = &c.stderr
		c.cmd.Stderr = &c.stderr
		if err := c.cmd.Start(); err != nil {
			tb.Fatalf("start %s: %v", path, err)
		}
		go func() {
			c.cmd.Wait() // the exit status is read from cmd.ProcessState
			close(c.exited)
		}()
		tb.Cleanup(c.stop)
		err := c.waitListening()
		if err == nil {
			return c
		}
		if attempt < startAttempts && errors.Is(err, errAddrInUse) {
			tb.Logf("attempt %d: %v: %v; trying another port", attempt, c, err)
			continue
		}
		tb.Fatalf("%v: %v\n--- its log:\n%s", c, err, tail(c.stderr.String()))
	}
}

func (c *collector) String() string {
	return fmt.Sprintf("otelcol-xlbtest on %s (pid %d)", c.addr, c.cmd.Process.Pid)
}

func (c *collector) hasExited() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// waitListening waits up to readyTimeout until the collector holds the listening socket of addr.
func (c *collector) waitListening() error {
	_, portStr, _ := net.SplitHostPort(c.addr)
	port, _ := strconv.Atoi(portStr)
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if c.hasExited() {
			if strings.Contains(c.stderr.String(), "address already in use") {
				return fmt.Errorf("%w: exited with %v", errAddrInUse, c.cmd.ProcessState)
			}
			return fmt.Errorf("exited with %v before listening", c.cmd.ProcessState)
		}
		if ok, err := listensOn(c.cmd.Process.Pid, port); err != nil {
			return err
		} else if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening after %v\n%s", readyTimeout, procDetail(c.cmd.Process.Pid))
		}
		<-tick.C
	}
}

func (c *collector) stop() {
	if !c.hasExited() {
		c.cmd.Process.Signal(syscall.SIGTERM) // an error means it exited meanwhile
		t := time.NewTimer(stopTimeout)
		select {
		case <-c.exited:
		case <-t.C:
			c.tb.Errorf("%v did not exit within %v of SIGTERM; sending SIGKILL", c, stopTimeout)
			c.cmd.Process.Kill()
			<-c.exited
		}
		t.Stop()
	}
	if c.tb.Failed() {
		c.tb.Logf("%v: %v\n--- its log:\n%s", c, c.cmd.ProcessState, tail(c.stderr.String()))
	}
}

// The OTLP JSON of the file exporter (protojson of ExportMetricsServiceRequest): 64-bit integers
// are strings, enums numbers.
type (
	otlpExport struct {
		ResourceMetrics []struct {
			ScopeMetrics []struct {
				Metrics []otlpMetric `json:"metrics"`
			} `json:"scopeMetrics"`
		} `json:"resourceMetrics"`
	}
	otlpMetric struct {
		Name string `json:"name"`
		Sum  *struct {
			DataPoints             []otlpPoint `json:"dataPoints"`
			AggregationTemporality int         `json:"aggregationTemporality"`
			IsMonotonic            bool        `json:"isMonotonic"`
		} `json:"sum"`
		Gauge *struct {
			DataPoints []otlpPoint `json:"dataPoints"`
		} `json:"gauge"`
	}
	otlpPoint struct {
		Attributes        []otlpKeyValue `json:"attributes"`
		StartTimeUnixNano string         `json:"startTimeUnixNano"`
		TimeUnixNano      string         `json:"timeUnixNano"`
		AsInt             *string        `json:"asInt"`
		AsDouble          *float64       `json:"asDouble"`
	}
	otlpKeyValue struct {
		Key   string `json:"key"`
		Value struct {
			StringValue *string `json:"stringValue"`
			IntValue    *string `json:"intValue"`
		} `json:"value"`
	}
)

// otelPoint is one exported data point, as the test compares it.
type otelPoint struct {
	metric string
	// kind is "sum" or "gauge"; temporality and monotonic are those of a sum.
	kind        string
	temporality int
	monotonic   bool
	// attrs are the point's attributes: a string as itself, an int as "int:N", anything else as "?".
	attrs map[string]string
	// value is the integer value; valueErr says why it is not one.
	value    int64
	valueErr error
	// start and time are the point's start and observation times, in ns since the epoch.
	start, time int64
	// line is the line of the file (from 1) the point is on.
	line int
}

func (p otelPoint) String() string {
	keys := make([]string, 0, len(p.attrs))
	for k := range p.attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", p.metric, p.kind)
	if p.kind == "sum" {
		fmt.Fprintf(&b, "(temporality %d, monotonic %v)", p.temporality, p.monotonic)
	}
	b.WriteString(" {")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%s", k, p.attrs[k])
	}
	fmt.Fprintf(&b, "} = %d", p.value)
	if p.valueErr != nil {
		fmt.Fprintf(&b, " (%v)", p.valueErr)
	}
	fmt.Fprintf(&b, " at line %d", p.line)
	return b.String()
}

// otelSeries names a series of the export: the metric, the backend id, and (of
// xlb.backend.responses) the status class.
type otelSeries struct{ metric, backend, class string }

// readExport parses the complete lines of the exported file and returns the last data point of every
// series of the xlb.backend.* metrics (the one observed last; on a tie, the one written last), and how
// many lines were parsed. A line that does not parse fails the test.
func readExport(tb testing.TB, file string) (map[otelSeries]otelPoint, int) {
	tb.Helper()
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0
	}
	if err != nil {
		tb.Fatal(err)
	}
	last := make(map[otelSeries]otelPoint)
	n := 0
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break // a line being written
		}
		raw := data[:i]
		data = data[i+1:]
		n++
		var exp otlpExport
		if err := json.Unmarshal(raw, &exp); err != nil {
			tb.Fatalf("%s: line %d: %v\n%s", file, n, err, raw)
		}
		for _, rm := range exp.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					if !strings.HasPrefix(m.Name, "xlb.backend.") {
						continue
					}
					for _, p := range otelPoints(m, n) {
						k := otelSeries{metric: p.metric, backend: p.attrs["xlb.backend.id"], class: p.attrs["http.response.status_class"]}
						if prev, ok := last[k]; !ok || p.time >= prev.time {
							last[k] = p
						}
					}
				}
			}
		}
	}
	return last, n
}

// otelPoints are the data points of m, on line of the file.
func otelPoints(m otlpMetric, line int) []otelPoint {
	var pts []otlpPoint
	proto := otelPoint{metric: m.Name, line: line}
	switch {
	case m.Sum != nil:
		proto.kind, proto.temporality, proto.monotonic = "sum", m.Sum.AggregationTemporality, m.Sum.IsMonotonic
		pts = m.Sum.DataPoints
	case m.Gauge != nil:
		proto.kind = "gauge"
		pts = m.Gauge.DataPoints
	default:
		proto.kind = "neither sum nor gauge"
		return []otelPoint{proto}
	}
	out := make([]otelPoint, 0, len(pts))
	for _, dp := range pts {
		p := proto
		p.attrs = make(map[string]string, len(dp.Attributes))
		for _, kv := range dp.Attributes {
			switch v := kv.Value; {
			case v.StringValue != nil:
				p.attrs[kv.Key] = *v.StringValue
			case v.IntValue != nil:
				p.attrs[kv.Key] = "int:" + *v.IntValue
			default:
				p.attrs[kv.Key] = "?"
			}
		}
		p.start, _ = strconv.ParseInt(dp.StartTimeUnixNano, 10, 64)
		p.time, _ = strconv.ParseInt(dp.TimeUnixNano, 10, 64)
		switch {
		case dp.AsInt != nil:
			p.value, p.valueErr = strconv.ParseInt(*dp.AsInt, 10, 64)
		case dp.AsDouble != nil:
			p.valueErr = fmt.Errorf("a double, %v, not an integer", *dp.AsDouble)
		default:
			p.valueErr = errors.New("no value")
		}
		out = append(out, p)
	}
	return out
}

// newStatusBackend is a counting backend that answers every request with status and name as the body.
func newStatusBackend(tb testing.TB, name string, status int) *countingBackend {
	tb.Helper()
	b := &countingBackend{name: name}
	s := newBackend(tb, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.n.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(status)
		io.WriteString(w, name)
	}))
	b.addr = addrOf(s)
	return b
}

// startOTelSupervisor is startSupervisor with --metrics-interval otelInterval and the OTLP export to
// the collector at otlp in plaintext.
func startOTelSupervisor(tb testing.TB, cfgPath, stateDir, otlp string, config func(addr string) string) (*supervisor, string) {
	tb.Helper()
	for attempt := 1; ; attempt++ {
		addr, prom := freeAddr(tb), freeAddr(tb)
		if err := os.WriteFile(cfgPath, []byte(config(addr)), 0o644); err != nil {
			tb.Fatal(err)
		}
		p, l := startLoggedProc(tb, "run", "--config", cfgPath, "--workers", strconv.Itoa(workersN),
			"--state-dir", stateDir, "--log-format", "json", "--metrics-interval", otelInterval.String(),
			"--otlp-endpoint", otlp, "--otlp-insecure", "--prometheus-listen", prom)
		err := waitListening(p, addr)
		if err == nil {
			return &supervisor{xlb: &xlb{proc: p, addr: addr}, log: l, cfgPath: cfgPath, stateDir: stateDir}, prom
		}
		if attempt < startAttempts && errors.Is(err, errAddrInUse) {
			tb.Logf("attempt %d: %v: %v; trying another port", attempt, p, err)
			continue
		}
		tb.Fatalf("%v: %v\n--- stderr:\n%s", p, err, tail(p.stderr.String()))
	}
}

// TestOTelExport: `xlb run --workers 2 --otlp-endpoint` pushes the supervisor's per-backend totals
// to a real collector. Of two backends, "ok" answering 200 and "bad" answering 500, the last
// exported point of each series must come to equal what the backend saw: xlb.backend.requests and
// xlb.backend.responses of the backend's class (cumulative monotonic sums), with every other class
// at 0; xlb.backend.local_errors at 0; xlb.backend.in_flight (a gauge or a non-monotonic sum) at 0.
// Every point carries xlb.backend_set, xlb.backend.id, server.address and server.port (an int) of
// its backend.
func TestOTelExport(t *testing.T) {
	t.Parallel()
	col := startCollector(t)
	ok, bad := newCountingBackend(t, "ok"), newStatusBackend(t, "bad", http.StatusInternalServerError)
	backends := []*countingBackend{ok, bad}
	wantClass := map[string]string{"ok": "2xx", "bad": "5xx"}
	s, prom := startOTelSupervisor(t, filepath.Join(t.TempDir(), "xlb.yaml"), t.TempDir(), col.addr, func(addr string) string {
		return configYAML(addr, []backendConf{{id: "ok", addr: ok.addr, weight: 1}, {id: "bad", addr: bad.addr, weight: 1}})
	})
	s.awaitReady(t)

	// A new connection per request, so that both workers serve some.
	c := newClient(t, s.addr, false)
	answered := make(map[string]int)
	for i := range otelRequests {
		r := c.get(fmt.Sprintf("/otel?i=%d", i))
		switch {
		case r.err != nil:
			t.Fatalf("request %d: %v", i, r.err)
		case r.backend == "ok" && r.status == http.StatusOK, r.backend == "bad" && r.status == http.StatusInternalServerError:
			answered[r.backend]++
		default:
			t.Fatalf("request %d: status %d, body %q; want 200 from ok or 500 from bad", i, r.status, r.backend)
		}
	}
	seen := map[string]int64{"ok": ok.n.Load(), "bad": bad.n.Load()}
	if seen["ok"]+seen["bad"] != otelRequests || seen["ok"] != int64(answered["ok"]) || seen["bad"] != int64(answered["bad"]) {
		t.Fatalf("the backends saw %v, the client got answers %v; want %d requests, each seen once", seen, answered, otelRequests)
	}
	if seen["ok"] == 0 || seen["bad"] == 0 {
		t.Fatalf("the backends saw %v; want both asked", seen)
	}

	// mismatches says how the last exported points differ from what is wanted; none when they match.
	mismatches := func(last map[otelSeries]otelPoint) []string {
		var diffs []string
		check := func(k otelSeries, want int64, kindOK func(otelPoint) bool, kindWant string) {
			p, found := last[k]
			switch {
			case !found:
				diffs = append(diffs, fmt.Sprintf("%s of backend %s %s: not exported", k.metric, k.backend, k.class))
			case !kindOK(p):
				diffs = append(diffs, fmt.Sprintf("%v: want %s", p, kindWant))
			case p.valueErr != nil || p.value != want:
				diffs = append(diffs, fmt.Sprintf("%v: want %d", p, want))
			}
		}
		cumulative := func(monotonic bool) func(otelPoint) bool {
			return func(p otelPoint) bool {
				return p.kind == "sum" && p.temporality == otelSumCumulative && p.monotonic == monotonic
			}
		}
		anySum := func(p otelPoint) bool { return p.kind == "sum" && p.temporality == otelSumCumulative }
		gaugeLike := func(p otelPoint) bool { return p.kind == "gauge" || p.kind == "sum" && !p.monotonic }
		for _, b := range backends {
			id := b.name
			check(otelSeries{"xlb.backend.requests", id, ""}, seen[id], cumulative(true), "a cumulative monotonic sum")
			check(otelSeries{"xlb.backend.responses", id, wantClass[id]}, seen[id], cumulative(true), "a cumulative monotonic sum")
			check(otelSeries{"xlb.backend.local_errors", id, ""}, 0, anySum, "a cumulative sum")
			check(otelSeries{"xlb.backend.in_flight", id, ""}, 0, gaugeLike, "a gauge or a non-monotonic sum")
			for _, class := range []string{"1xx", "2xx", "3xx", "4xx", "5xx"} {
				k := otelSeries{"xlb.backend.responses", id, class}
				if p, found := last[k]; class != wantClass[id] && found && (p.valueErr != nil || p.value != 0) {
					diffs = append(diffs, fmt.Sprintf("%v: want 0 (the backend answers only %s)", p, wantClass[id]))
				}
			}
		}
		return diffs
	}

	deadline := time.Now().Add(otelExportTimeout)
	tick := time.NewTicker(otelPollInterval)
	defer tick.Stop()
	var last map[otelSeries]otelPoint
	var lines int
	for {
		last, lines = readExport(t, col.file)
		miss := mismatches(last)
		if len(miss) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v and %d exports, the backends saw %v; the last exported points differ:\n  %s",
				otelExportTimeout, lines, seen, strings.Join(miss, "\n  "))
		}
		if s.hasExited() {
			t.Fatalf("%v exited (%v); the last exported points differ:\n  %s", s, s.cmd.ProcessState, strings.Join(miss, "\n  "))
		}
		<-tick.C
	}
	t.Logf("after %d exports, the backends saw %v, as exported", lines, seen)

	// Every point of a backend names it: its set, id, host and port.
	for k, p := range last {
		b := slices.IndexFunc(backends, func(b *countingBackend) bool { return b.name == k.backend })
		if b < 0 {
			t.Errorf("%v: a backend id not in the configuration", p)
			continue
		}
		host, port, _ := net.SplitHostPort(backends[b].addr)
		want := map[string]string{"xlb.backend_set": "web", "xlb.backend.id": k.backend, "server.address": host, "server.port": "int:" + port}
		for key, v := range want {
			if p.attrs[key] != v {
				t.Errorf("%v: %s is %q, want %q", p, key, p.attrs[key], v)
			}
		}
		if p.kind == "sum" && (p.start == 0 || p.start > p.time) {
			t.Errorf("%v: start time %d, observed at %d; want a start at or before the observation", p, p.start, p.time)
		}
	}

	// The same totals, scraped as Prometheus would.
	scrape := curl(t, "http://"+prom+"/metrics")
	for _, b := range backends {
		line := regexp.MustCompile(`(?m)^xlb_backend_requests_total\{[^}]*xlb_backend_id="` + b.name + `"[^}]*\} (\d+)$`).FindStringSubmatch(scrape)
		if line == nil || line[1] != strconv.FormatInt(seen[b.name], 10) {
			t.Errorf("Prometheus scrape: xlb_backend_requests_total of %s is %v, want %d", b.name, line, seen[b.name])
		}
	}

	// The request durations, produced from the workers' histograms: one observation per request.
	counts := lastDurationCounts(t, col.file)
	for _, b := range backends {
		if counts[b.name] != seen[b.name] {
			t.Errorf("http.client.request.duration of backend %s: count %d, want the %d requests it saw (all: %v)", b.name, counts[b.name], seen[b.name], counts)
		}
	}
}

// lastDurationCounts is, by backend id, the count of the last exported point of
// http.client.request.duration, a cumulative histogram.
func lastDurationCounts(tb testing.TB, file string) map[string]int64 {
	tb.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]int64{}
	for _, line := range bytes.Split(data, []byte("\n")) {
		var exp struct {
			ResourceMetrics []struct {
				ScopeMetrics []struct {
					Metrics []struct {
						Name      string `json:"name"`
						Histogram *struct {
							DataPoints []struct {
								Attributes []otlpKeyValue `json:"attributes"`
								Count      string         `json:"count"`
							} `json:"dataPoints"`
							AggregationTemporality int `json:"aggregationTemporality"`
						} `json:"histogram"`
					} `json:"metrics"`
				} `json:"scopeMetrics"`
			} `json:"resourceMetrics"`
		}
		if len(line) == 0 || json.Unmarshal(line, &exp) != nil {
			continue
		}
		for _, rm := range exp.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					if m.Name != "http.client.request.duration" || m.Histogram == nil || m.Histogram.AggregationTemporality != otelSumCumulative {
						continue
					}
					for _, dp := range m.Histogram.DataPoints {
						for _, kv := range dp.Attributes {
							if kv.Key == "xlb.backend.id" && kv.Value.StringValue != nil {
								out[*kv.Value.StringValue], _ = strconv.ParseInt(dp.Count, 10, 64)
							}
						}
					}
				}
			}
		}
	}
	return out
}

// TestOTelControlPlane: the control plane exports its own metrics: the pushes to a data plane,
// their ACKs, and the data planes connected.
func TestOTelControlPlane(t *testing.T) {
	t.Parallel()
	col := startCollector(t)
	cp := startControlPlane(t, t.TempDir(), nil, "--load-interval", "100ms", "--otlp-endpoint", col.addr, "--otlp-insecure")
	a := newCountingBackend(t, "A")
	startDataPlane(t, cp, "n1", "web")
	v := cp.put(t, setJSON{Name: "web", Backends: []backendJSON{backendAt(t, "a", a.addr, 1)}})
	cp.awaitApplied(t, "n1", map[string]string{"web": v})

	want := map[string]func(int64) bool{
		"xlb.controlplane.pushes":                func(n int64) bool { return n >= 1 },
		"xlb.controlplane.acks":                  func(n int64) bool { return n >= 1 },
		"xlb.controlplane.data_planes.connected": func(n int64) bool { return n == 1 },
	}
	deadline := time.Now().Add(otelExportTimeout)
	for {
		got := lastValues(t, col.file)
		missing := []string{}
		for name, ok := range want {
			if n, found := got[name]; !found || !ok(n) {
				missing = append(missing, fmt.Sprintf("%s=%d (exported: %v)", name, n, found))
			}
		}
		if len(missing) == 0 {
			t.Logf("exported: %v", got)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", otelExportTimeout, missing)
		}
		time.Sleep(otelPollInterval)
	}
}

// lastValues is, by metric name, the value of the last exported point of every integer sum or gauge
// of the file.
func lastValues(tb testing.TB, file string) map[string]int64 {
	tb.Helper()
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]int64{}
	for _, line := range bytes.Split(data, []byte("\n")) {
		var exp otlpExport
		if len(line) == 0 || json.Unmarshal(line, &exp) != nil {
			continue
		}
		for _, rm := range exp.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					var pts []otlpPoint
					switch {
					case m.Sum != nil:
						pts = m.Sum.DataPoints
					case m.Gauge != nil:
						pts = m.Gauge.DataPoints
					}
					for _, p := range pts {
						if p.AsInt != nil {
							out[m.Name], _ = strconv.ParseInt(*p.AsInt, 10, 64)
						}
					}
				}
			}
		}
	}
	return out
}
