package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
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

// The tests of `xlb controlplane` and `xlb dataplane`: a control plane that keeps backend sets in
// its data directory and streams them to data planes, driven here as an operator would, with
// grpcurl; and data planes (a supervisor and its workers, as xlb run) that serve its sets. They
// read both processes' JSON logs (see procLog) and the control plane's ListDataPlanes, which says
// what each data plane acknowledged.

const (
	// dpWorkers is the --workers of every data plane here.
	dpWorkers = 1
	// grpcurlTimeout bounds one grpcurl invocation.
	grpcurlTimeout = 30 * time.Second
	// rpcPollInterval is the period of the waits that poll the control plane with grpcurl: each poll
	// starts a process.
	rpcPollInterval = 50 * time.Millisecond
	// applyTimeout bounds the wait for a data plane to acknowledge a put set.
	applyTimeout = 30 * time.Second
	// reconnectTimeout bounds the wait for a data plane to reconnect to a restarted control plane:
	// both its stream retries and gRPC's connection attempts back off, the latter past 10s.
	reconnectTimeout = 90 * time.Second
	// outageRequests is how many requests must succeed while the control plane is down.
	outageRequests = 300
	// killLoadClients is the number of keep-alive load clients of TestControlPlaneKill9.
	killLoadClients = 4
	// checkRequests is how many requests check where a data plane sends traffic.
	checkRequests = 10
)

// Services the control plane must list (reflection also lists itself, under grpc.reflection.).
var cpServices = []string{"xlb.admin.v1.AdminService", "xlb.discovery.v1.DiscoveryService", "xlb.load.v1.LoadReportingService", "grpc.health.v1.Health"}

// grpcurlPath is grpcurl as tools/install.sh installs it: .tools/bin of the module's root.
var grpcurlPath = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("go env GOMOD: not in a module")
	}
	p := filepath.Join(filepath.Dir(mod), ".tools", "bin", "grpcurl")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("grpcurl: %w; run bash tools/install.sh", err)
	}
	return p, nil
})

// rpcResult is what one grpcurl invocation did.
type rpcResult struct {
	args           []string
	stdout, stderr string
	// err is grpcurl's exit: nil when the call succeeded.
	err error
}

var (
	grpcCodeRE = regexp.MustCompile(`(?m)^\s*Code: (\w+)\s*$`)
	grpcMsgRE  = regexp.MustCompile(`(?m)^\s*Message: (.*)$`)
)

// code is the name of the status of the call: "OK" after a success, the code grpcurl printed for
// a failed call ("Unauthenticated"), or "" when it printed none (it could not connect, say).
func (r rpcResult) code() string {
	if r.err == nil {
		return "OK"
	}
	if m := grpcCodeRE.FindStringSubmatch(r.stderr); m != nil {
		return m[1]
	}
	return ""
}

// message is the status message grpcurl printed for a failed call.
func (r rpcResult) message() string {
	if m := grpcMsgRE.FindStringSubmatch(r.stderr); m != nil {
		return m[1]
	}
	return ""
}

func (r rpcResult) String() string {
	return fmt.Sprintf("grpcurl %s: %v\n--- stdout:\n%s--- stderr:\n%s", strings.Join(r.args, " "), r.err, r.stdout, r.stderr)
}

// runGrpcurl runs grpcurl with args.
func runGrpcurl(tb testing.TB, args ...string) rpcResult {
	tb.Helper()
	path, err := grpcurlPath()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), grpcurlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return rpcResult{args: args, stdout: o.String(), stderr: e.String(), err: err}
}

// The messages of the API as grpcurl prints them (protojson) and reads them.
type (
	backendJSON struct {
		ID      string   `json:"id"`
		Address string   `json:"address"`
		Port    int      `json:"port"`
		Weight  int      `json:"weight,omitempty"`
		TLS     *tlsJSON `json:"tls,omitempty"`
	}
	tlsJSON struct {
		ServerName string `json:"serverName"`
		CAFile     string `json:"caFile,omitempty"`
	}
	setJSON struct {
		Name             string         `json:"name"`
		Backends         []backendJSON  `json:"backends"`
		OutlierDetection map[string]any `json:"outlierDetection,omitempty"`
	}
	versionedSetJSON struct {
		BackendSet setJSON `json:"backendSet"`
		Version    string  `json:"version"`
	}
	dataPlaneJSON struct {
		NodeID    string `json:"nodeId"`
		Connected bool   `json:"connected"`
		// ConnectedSince is when its stream opened (RFC 3339), while Connected.
		ConnectedSince string          `json:"connectedSince"`
		Generation     string          `json:"generation"` // a uint64: a string in protojson
		Sets           []setStatusJSON `json:"sets"`
		// BackendHealth is the data plane's view of each backend's health.
		BackendHealth []struct {
			BackendSet string `json:"backendSet"`
			BackendID  string `json:"backendId"`
			healthJSON
		} `json:"backendHealth"`
	}
	setStatusJSON struct {
		Name           string    `json:"name"`
		AppliedVersion string    `json:"appliedVersion"`
		LastNack       *nackJSON `json:"lastNack"`
	}
	nackJSON struct {
		Version string `json:"version"`
		Message string `json:"message"`
	}
)

