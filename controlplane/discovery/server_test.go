package discovery

import (
	"fmt"
	"io"
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/xlbproxy/xlb/controlplane/resource"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// TestACKFlow: a data plane is sent every set, then only the set that changed, then a deletion as
// removed; what it applied shows in DataPlanes.
func TestACKFlow(t *testing.T) {
	src := newMemSource()
	src.put("api", "a1", 3)
	src.put("web", "w1", 2)
	cp := startControlPlane(t, src, Config{Debounce: time.Millisecond})
	dp := newFakeDataPlane(nil)
	dp.run(t, cp.dial(t), "dp-1")

	if got, want := summary(dp.next(t)), "api@a1 web@w1 "; got != want {
		t.Fatalf("first response %q, want %q", got, want)
	}
	waitFor(t, "DataPlanes to show api@a1 and web@w1", func() bool {
		return maps.Equal(cp.applied("dp-1"), map[string]string{"api": "a1", "web": "w1"})
	})
	st := cp.dataPlane("dp-1")
	if !st.GetConnected() || st.GetConnectedSince() == nil || st.GetDisconnectedAt() != nil {
		t.Errorf("connected %v since %v, disconnected at %v: want connected, since set",
			st.GetConnected(), st.GetConnectedSince(), st.GetDisconnectedAt())
	}
	if st.GetBuild() != "test-build" || st.GetGeneration() != 1 || len(st.GetWorkers()) != 1 || st.GetWorkers()[0].GetObservedGeneration() != 1 {
		t.Errorf("build %q generation %d workers %v: want test-build, 1 and one worker at 1", st.GetBuild(), st.GetGeneration(), st.GetWorkers())
	}

	src.put("api", "a2", 4)
	if got, want := summary(dp.next(t)), "api@a2 "; got != want {
		t.Fatalf("after a change of api: response %q, want %q", got, want)
	}
	src.remove("web")
	if got, want := summary(dp.next(t)), "-web "; got != want {
		t.Fatalf("after web's deletion: response %q, want %q", got, want)
	}
	waitFor(t, "DataPlanes to show api@a2 alone", func() bool {
		return maps.Equal(cp.applied("dp-1"), map[string]string{"api": "a2"}) && len(cp.dataPlane("dp-1").GetSets()) == 1
	})
}

// TestNACK: a rejected version shows as the set's last_nack, is never sent again (the next
// response carries only another set that changed), and a new version of the set is sent.
func TestNACK(t *testing.T) {
	src := newMemSource()
	src.put("good", "g1", 2)
	src.put("bad", "b1", 2)
	cp := startControlPlane(t, src, Config{Debounce: time.Millisecond})
	dp := newFakeDataPlane(func(vs *discoveryv1.VersionedBackendSet) string {
		if vs.GetVersion() == "b1" {
			return "backend_set.backends[1].port: 0, want 1 to 65535"
		}
		return ""
	})
	dp.run(t, cp.dial(t), "dp-1")

	if got, want := summary(dp.next(t)), "bad@b1 good@g1 "; got != want {
		t.Fatalf("first response %q, want %q", got, want)
	}
	waitFor(t, "DataPlanes to show the NACK of bad@b1", func() bool {
		for _, s := range cp.dataPlane("dp-1").GetSets() {
			if s.GetName() == "bad" {
				return s.GetLastNack().GetVersion() == "b1"
			}
		}
		return false
	})
	for _, s := range cp.dataPlane("dp-1").GetSets() {
		switch s.GetName() {
		case "bad":
			if s.GetAppliedVersion() != "" || s.GetLastNack().GetMessage() != "backend_set.backends[1].port: 0, want 1 to 65535" || s.GetLastNack().GetAt() == nil {
				t.Errorf("bad: applied %q, last NACK %v: want none applied, the NACK with its message and time", s.GetAppliedVersion(), s.GetLastNack())
			}
		case "good":
			if s.GetAppliedVersion() != "g1" || s.GetLastNack() != nil {
				t.Errorf("good: applied %q, last NACK %v: want g1, no NACK", s.GetAppliedVersion(), s.GetLastNack())
			}
		}
	}
	if logs := cp.logs.String(); !strings.Contains(logs, "[WARN]  discovery: data plane rejected a set: node=dp-1 set=bad version=b1 message=") {
		t.Errorf("no warning of the NACK in the log:\n%s", logs)
	}

	// Responses are in order: had the server sent bad@b1 again, it would come before this.
	src.put("good", "g2", 3)
	if got, want := summary(dp.next(t)), "good@g2 "; got != want {
		t.Fatalf("after a change of good: response %q, want %q", got, want)
	}
	src.put("bad", "b2", 2)
	if got, want := summary(dp.next(t)), "bad@b2 "; got != want {
		t.Fatalf("after a new version of bad: response %q, want %q", got, want)
	}
	waitFor(t, "DataPlanes to show bad@b2 applied", func() bool {
		return maps.Equal(cp.applied("dp-1"), map[string]string{"good": "g2", "bad": "b2"})
	})
	for _, s := range cp.dataPlane("dp-1").GetSets() {
		if s.GetName() == "bad" && s.GetLastNack().GetVersion() != "b1" {
			t.Errorf("bad's last NACK is %v once b2 applied: want still b1's", s.GetLastNack())
		}
	}
	if n := len(dp.responses); n != 0 {
		t.Errorf("%d more responses, want none", n)
	}
}

// TestStaleNonce: a request answering a response other than the latest (an unknown nonce, or an
// earlier one) changes nothing, even with errors; the next response waits for the latest's answer.
func TestStaleNonce(t *testing.T) {
	src := newMemSource()
	src.put("api", "1", 1)
	cp := startControlPlane(t, src, Config{Debounce: time.Millisecond})
	st := cp.stream(t)
	node := &discoveryv1.Node{Id: "dp-1"}
	send := func(req *discoveryv1.StreamBackendSetsRequest) {
		t.Helper()
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(want string) string {
		t.Helper()
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := summary(resp); got != want {
			t.Fatalf("response %q, want %q", got, want)
		}
		return resp.GetNonce()
	}

	send(&discoveryv1.StreamBackendSetsRequest{Node: node})
	n1 := recv("api@1 ")
	// A change while the response is unanswered waits; a stale NACK of what comes next, were it
	// taken, would both answer and park it, and nothing would ever come.
	src.put("api", "2", 1)
	send(&discoveryv1.StreamBackendSetsRequest{ResponseNonce: n1 + "x", Errors: []*discoveryv1.SetError{{Name: "api", Version: "2", Message: "stale"}}})
	send(&discoveryv1.StreamBackendSetsRequest{ResponseNonce: n1, Applied: map[string]string{"api": "1"}})
	n2 := recv("api@2 ")
	if n2 == n1 {
		t.Fatalf("two responses with nonce %q", n1)
	}
	// The same with the nonce of the earlier response.
	send(&discoveryv1.StreamBackendSetsRequest{ResponseNonce: n1, Errors: []*discoveryv1.SetError{{Name: "api", Version: "3", Message: "stale"}}})
	send(&discoveryv1.StreamBackendSetsRequest{ResponseNonce: n2, Applied: map[string]string{"api": "2"}})
	src.put("api", "3", 1)
	recv("api@3 ")

	for _, s := range cp.dataPlane("dp-1").GetSets() {
		if s.GetLastNack() != nil {
			t.Errorf("set %s has NACK %v from a stale request", s.GetName(), s.GetLastNack())
		}
	}
	if logs := cp.logs.String(); strings.Count(logs, "stale request ignored") != 2 {
		t.Errorf("want two stale requests logged at debug, log:\n%s", logs)
	}
}

// TestDebounce: a burst of changes goes out in few pushes.
func TestDebounce(t *testing.T) {
	src := newMemSource()
	src.put("api", "v0", 1)
	cp := startControlPlane(t, src, Config{Debounce: 50 * time.Millisecond})
	dp := newFakeDataPlane(nil)
	dp.run(t, cp.dial(t), "dp-1")
	dp.next(t)

	const changes = 200
	snapshots := src.Snapshots()
	for i := 1; i <= changes; i++ {
		src.put("api", fmt.Sprintf("v%d", i), 1)
	}
	final := fmt.Sprintf("api@v%d ", changes)
	responses := 0
	for {
		responses++
		if summary(dp.next(t)) == final {
			break
		}
	}
	// The burst takes microseconds: it fits in one window, or two if a window closed within it.
	if pushes := src.Snapshots() - snapshots; pushes > 2 || responses > 2 {
		t.Errorf("%d changes made %d pushes and %d responses, want at most 2 of each", changes, pushes, responses)
	}
}

// TestNodeRules: the first request names the node, later ones keep it, and a second stream of a
// node replaces the first.
func TestNodeRules(t *testing.T) {
	src := newMemSource()
	src.put("api", "1", 1)
	cp := startControlPlane(t, src, Config{Debounce: time.Millisecond})
	wantEnd := func(t *testing.T, st discoveryv1.DiscoveryService_StreamBackendSetsClient, code codes.Code, msg string) {
		t.Helper()
		for {
			_, err := st.Recv()
			if err == nil {
				continue
			}
			if err == io.EOF && code == codes.OK {
				return
			}
			if s := status.Convert(err); s.Code() != code || !strings.Contains(s.Message(), msg) {
				t.Fatalf("stream ended with %v, want %v with %q", err, code, msg)
			}
			return
		}
	}

	t.Run("missing node", func(t *testing.T) {
		for _, node := range []*discoveryv1.Node{nil, {Build: "b"}} {
			st := cp.stream(t)
			if err := st.Send(&discoveryv1.StreamBackendSetsRequest{Node: node}); err != nil {
				t.Fatal(err)
			}
			wantEnd(t, st, codes.InvalidArgument, "node.id")
		}
	})
	t.Run("changed node", func(t *testing.T) {
		st := cp.stream(t)
		st.Send(&discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: "dp-a"}})
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		st.Send(&discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: "dp-b"}, ResponseNonce: resp.GetNonce()})
		wantEnd(t, st, codes.InvalidArgument, `node.id "dp-b"`)
		if cp.dataPlane("dp-b") != nil {
			t.Error("the changed node dp-b is listed")
		}
	})
	t.Run("replacement", func(t *testing.T) {
		first := cp.stream(t)
		first.Send(&discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: "dp-r", Build: "1"}})
		if _, err := first.Recv(); err != nil {
			t.Fatal(err)
		}
		second := cp.stream(t)
		second.Send(&discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: "dp-r", Build: "2"}, Applied: map[string]string{"api": "0"}})
		wantEnd(t, first, codes.Aborted, "replaced by a newer stream")
		// And the control plane's log says so, at WARN, naming both peers.
		if l := cp.logs.String(); !strings.Contains(l, "[WARN]") || !strings.Contains(l, "its previous stream is replaced") ||
			!strings.Contains(l, "node=dp-r") || !strings.Contains(l, "previous_peer=127.0.0.1:") {
			t.Errorf("no WARN line names the replaced stream of dp-r and its peer:\n%s", l)
		}
		resp, err := second.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := summary(resp), "api@1 "; got != want {
			t.Fatalf("the new stream's response %q, want %q", got, want)
		}
		// The old stream's end does not disconnect the node.
		if st := cp.dataPlane("dp-r"); !st.GetConnected() || st.GetBuild() != "2" {
			t.Fatalf("after the replacement: connected %v build %q, want true and 2", st.GetConnected(), st.GetBuild())
		}
		second.CloseSend()
		wantEnd(t, second, codes.OK, "")
		if st := cp.dataPlane("dp-r"); st.GetConnected() || st.GetDisconnectedAt() == nil || st.GetConnectedSince() != nil {
			t.Fatalf("after the stream closed: connected %v, since %v, disconnected at %v: want disconnected at a time",
				st.GetConnected(), st.GetConnectedSince(), st.GetDisconnectedAt())
		}
	})
}

