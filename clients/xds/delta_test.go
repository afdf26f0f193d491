package xds

import (
	"context"
	"fmt"
	"maps"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/xlbproxy/xlb/controlplane/resource"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/testutil"
)

// bigSet is set name of n backends.
func bigSet(name string, n int) *discoveryv1.BackendSet {
	set := &discoveryv1.BackendSet{Name: name}
	for i := range n {
		set.Backends = append(set.Backends, &discoveryv1.Backend{Id: fmt.Sprintf("b%d", i), Address: "127.0.0.1", Port: uint32(8000 + i), Weight: 1})
	}
	return set
}

// deltaCounter counts the deltas of the responses that a connection receives, before Run makes
// them whole.
type deltaCounter struct{ deltas, sets atomic.Int64 }

func (c *deltaCounter) interceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	return countingStream{cs, c}, err
}

type countingStream struct {
	grpc.ClientStream
	c *deltaCounter
}

func (s countingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if resp, ok := m.(*discoveryv1.StreamBackendSetsResponse); ok && err == nil {
		s.c.deltas.Add(int64(len(resp.GetDeltas())))
		s.c.sets.Add(int64(len(resp.GetSets())))
	}
	return err
}

// TestDeltasApplied: changes of a few backends of a large set come as deltas, and Apply is
// handed the whole set of each new version, equal to the control plane's, in order; a reconnect
// is sent the next change whole (its base did not come on that stream), then deltas again.
func TestDeltasApplied(t *testing.T) {
	src := testutil.NewMemSource[resource.Versioned]()
	set := bigSet("api", 200)
	src.Put("api", resource.Versioned{Set: set, Version: resource.Version(set)})
	ln := listen(t)
	addr := ln.Addr().String()
	_, stop := serve(t, src, ln)
	counter := &deltaCounter{}
	counted, err := grpc.NewClient("passthrough:///"+addr, append(dialOptions(), grpc.WithStreamInterceptor(counter.interceptor))...)
	if err != nil {
		t.Fatal(err)
	}
	defer counted.Close()
	dp := runDataPlane(t, ControlPlane{Address: addr, Conn: counted})

	check := func(resp *discoveryv1.StreamBackendSetsResponse, want *discoveryv1.BackendSet) {
		t.Helper()
		if len(resp.GetSets()) != 1 || len(resp.GetDeltas()) != 0 {
			t.Fatalf("Apply got %d sets and %d deltas, want one whole set", len(resp.GetSets()), len(resp.GetDeltas()))
		}
		vs := resp.GetSets()[0]
		if !proto.Equal(vs.GetBackendSet(), want) || vs.GetVersion() != resource.Version(want) {
			t.Fatalf("Apply got %v at %s, want %v at %s", vs.GetBackendSet(), vs.GetVersion(), want, resource.Version(want))
		}
	}
	change := func(i int) *discoveryv1.BackendSet {
		next := proto.Clone(set).(*discoveryv1.BackendSet)
		switch i % 3 {
		case 0:
			next.Backends[(i*37)%len(next.Backends)].Weight += 1
		case 1:
			next.Backends = append(next.Backends[:5:5], next.Backends[6:]...)
		case 2:
			next.Backends = append([]*discoveryv1.Backend{{Id: fmt.Sprintf("new%d", i), Address: "127.0.0.2", Port: 1}}, next.Backends...)
			next.PanicThreshold = uint32(i)
		}
		set = next
		src.Put("api", resource.Versioned{Set: next, Version: resource.Version(next)})
		return next
	}
	check(dp.next(t), set)
	for i := range 6 {
		want := change(i)
		check(dp.next(t), want)
	}
	if d, s := counter.deltas.Load(), counter.sets.Load(); d != 6 || s != 1 {
		t.Fatalf("the client received %d deltas and %d whole sets, want 6 and the first 1", d, s)
	}

	stop()
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	srv2, _ := serve(t, src, ln2)
	testutil.WaitFor(t, waitLimit, "the client to report api to the new control plane", func() bool {
		got, connected := applied(srv2, "dp-1")
		return connected && maps.Equal(got, map[string]string{"api": resource.Version(set)})
	})
	for i := 6; i < 8; i++ {
		want := change(i)
		check(dp.next(t), want)
	}
	if d, s := counter.deltas.Load(), counter.sets.Load(); d != 7 || s != 2 {
		t.Fatalf("after reconnecting, the client received %d deltas and %d whole sets in all, want 7 and 2", d, s)
	}
}

// TestMergeRefused: a delta that the client cannot make whole is a protocol error naming the
// set, and changes nothing.
func TestMergeRefused(t *testing.T) {
	base := &discoveryv1.VersionedBackendSet{BackendSet: bigSet("api", 3), Version: "v1"}
	bases := map[string]*discoveryv1.VersionedBackendSet{"api": base}
	delta := func(baseVersion string, runs ...*discoveryv1.BackendRun) *discoveryv1.StreamBackendSetsResponse {
		return &discoveryv1.StreamBackendSetsResponse{Deltas: []*discoveryv1.BackendSetDelta{
			{BaseVersion: baseVersion, Version: "v2", BackendSet: &discoveryv1.BackendSet{Name: "api"}, Backends: runs},
		}}
	}
	one := &discoveryv1.Backend{Id: "x", Address: "127.0.0.1", Port: 1}
	for _, tc := range []struct {
		name string
		resp *discoveryv1.StreamBackendSetsResponse
		want string
	}{
		{"no base", &discoveryv1.StreamBackendSetsResponse{Deltas: []*discoveryv1.BackendSetDelta{{BaseVersion: "v1", Version: "v2", BackendSet: &discoveryv1.BackendSet{Name: "web"}}}},
			`set "web" on version "v1": no version of it held`},
		{"another base", delta("v0"), `the one held is "v1"`},
		{"out of bounds", delta("v1", &discoveryv1.BackendRun{BaseStart: 2, BaseCount: 2}), "backends[0] takes base backends 2 to 4 of 3"},
		{"both", delta("v1", &discoveryv1.BackendRun{BaseCount: 1}, &discoveryv1.BackendRun{BaseStart: 1, BaseCount: 1, Backends: []*discoveryv1.Backend{one}}),
			"backends[1] has both backends and base_count"},
	} {
		err := merge(tc.resp, bases)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: merge = %v, want an error containing %q", tc.name, err, tc.want)
		}
		if len(tc.resp.GetSets()) != 0 || len(tc.resp.GetDeltas()) != 1 {
			t.Errorf("%s: a refused merge changed the response: %v", tc.name, tc.resp)
		}
	}
	resp := delta("v1", &discoveryv1.BackendRun{Backends: []*discoveryv1.Backend{one}}, &discoveryv1.BackendRun{BaseStart: 1, BaseCount: 2})
	if err := merge(resp, bases); err != nil {
		t.Fatal(err)
	}
	want := &discoveryv1.BackendSet{Name: "api", Backends: []*discoveryv1.Backend{one, base.BackendSet.Backends[1], base.BackendSet.Backends[2]}}
	if len(resp.GetDeltas()) != 0 || len(resp.GetSets()) != 1 || !proto.Equal(resp.GetSets()[0].GetBackendSet(), want) || resp.GetSets()[0].GetVersion() != "v2" {
		t.Errorf("merged %v, want %v at v2", resp, want)
	}
}