// backendAt is a backend of id at addr (host:port) with weight.
func backendAt(tb testing.TB, id, addr string, weight int) backendJSON {
	tb.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		tb.Fatal(err)
	}
	return backendJSON{ID: id, Address: host, Port: p, Weight: weight}
}

// set is the status of the set name on d; the zero value when d has none.
func (d dataPlaneJSON) set(name string) setStatusJSON {
	for _, s := range d.Sets {
		if s.Name == name {
			return s
		}
	}
	return setStatusJSON{}
}

// applies tells whether d is connected and serves every set of want at its version.
func (d dataPlaneJSON) applies(want map[string]string) bool {
	if !d.Connected {
		return false
	}
	for name, v := range want {
		if d.set(name).AppliedVersion != v {
			return false
		}
	}
	return true
}

func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// controlPlane is an `xlb controlplane` of a test.
type controlPlane struct {
	*proc
	log           *procLog
	addr, dataDir string
	// listening is its "control plane listening" line.
	listening logLine
	// auth are the grpcurl flags of its admin calls: -plaintext, or the CA and a credential.
	auth []string
}

// startControlPlane starts `xlb controlplane` on a free loopback port with dataDir and the extra
// flags, and waits for its "control plane listening" line. auth are the grpcurl flags of its
// admin calls (nil means -plaintext). As startXLB, it tries another port when the one chosen was
// taken meanwhile.
func startControlPlane(tb testing.TB, dataDir string, auth []string, flags ...string) *controlPlane {
	tb.Helper()
	return startControlPlaneEnv(tb, nil, dataDir, auth, flags...)
}

// startControlPlaneEnv is startControlPlane with env (NAME=value, ...) added to its environment.
func startControlPlaneEnv(tb testing.TB, env []string, dataDir string, auth []string, flags ...string) *controlPlane {
	tb.Helper()
	for attempt := 1; ; attempt++ {
		cp, err := tryControlPlane(tb, freeAddr(tb), env, dataDir, auth, flags...)
		if err == nil {
			return cp
		}
		if attempt < startAttempts && errors.Is(err, errAddrInUse) {
			tb.Logf("attempt %d: %v; trying another port", attempt, err)
			continue
		}
		tb.Fatal(err)
	}
}

// restartControlPlane starts a control plane again on the address and data directory of cp.
func restartControlPlane(tb testing.TB, cp *controlPlane, flags ...string) *controlPlane {
	tb.Helper()
	cp2, err := tryControlPlane(tb, cp.addr, nil, cp.dataDir, cp.auth, flags...)
	if err != nil {
		tb.Fatal(err)
	}
	return cp2
}

func tryControlPlane(tb testing.TB, addr string, env []string, dataDir string, auth []string, flags ...string) (*controlPlane, error) {
	tb.Helper()
	args := []string{"controlplane", "--listen", addr, "--log-format", "json"}
	if dataDir != "" { // "" for --store etcd, which flags then give
		args = append(args, "--data-dir", dataDir)
	}
	args = append(args, flags...)
	p, l := startLoggedProcEnv(tb, env, args...)
	if auth == nil {
		auth = []string{"-plaintext"}
	}
	cp := &controlPlane{proc: p, log: l, addr: addr, dataDir: dataDir, auth: auth}
	ln, err := l.await(0, readyTimeout, says("control plane listening", nil))
	switch {
	case err != nil && p.hasExited() && strings.Contains(p.stderr.String(), "address already in use"):
		return nil, fmt.Errorf("%v: %w", p, errAddrInUse)
	case err != nil:
		return nil, fmt.Errorf(`%v: waiting for "control plane listening": %v`+"\n--- stderr:\n%s", p, err, tail(p.stderr.String()))
	case ln.str("address") != addr:
		return nil, fmt.Errorf("%v: %s; want the address %s", p, ln, addr)
	}
	cp.listening = ln
	return cp, nil
}

// call invokes method of the AdminService with the JSON request req ("" for an empty one), with
// cp.auth and then the extra grpcurl flags.
func (cp *controlPlane) call(tb testing.TB, method, req string, extra ...string) rpcResult {
	tb.Helper()
	args := append(slices.Clone(cp.auth), extra...)
	if req != "" {
		args = append(args, "-d", req)
	}
	return runGrpcurl(tb, append(args, cp.addr, "xlb.admin.v1.AdminService/"+method)...)
}

// mustCall is call that fails the test unless the call succeeds, and decodes its response into
// resp when resp is not nil.
func (cp *controlPlane) mustCall(tb testing.TB, method, req string, resp any) {
	tb.Helper()
	r := cp.call(tb, method, req)
	if r.err != nil {
		tb.Fatalf("%s: %v", method, r)
	}
	if resp != nil {
		if err := json.Unmarshal([]byte(r.stdout), resp); err != nil {
			tb.Fatalf("%s: the response: %v\n%v", method, err, r)
		}
	}
}

// put puts set and returns the version the control plane acknowledged.
func (cp *controlPlane) put(tb testing.TB, set setJSON) string {
	tb.Helper()
	var resp struct {
		Version string `json:"version"`
	}
	cp.mustCall(tb, "PutBackendSet", mustJSON(tb, map[string]any{"backend_set": set}), &resp)
	if resp.Version == "" {
		tb.Fatalf("PutBackendSet %s: no version in the response", set.Name)
	}
	return resp.Version
}