// TestClose: Close ends open streams with UNAVAILABLE and refuses new ones.
func TestClose(t *testing.T) {
	src := newMemSource()
	src.put("api", "1", 1)
	cp := startControlPlane(t, src, Config{})
	open := cp.stream(t)
	open.Send(&discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: "dp-1"}})
	if _, err := open.Recv(); err != nil {
		t.Fatal(err)
	}
	silent := cp.stream(t) // no first request yet

	cp.srv.Close()
	for _, st := range []discoveryv1.DiscoveryService_StreamBackendSetsClient{open, silent} {
		if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
			t.Errorf("stream ended with %v, want UNAVAILABLE", err)
		}
	}
	late := cp.stream(t)
	late.Send(&discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: "dp-2"}})
	if _, err := late.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("a stream after Close ended with %v, want UNAVAILABLE", err)
	}
	if dps := cp.srv.DataPlanes(); len(dps) != 1 || dps[0].GetConnected() {
		t.Errorf("DataPlanes after Close: %v, want dp-1 disconnected", dps)
	}
}

// TestRejectionKeptAcrossStreams: a node that reconnects is not sent what it rejected before.
func TestRejectionKeptAcrossStreams(t *testing.T) {
	src := newMemSource()
	src.put("api", "1", 1)
	cp := startControlPlane(t, src, Config{Debounce: time.Millisecond})
	st := cp.stream(t)
	st.Send(&discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: "dp-1"}})
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&discoveryv1.StreamBackendSetsRequest{ResponseNonce: resp.GetNonce(), Errors: []*discoveryv1.SetError{{Name: "api", Version: "1", Message: "no"}}})
	st.CloseSend()
	if _, err := st.Recv(); err == nil {
		t.Fatal("a response after the NACK")
	}

	again := cp.stream(t)
	again.Send(&discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: "dp-1"}})
	src.put("other", "1", 1)
	resp, err = again.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := summary(resp), "other@1 "; got != want {
		t.Fatalf("after reconnecting: response %q, want %q", got, want)
	}
}

// TestNACKBounded: whatever NACKs a data plane sends, the server keeps at most SetsPerNodeMax
// rejected sets of it, each message cut at NackMessageBytesMax, and logs at most
// nackLogsPerRequest of them one by one, the rest in one line; the same NACK again is not logged
// again.
func TestNACKBounded(t *testing.T) {
	src := newMemSource()
	const n = SetsPerNodeMax + 50
	for i := range n {
		src.put(fmt.Sprint("s", i), "1", 1)
	}
	cp := startControlPlane(t, src, Config{Debounce: time.Millisecond})
	st := cp.stream(t)
	if err := st.Send(&discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: "dp-1"}}); err != nil {
		t.Fatal(err)
	}
	long := "x" + strings.Repeat("é", NackMessageBytesMax/2+10) // 2 bytes each: cut inside one
	var errs []*discoveryv1.SetError
	for i := range n {
		msg := "no"
		if i < 100 { // within gRPC's 4 MB a message
			msg = long
		}
		errs = append(errs, &discoveryv1.SetError{Name: fmt.Sprint("s", i), Version: "1", Message: msg})
	}
	// Twice: the second time the same NACKs, nothing new to log, of the sets sent again (those
	// whose NACK was dropped).
	for round := 1; round <= 2; round++ {
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv1.StreamBackendSetsRequest{ResponseNonce: resp.GetNonce(), Errors: errs}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("NACK %d taken", round), func() bool { return strings.Count(cp.logs.String(), "more sets than are logged") == round })
	}
	nacked := 0
	for _, s := range cp.dataPlane("dp-1").GetSets() {
		if n := s.GetLastNack(); n != nil {
			nacked++
			if len(n.GetMessage()) > NackMessageBytesMax+len("…") || !utf8.ValidString(n.GetMessage()) {
				t.Fatalf("set %s: a NACK message of %d bytes (valid UTF-8: %v) kept", s.GetName(), len(n.GetMessage()), utf8.ValidString(n.GetMessage()))
			}
		}
	}
	if nacked != SetsPerNodeMax {
		t.Errorf("%d rejected sets kept of %d sent, want %d", nacked, len(errs), SetsPerNodeMax)
	}
	if n := strings.Count(cp.logs.String(), "data plane rejected a set"); n != nackLogsPerRequest {
		t.Errorf("%d NACKs logged one by one over two requests of %d, want %d", n, len(errs), nackLogsPerRequest)
	}
}