// sets is ListBackendSets: every set's version by name.
func (cp *controlPlane) sets(tb testing.TB) map[string]versionedSetJSON {
	tb.Helper()
	var resp struct {
		BackendSets []versionedSetJSON `json:"backendSets"`
	}
	cp.mustCall(tb, "ListBackendSets", "", &resp)
	out := make(map[string]versionedSetJSON)
	for _, vs := range resp.BackendSets {
		out[vs.BackendSet.Name] = vs
	}
	return out
}

// dataPlanes is ListDataPlanes, by node id.
func (cp *controlPlane) dataPlanes(tb testing.TB) map[string]dataPlaneJSON {
	tb.Helper()
	var resp struct {
		DataPlanes []dataPlaneJSON `json:"dataPlanes"`
	}
	cp.mustCall(tb, "ListDataPlanes", "", &resp)
	out := make(map[string]dataPlaneJSON)
	for _, d := range resp.DataPlanes {
		out[d.NodeID] = d
	}
	return out
}

// awaitDataPlane polls ListDataPlanes for up to timeout until the data plane node satisfies cond,
// and returns what the control plane said of it then; what names the condition in a failure.
func (cp *controlPlane) awaitDataPlane(tb testing.TB, node string, timeout time.Duration, what string, cond func(dataPlaneJSON) bool) dataPlaneJSON {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(rpcPollInterval)
	defer tick.Stop()
	for {
		d, ok := cp.dataPlanes(tb)[node]
		if ok && cond(d) {
			return d
		}
		if time.Now().After(deadline) {
			tb.Fatalf("data plane %s: not %s within %v; ListDataPlanes says %+v (listed: %v)", node, what, timeout, d, ok)
		}
		<-tick.C
	}
}

// awaitApplied waits until data plane node acknowledged every set of want at its version.
func (cp *controlPlane) awaitApplied(tb testing.TB, node string, want map[string]string) dataPlaneJSON {
	tb.Helper()
	return cp.awaitDataPlane(tb, node, applyTimeout, fmt.Sprintf("connected and serving %v", want),
		func(d dataPlaneJSON) bool { return d.applies(want) })
}

// dataPlane is an `xlb dataplane` of a test.
type dataPlane struct {
	*xlb
	log      *procLog
	node     string
	stateDir string
}

// startDataPlane starts `xlb dataplane` of cp as node, with one worker, serving set on a free
// loopback port, with the extra flags; it waits until the supervisor listens. As startXLB, it
// tries another port when the one chosen was taken meanwhile.
func startDataPlane(tb testing.TB, cp *controlPlane, node, set string, flags ...string) *dataPlane {
	tb.Helper()
	stateDir := tb.TempDir()
	for attempt := 1; ; attempt++ {
		addr := freeAddr(tb)
		args := append([]string{"dataplane", "--control-plane", cp.addr, "--node-id", node, "--listen", addr,
			"--backend-set", set, "--workers", strconv.Itoa(dpWorkers), "--state-dir", stateDir, "--log-format", "json"},
			flags...)
		p, l := startLoggedProc(tb, args...)
		err := waitListening(p, addr)
		if err == nil {
			return &dataPlane{xlb: &xlb{proc: p, addr: addr}, log: l, node: node, stateDir: stateDir}
		}
		if attempt < startAttempts && errors.Is(err, errAddrInUse) {
			tb.Logf("attempt %d: %v: %v; trying another port", attempt, p, err)
			continue
		}
		tb.Fatalf("%v: %v\n--- stderr:\n%s", p, err, tail(p.stderr.String()))
	}
}

// awaitLine waits for the first line of l, the log of p, at or after offset from that match
// accepts; what names the line in a failure.
func awaitLine(tb testing.TB, p *proc, l *procLog, from int, what string, match func(logLine) bool) logLine {
	tb.Helper()
	ln, err := l.await(from, logWaitTimeout, match)
	if err != nil {
		tb.Fatalf("%v: waiting for %s: %v\n--- stderr:\n%s", p, what, err, tail(p.stderr.String()))
	}
	return ln
}

// linesMatching are the complete lines of l at or after offset from that match accepts.
func linesMatching(l *procLog, from int, match func(logLine) bool) []logLine {
	lines, _ := l.linesFrom(from)
	var out []logLine
	for _, ln := range lines {
		if match(ln) {
			out = append(out, ln)
		}
	}
	return out
}

// logEnd is the offset just past the last complete line of l so far.
func logEnd(l *procLog) int {
	_, end := l.linesFrom(0)
	return end
}

// traffic makes n requests of path to addr, each on a new connection, and counts them by backend;
// any failure fails the test.
func traffic(tb testing.TB, addr, path string, n int) map[string]int {
	tb.Helper()
	return getAll(tb, []*client{newClient(tb, addr, false)}, path, n)
}