// TestNACKRetried: a rejected version is not parked forever: it is sent again after NackRetry,
// and, rejected again, after twice that; a version the node accepts then stays applied.
func TestNACKRetried(t *testing.T) {
	const retry = 50 * time.Millisecond
	src := newMemSource()
	src.put("api", "1", 1)
	cp := startControlPlane(t, src, Config{Debounce: time.Millisecond, NackRetry: retry})
	st := cp.stream(t)
	if err := st.Send(&discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: "dp-1"}}); err != nil {
		t.Fatal(err)
	}
	var nacked time.Time
	for round := range 3 {
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got := time.Now()
		if s := summary(resp); s != "api@1 " {
			t.Fatalf("response %d: %q, want api@1", round, s)
		}
		// The n-th retry comes no sooner than NackRetry doubled n-1 times after the NACK before.
		if round > 0 {
			if min := retry << (round - 1); got.Sub(nacked) < min {
				t.Errorf("retry %d came %v after the NACK, want %v or more", round, got.Sub(nacked), min)
			}
		}
		req := &discoveryv1.StreamBackendSetsRequest{ResponseNonce: resp.GetNonce(),
			Errors: []*discoveryv1.SetError{{Name: "api", Version: "1", Message: "over capacity"}}}
		if round == 2 {
			req = &discoveryv1.StreamBackendSetsRequest{ResponseNonce: resp.GetNonce(), Applied: map[string]string{"api": "1"}}
		}
		nacked = time.Now()
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "api@1 applied", func() bool { return cp.applied("dp-1")["api"] == "1" })
	// The same NACK again is not logged again.
	if n := strings.Count(cp.logs.String(), "data plane rejected a set"); n != 1 {
		t.Errorf("%d NACKs logged, want 1", n)
	}
}

// TestSubscribe: a data plane is sent only the sets it subscribes to; a change of another set
// sends it nothing; a set it serves but no longer wants is sent as removed.
func TestSubscribe(t *testing.T) {
	src := newMemSource()
	src.put("api", "a1", 1)
	src.put("web", "w1", 1)
	src.put("static", "s1", 1)
	cp := startControlPlane(t, src, Config{Debounce: time.Millisecond})
	dp := newFakeDataPlane(nil)
	dp.subscribe = []string{"web", "static", "later"}
	// What it served before, from its region: api, which it no longer wants.
	dp.served = map[string]string{"api": "a0"}
	dp.run(t, cp.dial(t), "dp-1")

	if got, want := summary(dp.next(t)), "static@s1 web@w1 -api "; got != want {
		t.Fatalf("first response %q, want %q", got, want)
	}
	src.put("api", "a2", 2) // not wanted: nothing is sent
	src.put("later", "l1", 1)
	if got, want := summary(dp.next(t)), "later@l1 "; got != want {
		t.Fatalf("after puts of api and later: response %q, want %q (nothing of api)", got, want)
	}
	waitFor(t, "DataPlanes to show web, static and later", func() bool {
		return maps.Equal(cp.applied("dp-1"), map[string]string{"web": "w1", "static": "s1", "later": "l1"})
	})
	if !strings.Contains(cp.logs.String(), `subscribe="later,static,web"`) {
		t.Errorf("the connect line does not show the subscription:\n%s", cp.logs)
	}

	// "*" is every set.
	all := newFakeDataPlane(nil)
	all.subscribe = []string{"*"}
	all.run(t, cp.dial(t), "dp-all")
	if got, want := summary(all.next(t)), "api@a2 later@l1 static@s1 web@w1 "; got != want {
		t.Fatalf(`subscribed to "*": first response %q, want %q`, got, want)
	}
}