// TestControlPlaneGrpcurl: the control plane as an operator drives it with grpcurl. Reflection
// lists its services; a put of set web reaches the data plane, which sends traffic to web's backend
// once it acknowledged that version (ListDataPlanes shows it applied), and to the new backend after
// a second put; Get, List and Delete of sets work; an invalid put is INVALID_ARGUMENT naming the
// field; a compare-and-set put with a stale version is FAILED_PRECONDITION, with the current one it
// applies.
func TestControlPlaneGrpcurl(t *testing.T) {
	t.Parallel()
	a, b := newCountingBackend(t, "A"), newCountingBackend(t, "B")
	cp := startControlPlane(t, t.TempDir(), nil)
	dp := startDataPlane(t, cp, "n1", "web")

	list := runGrpcurl(t, "-plaintext", cp.addr, "list")
	if list.err != nil {
		t.Fatalf("list: %v", list)
	}
	listed := strings.Fields(list.stdout)
	for _, svc := range cpServices {
		if !slices.Contains(listed, svc) {
			t.Errorf("grpcurl list: %q, want %s among them", listed, svc)
		}
	}
	if !slices.ContainsFunc(listed, func(s string) bool { return strings.HasPrefix(s, "grpc.reflection.") }) {
		t.Errorf("grpcurl list: %q, want the reflection service among them", listed)
	}

	vA := cp.put(t, setJSON{Name: "web", Backends: []backendJSON{backendAt(t, "a", a.addr, 1)}})
	cp.awaitApplied(t, "n1", map[string]string{"web": vA})
	if by := traffic(t, dp.addr, "/a", checkRequests); by["A"] != checkRequests {
		t.Errorf("with web at %s (backend A): requests by backend %v, want all %d to A", vA, by, checkRequests)
	}

	webB := setJSON{Name: "web", Backends: []backendJSON{backendAt(t, "b", b.addr, 1)}}
	vB := cp.put(t, webB)
	if vB == vA {
		t.Fatalf("web with backend B has version %s, the same as with backend A", vB)
	}
	d := cp.awaitApplied(t, "n1", map[string]string{"web": vB})
	if by := traffic(t, dp.addr, "/b", checkRequests); by["B"] != checkRequests {
		t.Errorf("with web at %s (backend B): requests by backend %v, want all %d to B", vB, by, checkRequests)
	}
	if !d.Connected || d.set("web").AppliedVersion != vB || d.set("web").LastNack != nil {
		t.Errorf("ListDataPlanes: n1 %+v; want connected, web applied at %s, no NACK", d, vB)
	}
	if v := cp.put(t, webB); v != vB {
		t.Errorf("the same put again: version %s, want %s unchanged", v, vB)
	}

	// Get, List, Delete.
	var got struct {
		BackendSet versionedSetJSON `json:"backendSet"`
	}
	cp.mustCall(t, "GetBackendSet", `{"name":"web"}`, &got)
	if got.BackendSet.Version != vB || got.BackendSet.BackendSet.Name != "web" ||
		!slices.Equal(got.BackendSet.BackendSet.Backends, webB.Backends) {
		t.Errorf("GetBackendSet web: %+v; want version %s and backends %+v", got.BackendSet, vB, webB.Backends)
	}
	vOther := cp.put(t, setJSON{Name: "other", Backends: []backendJSON{backendAt(t, "a", a.addr, 3)}})
	sets := cp.sets(t)
	if len(sets) != 2 || sets["web"].Version != vB || sets["other"].Version != vOther {
		t.Errorf("ListBackendSets: %+v; want web at %s and other at %s", sets, vB, vOther)
	}
	cp.mustCall(t, "DeleteBackendSet", `{"name":"other"}`, nil)
	if r := cp.call(t, "GetBackendSet", `{"name":"other"}`); r.code() != "NotFound" {
		t.Errorf("GetBackendSet of a deleted set: %s, want NotFound\n%v", r.code(), r)
	}
	if r := cp.call(t, "DeleteBackendSet", `{"name":"other"}`); r.code() != "NotFound" {
		t.Errorf("DeleteBackendSet of a deleted set: %s, want NotFound\n%v", r.code(), r)
	}
	if sets := cp.sets(t); len(sets) != 1 || sets["web"].Version != vB {
		t.Errorf("ListBackendSets after the delete: %+v; want only web at %s", sets, vB)
	}

	// An invalid put.
	bad := backendAt(t, "a", a.addr, 1)
	bad.Port = 0
	r := cp.call(t, "PutBackendSet", mustJSON(t, map[string]any{"backend_set": setJSON{Name: "web", Backends: []backendJSON{bad}}}))
	if r.code() != "InvalidArgument" || !strings.Contains(r.message(), "backend_set.backends[0].port") {
		t.Errorf("a put with port 0: %s %q; want InvalidArgument naming backend_set.backends[0].port\n%v", r.code(), r.message(), r)
	}
	t.Logf("a put with port 0: %s: %s", r.code(), r.message())

	// Compare-and-set.
	webB2 := setJSON{Name: "web", Backends: []backendJSON{backendAt(t, "b", b.addr, 2)}}
	r = cp.call(t, "PutBackendSet", mustJSON(t, map[string]any{"backend_set": webB2, "expected_version": vA}))
	if r.code() != "FailedPrecondition" {
		t.Errorf("a put expecting version %s while web is at %s: %s, want FailedPrecondition\n%v", vA, vB, r.code(), r)
	}
	t.Logf("a put expecting a stale version: %s: %s", r.code(), r.message())
	var cas struct {
		Version string `json:"version"`
	}
	cp.mustCall(t, "PutBackendSet", mustJSON(t, map[string]any{"backend_set": webB2, "expected_version": vB}), &cas)
	if cas.Version == "" || cas.Version == vB {
		t.Errorf("a put expecting the current version: version %q, want a new one", cas.Version)
	}
	if sets := cp.sets(t); sets["web"].Version != cas.Version {
		t.Errorf("ListBackendSets after the compare-and-set: %+v; want web at %s", sets, cas.Version)
	}
	cp.awaitApplied(t, "n1", map[string]string{"web": cas.Version})
}