// TestSubscribeRefused: a subscription the server cannot hold ends the stream with
// INVALID_ARGUMENT naming the field, on the first request and on a later one.
func TestSubscribeRefused(t *testing.T) {
	src := newMemSource()
	src.put("api", "1", 1)
	cp := startControlPlane(t, src, Config{Debounce: time.Millisecond})
	tooMany := make([]string, SetsPerNodeMax+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprint("s", i)
	}
	for _, tc := range []struct {
		name  string
		names []string
		want  string
	}{
		{"bad name", []string{"api", "a b"}, `subscribe[1]: "a b": want letters`},
		{"too many", tooMany, "subscribe: 4097 names, at most 4096"},
	} {
		for _, later := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, later %v", tc.name, later), func(t *testing.T) {
				st := cp.stream(t)
				first := &discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: "dp-" + tc.name}}
				if !later {
					first.Subscribe = tc.names
				}
				if err := st.Send(first); err != nil {
					t.Fatal(err)
				}
				if later {
					resp, err := st.Recv()
					if err != nil {
						t.Fatal(err)
					}
					st.Send(&discoveryv1.StreamBackendSetsRequest{ResponseNonce: resp.GetNonce(), Subscribe: tc.names})
				}
				for {
					_, err := st.Recv()
					if err == nil {
						continue
					}
					if s := status.Convert(err); s.Code() != codes.InvalidArgument || !strings.Contains(s.Message(), tc.want) {
						t.Fatalf("stream ended with %v, want InvalidArgument with %q", err, tc.want)
					}
					return
				}
			})
		}
	}
}

// TestResponsesSplit: sets of 10,000 backends go out in responses of at most
// resource.ResponseBytesTarget each (a larger set alone), one after the answer to the other, and
// together they are every set.
func TestResponsesSplit(t *testing.T) {
	src := newMemSource()
	const sets = 6
	for i := range sets {
		src.put(fmt.Sprint("big", i), "1", 10_000)
	}
	huge := backendSet("huge", 10_000)
	for _, b := range huge.Backends {
		b.Metadata["blob"] = strings.Repeat("x", 300)
	}
	src.putSet("1", huge)
	cp := startControlPlane(t, src, Config{Debounce: time.Millisecond})
	dp := newFakeDataPlane(nil)
	dp.run(t, cp.dial(t), "dp-1")

	got := map[string]bool{}
	responses := 0
	for len(got) < sets+1 {
		resp := dp.next(t)
		responses++
		size := proto.Size(resp)
		names := []string{}
		for _, vs := range resp.GetSets() {
			name := vs.GetBackendSet().GetName()
			if got[name] {
				t.Errorf("set %s sent twice", name)
			}
			got[name] = true
			names = append(names, name)
		}
		t.Logf("response %d: %d bytes, sets %v", responses, size, names)
		if len(names) > 1 && size > resource.ResponseBytesTarget+64 || len(names) == 0 {
			t.Errorf("response %d: %d bytes with sets %v; want at most %d, or one set alone", responses, size, names, resource.ResponseBytesTarget)
		}
	}
	if responses < 3 { // 6 × 590 kB in 2 MiB each, and the huge one
		t.Errorf("%d responses for %d sets of 10,000 backends, want at least 3", responses, sets+1)
	}
	waitFor(t, "DataPlanes to show every set applied", func() bool { return len(cp.applied("dp-1")) == sets+1 })
}

// TestDeltas: a change of one backend of many goes as a delta to a stream that accepts deltas
// and was sent the base version on that stream; whole to one that claims the base from before
// the stream (until it was sent a version on it), and to one that does not accept deltas.
func TestDeltas(t *testing.T) {
	src := newMemSource()
	v1 := backendSet("api", 100)
	src.putSet("1", v1)
	cp := startControlPlane(t, src, Config{Debounce: time.Millisecond})
	type dp struct {
		id string
		st discoveryv1.DiscoveryService_StreamBackendSetsClient
	}
	send := func(d dp, req *discoveryv1.StreamBackendSetsRequest) {
		t.Helper()
		if err := d.st.Send(req); err != nil {
			t.Fatalf("%s: %v", d.id, err)
		}
	}
	recv := func(d dp, want string) *discoveryv1.StreamBackendSetsResponse {
		t.Helper()
		resp, err := d.st.Recv()
		if err != nil {
			t.Fatalf("%s: %v", d.id, err)
		}
		if got := summary(resp); got != want {
			t.Fatalf("%s: response %q, want %q", d.id, got, want)
		}
		return resp
	}
	ack := func(d dp, resp *discoveryv1.StreamBackendSetsResponse, version string) {
		t.Helper()
		send(d, &discoveryv1.StreamBackendSetsRequest{ResponseNonce: resp.GetNonce(), Applied: map[string]string{"api": version}})
	}
	a, b, c := dp{"a", cp.stream(t)}, dp{"b", cp.stream(t)}, dp{"c", cp.stream(t)}
	send(a, &discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: a.id}, AcceptDeltas: true})
	ack(a, recv(a, "api@1 "), "1")
	send(b, &discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: b.id}, AcceptDeltas: true, Applied: map[string]string{"api": "1"}})
	send(c, &discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: c.id}})
	ack(c, recv(c, "api@1 "), "1")
	waitFor(t, "every node to apply api@1", func() bool {
		return cp.applied("a")["api"] == "1" && cp.applied("b")["api"] == "1" && cp.applied("c")["api"] == "1"
	})

	v2 := proto.Clone(v1).(*discoveryv1.BackendSet)
	v2.Backends[40].Weight = 77
	src.putSet("2", v2)
	resp := recv(a, "Δapi@1→2 ")
	d := resp.GetDeltas()[0]
	var made []*discoveryv1.Backend
	for _, r := range d.GetBackends() {
		made = append(made, r.GetBackends()...)
		made = append(made, v1.GetBackends()[r.GetBaseStart():r.GetBaseStart()+r.GetBaseCount()]...)
	}
	got := proto.Clone(d.GetBackendSet()).(*discoveryv1.BackendSet)
	got.Backends = made
	if !proto.Equal(got, v2) || len(d.GetBackends()) != 3 || len(d.GetBackends()[1].GetBackends()) != 1 {
		t.Errorf("the delta makes %v in runs %v, want api@2 in three runs, the middle one backend", got, d.GetBackends())
	}
	ack(a, resp, "2")
	ack(b, recv(b, "api@2 "), "2")
	ack(c, recv(c, "api@2 "), "2")
	waitFor(t, "every node to apply api@2", func() bool {
		return cp.applied("a")["api"] == "2" && cp.applied("b")["api"] == "2" && cp.applied("c")["api"] == "2"
	})

	v3 := proto.Clone(v2).(*discoveryv1.BackendSet)
	v3.Backends = v3.Backends[1:]
	src.putSet("3", v3)
	recv(a, "Δapi@2→3 ")
	recv(b, "Δapi@2→3 ")
	recv(c, "api@3 ")
}