// rejectedSet matches the data plane's "rejected a backend set" lines.
func rejectedSet(l logLine) bool { return says("rejected a backend set", nil)(l) }

// TestControlPlaneNack: a version of web that the data plane cannot serve (TLS to its backend
// with a ca_file that does not exist on the data plane's machine) is rejected once, naming the
// field and the file: logged "rejected a backend set" with its version and reason, shown by
// ListDataPlanes as web's last NACK, while web keeps its previous version and traffic. A put of
// another set is applied without that version being sent again (no second rejection). A fixed
// version of web applies.
func TestControlPlaneNack(t *testing.T) {
	t.Parallel()
	const unsupported = "backend_set.backends[0].tls.ca_file: open /nonexistent/xlb-ca.pem: no such file or directory"
	a, b, c := newCountingBackend(t, "A"), newCountingBackend(t, "B"), newCountingBackend(t, "C")
	cp := startControlPlane(t, t.TempDir(), nil)
	dp, _ := startDataPlaneListening(t, cp, "n1", []string{"web", "other"}, "")

	vA := cp.put(t, setJSON{Name: "web", Backends: []backendJSON{backendAt(t, "a", a.addr, 1)}})
	cp.awaitApplied(t, "n1", map[string]string{"web": vA})
	from := logEnd(dp.log)

	withTLS := backendAt(t, "b", b.addr, 1)
	withTLS.TLS = &tlsJSON{ServerName: "x", CAFile: "/nonexistent/xlb-ca.pem"}
	vTLS := cp.put(t, setJSON{Name: "web", Backends: []backendJSON{withTLS}})
	rejected := awaitLine(t, dp.proc, dp.log, from, `"rejected a backend set"`, rejectedSet)
	if rejected.str("set") != "web" || rejected.str("version") != vTLS || !strings.Contains(rejected.str("error"), unsupported) {
		t.Errorf("%s; want set web, version %s, an error saying %q", rejected, vTLS, unsupported)
	}
	d := cp.awaitDataPlane(t, "n1", applyTimeout, fmt.Sprintf("showing web's NACK of %s", vTLS), func(d dataPlaneJSON) bool {
		n := d.set("web").LastNack
		return n != nil && n.Version == vTLS
	})
	if s := d.set("web"); !strings.Contains(s.LastNack.Message, unsupported) || s.AppliedVersion != vA {
		t.Errorf("ListDataPlanes: web %+v; want the NACK's message saying %q, and %s still applied", s, unsupported, vA)
	}
	t.Logf("the NACK: %+v", *d.set("web").LastNack)
	if by := traffic(t, dp.addr, "/nacked", checkRequests); by["A"] != checkRequests {
		t.Errorf("after the NACK: requests by backend %v, want all %d to A (web's previous version)", by, checkRequests)
	}

	// Another set: its push must not carry web's rejected version again.
	vOther := cp.put(t, setJSON{Name: "other", Backends: []backendJSON{backendAt(t, "c", c.addr, 1)}})
	cp.awaitApplied(t, "n1", map[string]string{"other": vOther, "web": vA})
	// The generation of other is published after anything the data plane logged of that push.
	awaitLine(t, dp.proc, dp.log, rejected.end, `"generation published" of set other`, says("generation published", nil))
	if rs := linesMatching(dp.log, from, rejectedSet); len(rs) != 1 {
		t.Errorf("after the put of another set: %d rejections, want 1 (the rejected version sent again?): %v", len(rs), rs)
	}

	// The fix.
	vFixed := cp.put(t, setJSON{Name: "web", Backends: []backendJSON{backendAt(t, "b", b.addr, 1)}})
	d = cp.awaitApplied(t, "n1", map[string]string{"web": vFixed, "other": vOther})
	if by := traffic(t, dp.addr, "/fixed", checkRequests); by["B"] != checkRequests {
		t.Errorf("after the fix: requests by backend %v, want all %d to B", by, checkRequests)
	}
	if rs := linesMatching(dp.log, from, rejectedSet); len(rs) != 1 {
		t.Errorf("after the fix: %d rejections in all, want 1: %v", len(rs), rs)
	}
	t.Logf("after the fix: web %+v", d.set("web"))
}

// TestControlPlaneKill9: a control plane killed with SIGKILL while a data plane is under load.
// Puts of five versions of web and of two other sets are each acknowledged, and the data plane
// applies the last of each; then the control plane is killed. The data plane keeps serving (at
// least outageRequests more requests succeed meanwhile). The control plane restarted on the same
// address and data directory has every set at its last acknowledged version; the data plane
// reconnects, reporting those versions, and is sent nothing: it publishes no generation until a
// new set is put. No request fails over the whole test.
func TestControlPlaneKill9(t *testing.T) {
	t.Parallel()
	a, b, c := newCountingBackend(t, "a"), newCountingBackend(t, "b"), newCountingBackend(t, "c")
	cp := startControlPlane(t, t.TempDir(), nil)
	// At debug, the data plane logs "ACK" with the number of sets of each response it applied.
	dp, _ := startDataPlaneListening(t, cp, "n1", []string{"web", "api", "static", "barrier"}, "", "--log-level", "debug")

	be := func(cb *countingBackend, w int) backendJSON { return backendAt(t, cb.name, cb.addr, w) }
	webVersions := [][]backendJSON{
		{be(a, 1)},
		{be(a, 1), be(b, 1)},
		{be(b, 2)},
		{be(b, 1), be(c, 1)},
		{be(a, 1), be(c, 3)},
	}
	last := map[string]string{"web": cp.put(t, setJSON{Name: "web", Backends: webVersions[0]})}
	cp.awaitApplied(t, "n1", last)
	g := startLoad(t, dp.addr, "/kill9", killLoadClients)
	g.awaitOK(t, 100)

	acked := []string{last["web"]}
	for i, bs := range webVersions[1:] {
		v := cp.put(t, setJSON{Name: "web", Backends: bs})
		if slices.Contains(acked, v) {
			t.Fatalf("web version %d: %s, the same as an earlier one (%v)", i+2, v, acked)
		}
		acked = append(acked, v)
		last["web"] = v
	}
	last["api"] = cp.put(t, setJSON{Name: "api", Backends: []backendJSON{be(c, 1)}})
	last["static"] = cp.put(t, setJSON{Name: "static", Backends: []backendJSON{be(a, 1), be(b, 1)}})
	t.Logf("acknowledged: web %v; api %s, static %s", acked, last["api"], last["static"])
	before := cp.awaitApplied(t, "n1", last)
	g.awaitOK(t, g.okN.Load()+100)

	// The kill.
	killFrom, killedAt := logEnd(dp.log), time.Now()
	cp.signal(syscall.SIGKILL)
	if cp.wait(stopTimeout) == nil {
		t.Fatalf("%v did not exit within %v of SIGKILL", cp, stopTimeout)
	}
	// A client's request in flight at the kill may count among these: one more per client.
	okAtKill := g.okN.Load()
	g.awaitOK(t, okAtKill+outageRequests+killLoadClients)
	if dp.hasExited() {
		t.Fatalf("%v exited while the control plane was down: %v", dp, dp.cmd.ProcessState)
	}
	t.Logf("%d requests succeeded in the %v after the kill", g.okN.Load()-okAtKill, time.Since(killedAt))

	// The restart.
	cp2 := restartControlPlane(t, cp)
	if n := cp2.listening.int("sets"); n >= 0 && n != len(last) {
		t.Errorf("restarted: %s; want sets %d", cp2.listening, len(last))
	}
	sets := cp2.sets(t)
	if len(sets) != len(last) {
		t.Errorf("after the restart, ListBackendSets: %d sets, want %d: %+v", len(sets), len(last), sets)
	}
	for name, v := range last {
		if got := sets[name].Version; got != v {
			t.Errorf("after the restart, set %s: version %q, want %s, the last acknowledged", name, got, v)
		}
	}
	after := cp2.awaitDataPlane(t, "n1", reconnectTimeout, fmt.Sprintf("reconnected serving %v", last),
		func(d dataPlaneJSON) bool { return d.applies(last) })
	if after.Generation != before.Generation {
		t.Errorf("the data plane reconnected at generation %s, want %s, its generation before the kill", after.Generation, before.Generation)
	}
	t.Logf("reconnected %v after the kill: %+v", time.Since(killedAt), after)

	// A barrier: a new set, whose generation must be the first published since the kill.
	last["barrier"] = cp2.put(t, setJSON{Name: "barrier", Backends: []backendJSON{be(b, 1)}})
	cp2.awaitApplied(t, "n1", last)
	published := awaitLine(t, dp.proc, dp.log, killFrom, `"generation published" of set barrier`, says("generation published", nil))
	if n := published.int("sets"); n != len(last) {
		t.Errorf("the first generation published since the kill: %s; want the barrier's, of %d sets (something was sent again?)",
			published, len(last))
	}
	// A set sent again at the version the data plane serves publishes nothing, so the generations
	// alone cannot tell a resend: the ACKs say how many sets each response since the kill carried.
	// Only the barrier's carried any: one set.
	sentSets := says("ACK", func(l logLine) bool { return l.int("sets") != 0 })
	awaitLine(t, dp.proc, dp.log, killFrom, `the "ACK" of the barrier's response`, sentSets)
	if acks := linesMatching(dp.log, killFrom, sentSets); len(acks) != 1 || acks[0].int("sets") != 1 {
		t.Errorf("since the kill, the data plane acknowledged these responses that carried sets: %v; want one, of the barrier alone", acks)
	}

	g.awaitOK(t, g.okN.Load()+100)
	recs := g.halt()
	var total, failed, outage int
	for i, rs := range recs {
		for _, r := range rs {
			total++
			if r.sent.After(killedAt) && r.answered.Before(cp2.listening.at) {
				outage++
			}
			if !r.ok() {
				failed++
				if failed <= violationsShown {
					t.Errorf("client %d: a failed request, sent %v after the kill: status %d, body %q, error %v",
						i, r.sent.Sub(killedAt), r.status, r.backend, r.err)
				}
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d requests failed, want none", failed, total)
	}
	if outage < outageRequests {
		t.Errorf("%d requests were sent and answered while the control plane was down, want at least %d", outage, outageRequests)
	}
	t.Logf("%d requests, %d of them while the control plane was down, %d failed", total, outage, failed)
}

// refusedCall matches the control plane's "refused an unauthenticated call" lines of method.
func refusedCall(method string) func(logLine) bool {
	return says("refused an unauthenticated call", func(l logLine) bool { return l.str("method") == method })
}

// TestControlPlaneSecurity: the security rules of the control plane's gRPC server.
//   - On an address that is not loopback, it refuses to start without TLS (exit 1, naming
//     --tls-cert), and starts with --insecure.
//   - With TLS, --client-ca and --admin-token-file: an admin call without a credential, or with a
//     wrong token, is UNAUTHENTICATED and logged; with the token, or a client certificate of the
//     CA, it succeeds; a client certificate of another CA is refused. Health and reflection need
//     no credential.
//   - A data plane without a client certificate is refused (logged) and applies nothing; one with
//     a certificate of the CA whose CN is its node id applies a put set; one with that certificate
//     and another node id is refused (PERMISSION_DENIED, logged) and applies nothing.
func TestControlPlaneSecurity(t *testing.T) {
	t.Parallel()
	pki := t.TempDir()
	ca := testutil.NewCA(t, pki, "ca")
	server := ca.IssueServer(t, pki, "server", "127.0.0.1")
	serverCert, serverKey := server.CertFile, server.KeyFile
	client := ca.IssueClient(t, pki, "trusted") // the node id of the data plane that presents it
	clientCert, clientKey := client.CertFile, client.KeyFile
	rogue := testutil.NewCA(t, pki, "rogue-ca").IssueClient(t, pki, "rogue")
	rogueCert, rogueKey := rogue.CertFile, rogue.KeyFile
	const token = "s3cret-admin-token"
	tokenFile := filepath.Join(pki, "admin-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("not loopback", func(t *testing.T) {
		t.Parallel()
		p, _ := startLoggedProc(t, "controlplane", "--listen", "0.0.0.0:0", "--data-dir", t.TempDir(), "--log-format", "json")
		if code := p.waitExitCode(stopTimeout); code != 1 {
			t.Errorf("%v: exit status %d, want 1", p, code)
		}
		if !strings.Contains(p.stderr.String(), "--tls-cert") {
			t.Errorf("%v: the error does not mention --tls-cert:\n%s", p, p.stderr.String())
		}

		p, l := startLoggedProc(t, "controlplane", "--listen", "0.0.0.0:0", "--data-dir", t.TempDir(), "--log-format", "json", "--insecure")
		ln := awaitLine(t, p, l, 0, `"control plane listening"`, says("control plane listening", nil))
		t.Logf("with --insecure: %s", ln)
		p.signal(syscall.SIGTERM)
		if code := p.waitExitCode(stopTimeout); code != 0 {
			t.Errorf("%v: exit status %d after SIGTERM, want 0", p, code)
		}
	})

	t.Run("TLS", func(t *testing.T) {
		t.Parallel()
		a := newCountingBackend(t, "A")
		withToken := []string{"-cacert", ca.File, "-H", "authorization: Bearer " + token}
		cp := startControlPlane(t, t.TempDir(), withToken,
			"--tls-cert", serverCert, "--tls-key", serverKey, "--client-ca", ca.File, "--admin-token-file", tokenFile)

		// Health and reflection are open.
		if r := runGrpcurl(t, "-cacert", ca.File, cp.addr, "list"); r.err != nil || !strings.Contains(r.stdout, "xlb.admin.v1.AdminService") {
			t.Errorf("reflection without a credential: %v", r)
		}
		if r := runGrpcurl(t, "-cacert", ca.File, cp.addr, "grpc.health.v1.Health/Check"); r.err != nil || !strings.Contains(r.stdout, "SERVING") {
			t.Errorf("health without a credential: %v", r)
		}

		// Every method of every service but health and reflection, as reflection lists them, is
		// refused without a credential.
		services := runGrpcurl(t, "-cacert", ca.File, cp.addr, "list")
		checked, bySvc := 0, map[string]int{}
		for _, svc := range strings.Fields(services.stdout) {
			if svc == "grpc.health.v1.Health" || strings.HasPrefix(svc, "grpc.reflection.") {
				continue
			}
			methods := runGrpcurl(t, "-cacert", ca.File, cp.addr, "list", svc)
			if methods.err != nil {
				t.Fatalf("list %s: %v", svc, methods)
			}
			for _, m := range strings.Fields(methods.stdout) {
				r := runGrpcurl(t, "-cacert", ca.File, "-d", "{}", cp.addr, m)
				if got := r.code(); got != "Unauthenticated" {
					t.Errorf("%s without a credential: %q, want Unauthenticated\n%v", m, got, r)
				}
				checked++
				bySvc[svc]++
			}
		}
		for _, svc := range cpServices {
			if bySvc[svc] == 0 && svc != "grpc.health.v1.Health" {
				t.Errorf("no method of %s checked; reflection listed %q", svc, services.stdout)
			}
		}
		t.Logf("%d methods of %q refused without a credential", checked, strings.Fields(services.stdout))

		const listSets = "xlb.admin.v1.AdminService/ListBackendSets"
		from := logEnd(cp.log)
		// want is the status of the call, or "refused": a failed handshake or Unauthenticated.
		for _, c := range []struct {
			name, want string
			flags      []string
		}{
			{"no credential", "Unauthenticated", nil},
			{"the token", "OK", []string{"-H", "authorization: Bearer " + token}},
			{"a wrong token", "Unauthenticated", []string{"-H", "authorization: Bearer not-" + token}},
			{"a client certificate of the CA", "OK", []string{"-cert", clientCert, "-key", clientKey}},
			{"a client certificate of another CA", "refused", []string{"-cert", rogueCert, "-key", rogueKey}},
		} {
			r := runGrpcurl(t, append(append([]string{"-cacert", ca.File}, c.flags...), cp.addr, listSets)...)
			switch got := r.code(); {
			case c.want == "refused" && (got == "" || got == "Unauthenticated"):
				t.Logf("with %s: refused: %s", c.name, strings.TrimSpace(r.stderr))
			case got != c.want:
				t.Errorf("ListBackendSets with %s: %q, want %s\n%v", c.name, got, c.want, r)
			case got == "Unauthenticated":
				refused := awaitLine(t, cp.proc, cp.log, from, fmt.Sprintf(`"refused an unauthenticated call" of %s`, c.name),
					refusedCall("/"+listSets))
				from = refused.end
				t.Logf("with %s: %s %q; logged %s", c.name, got, r.message(), refused)
			}
		}

		vA := cp.put(t, setJSON{Name: "web", Backends: []backendJSON{backendAt(t, "a", a.addr, 1)}})

		// A data plane without a client certificate.
		from = logEnd(cp.log)
		anon := startDataPlane(t, cp, "anonymous", "web", "--tls-ca", ca.File)
		refused := awaitLine(t, cp.proc, cp.log, from, `"refused an unauthenticated call" of the DiscoveryService`,
			refusedCall("/xlb.discovery.v1.DiscoveryService/StreamBackendSets"))
		t.Logf("a data plane without a client certificate: %s", refused)

		// One with a certificate of the CA.
		dp := startDataPlane(t, cp, "trusted", "web", "--tls-ca", ca.File, "--tls-cert", clientCert, "--tls-key", clientKey)
		cp.awaitApplied(t, "trusted", map[string]string{"web": vA})
		if by := traffic(t, dp.addr, "/trusted", checkRequests); by["A"] != checkRequests {
			t.Errorf("the data plane with a client certificate: requests by backend %v, want all %d to A", by, checkRequests)
		}

		// One with that certificate that says it is another node.
		from = logEnd(cp.log)
		impostor := startDataPlane(t, cp, "impostor", "web", "--tls-ca", ca.File, "--tls-cert", clientCert, "--tls-key", clientKey)
		refused = awaitLine(t, cp.proc, cp.log, from, `"refused a data plane speaking for another node"`,
			says("refused a data plane speaking for another node", func(l logLine) bool { return strings.Contains(l.str("reason"), `"impostor"`) }))
		t.Logf("a data plane whose node id is not its certificate's: %s", refused)

		// By now the anonymous one, started first, would have applied web too, had it been let in.
		if d, ok := cp.dataPlanes(t)["anonymous"]; ok {
			t.Errorf("ListDataPlanes shows the data plane without a client certificate: %+v", d)
		}
		if ps := linesMatching(anon.log, 0, says("generation published", nil)); len(ps) > 0 {
			t.Errorf("the data plane without a client certificate published %v", ps)
		}
		if d, ok := cp.dataPlanes(t)["impostor"]; ok {
			t.Errorf("ListDataPlanes shows the data plane whose node id is not its certificate's: %+v", d)
		}
		if ps := linesMatching(impostor.log, 0, says("generation published", nil)); len(ps) > 0 {
			t.Errorf("the data plane whose node id is not its certificate's published %v", ps)
		}
		if anon.hasExited() {
			t.Errorf("%v exited: %v", anon, anon.cmd.ProcessState)
		}
	})
}

// TestDataPlaneBeforeFirstGeneration: a data plane whose control plane has sent it nothing yet
// listens, says so in its log, and answers every request 503 with that reason rather than a bare
// "no backend"; once the set comes, it serves.
func TestDataPlaneBeforeFirstGeneration(t *testing.T) {
	t.Parallel()
	a := newCountingBackend(t, "A")
	cp := startControlPlane(t, t.TempDir(), nil)
	dp := startDataPlane(t, cp, "early", "web")
	awaitLine(t, dp.proc, dp.log, 0, `"no backend sets yet"`, says("no backend sets yet: every request is answered 503 until the control plane sends the first generation", nil))
	r := newClient(t, dp.addr, false).get("/early")
	if r.err != nil || r.status != 503 || !strings.Contains(r.backend, "has not received its first generation") {
		t.Errorf("a request before the first generation: status %d, body %q, error %v; want 503 saying why", r.status, r.backend, r.err)
	}
	v := cp.put(t, setJSON{Name: "web", Backends: []backendJSON{backendAt(t, "a", a.addr, 1)}})
	cp.awaitApplied(t, "early", map[string]string{"web": v})
	if by := traffic(t, dp.addr, "/served", checkRequests); by["A"] != checkRequests {
		t.Errorf("after the first generation: requests by backend %v, want all %d to A", by, checkRequests)
	}
}
