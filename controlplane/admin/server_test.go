package admin

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/controlplane/store"
	adminv1 "github.com/xlbproxy/xlb/gen/xlb/admin/v1"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	"github.com/xlbproxy/xlb/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// dataPlanesFunc is a DataPlanes made of a func.
type dataPlanesFunc func() []*adminv1.DataPlane

func (f dataPlanesFunc) DataPlanes() []*adminv1.DataPlane { return f() }

type fixture struct {
	st     *store.Store
	client adminv1.AdminServiceClient
	logs   *testutil.SyncBuffer
}

// serve runs a Server of a store in t.TempDir, with dps, on a loopback port, and returns a client
// of it.
func serve(t *testing.T, dps DataPlanes) *fixture {
	t.Helper()
	st, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	logs := new(testutil.SyncBuffer)
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})
	gs := grpc.NewServer()
	adminv1.RegisterAdminServiceServer(gs, NewServer(st, dps, log))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fixture{st: st, client: adminv1.NewAdminServiceClient(conn), logs: logs}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testSet(name string, port uint32) *discoveryv1.BackendSet {
	return &discoveryv1.BackendSet{
		Name:     name,
		Backends: []*discoveryv1.Backend{{Id: "a", Address: "10.0.0.1", Port: port}, {Id: "b", Address: "backend.example", Port: 8080, Weight: 3}},
	}
}

func ptr(s string) *string { return &s }

// wantCode checks that err has code and a message that holds every one of says.
func wantCode(t *testing.T, what string, err error, code codes.Code, says ...string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("%s: %v, want %v", what, err, code)
	}
	for _, s := range says {
		if !strings.Contains(st.Message(), s) {
			t.Fatalf("%s: the message %q does not say %q", what, st.Message(), s)
		}
	}
}

func TestPutGetListDelete(t *testing.T) {
	f := serve(t, nil)
	ctx := ctxT(t)
	web, api := testSet("web", 80), testSet("api", 81)
	put, err := f.client.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: web})
	if err != nil {
		t.Fatal(err)
	}
	if put.Version != resource.Version(web) {
		t.Fatalf("version %q, want resource.Version %q", put.Version, resource.Version(web))
	}
	if _, err := f.client.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: api, ExpectedVersion: ptr("")}); err != nil {
		t.Fatal(err)
	}
	got, err := f.client.GetBackendSet(ctx, &adminv1.GetBackendSetRequest{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.BackendSet.BackendSet, web) || got.BackendSet.Version != put.Version {
		t.Fatalf("get web = %v", got)
	}
	list, err := f.client.ListBackendSets(ctx, &adminv1.ListBackendSetsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.BackendSets); n != 2 || list.BackendSets[0].BackendSet.Name != "api" || list.BackendSets[1].Version != put.Version {
		t.Fatalf("list = %v, want api then web", list.BackendSets)
	}
	again, err := f.client.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: web, ExpectedVersion: ptr(put.Version)})
	if err != nil || again.Version != put.Version {
		t.Fatalf("identical put: %v, %v; want version %q", again, err, put.Version)
	}
	web2 := testSet("web", 90)
	put2, err := f.client.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: web2, ExpectedVersion: ptr(put.Version)})
	if err != nil || put2.Version != resource.Version(web2) {
		t.Fatalf("compare-and-set put: %v, %v", put2, err)
	}
	if _, err := f.client.DeleteBackendSet(ctx, &adminv1.DeleteBackendSetRequest{Name: "web", ExpectedVersion: ptr(put2.Version)}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.DeleteBackendSet(ctx, &adminv1.DeleteBackendSetRequest{Name: "api"}); err != nil {
		t.Fatal(err)
	}
	list, err = f.client.ListBackendSets(ctx, &adminv1.ListBackendSetsRequest{})
	if err != nil || len(list.BackendSets) != 0 {
		t.Fatalf("list after deleting all: %v, %v", list, err)
	}

	logs := f.logs.String()
	for _, want := range []string{
		"[INFO]  backend set put: name=web version=" + put.Version + " previous=\"\"",
		"[INFO]  backend set put: name=web version=" + put2.Version + " previous=" + put.Version,
		"[DEBUG] backend set put unchanged: name=web version=" + put.Version,
		"[INFO]  backend set deleted: name=web version=" + put2.Version,
		"[INFO]  backend set deleted: name=api version=" + resource.Version(api),
		"peer=127.0.0.1:",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log does not say %q:\n%s", want, logs)
		}
	}
}

func TestInvalidArgument(t *testing.T) {
	f := serve(t, nil)
	ctx := ctxT(t)
	badPort := testSet("web", 0)
	cases := []struct {
		name string
		call func() error
		says string
	}{
		{"put without a set", func() error {
			_, err := f.client.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{})
			return err
		}, "backend_set: required"},
		{"put with a bad name", func() error {
			_, err := f.client.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: testSet("a/b", 80)})
			return err
		}, "backend_set.name: "},
		{"put with a bad port", func() error {
			_, err := f.client.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: badPort})
			return err
		}, "backend_set.backends[0].port: want 1 to 65535, got 0"},
		{"put with a bad expected version", func() error {
			_, err := f.client.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: testSet("web", 80), ExpectedVersion: ptr("v1")})
			return err
		}, "expected_version: "},
		{"put with a long expected version", func() error {
			_, err := f.client.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: testSet("web", 80), ExpectedVersion: ptr(strings.Repeat("a", 65))})
			return err
		}, "expected_version: "},
		{"get without a name", func() error {
			_, err := f.client.GetBackendSet(ctx, &adminv1.GetBackendSetRequest{})
			return err
		}, "name: required"},
		{"get with a bad name", func() error {
			_, err := f.client.GetBackendSet(ctx, &adminv1.GetBackendSetRequest{Name: "web set"})
			return err
		}, "name: \"web set\""},
		{"delete without a name", func() error {
			_, err := f.client.DeleteBackendSet(ctx, &adminv1.DeleteBackendSetRequest{})
			return err
		}, "name: required"},
		{"delete with a bad expected version", func() error {
			_, err := f.client.DeleteBackendSet(ctx, &adminv1.DeleteBackendSetRequest{Name: "web", ExpectedVersion: ptr("XYZ")})
			return err
		}, "expected_version: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantCode(t, c.name, c.call(), codes.InvalidArgument, c.says)
		})
	}
	if n := len(f.st.List()); n != 0 {
		t.Fatalf("refused requests stored %d sets", n)
	}
}

func TestNotFound(t *testing.T) {
	f := serve(t, nil)
	ctx := ctxT(t)
	_, err := f.client.GetBackendSet(ctx, &adminv1.GetBackendSetRequest{Name: "web"})
	wantCode(t, "get", err, codes.NotFound, `"web"`)
	_, err = f.client.DeleteBackendSet(ctx, &adminv1.DeleteBackendSetRequest{Name: "web"})
	wantCode(t, "delete", err, codes.NotFound, `"web"`)
	_, err = f.client.DeleteBackendSet(ctx, &adminv1.DeleteBackendSetRequest{Name: "web", ExpectedVersion: ptr("")})
	wantCode(t, "delete with expected \"\"", err, codes.NotFound, `"web"`)
}

func TestFailedPrecondition(t *testing.T) {
	f := serve(t, nil)
	ctx := ctxT(t)
	v1 := resource.Version(testSet("web", 80))
	stale := resource.Version(testSet("web", 1))
	_, err := f.client.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: testSet("web", 80), ExpectedVersion: ptr(stale)})
	wantCode(t, "put of a missing set with a version", err, codes.FailedPrecondition, "current version is none")
	if _, err := f.client.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: testSet("web", 80)}); err != nil {
		t.Fatal(err)
	}
	_, err = f.client.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: testSet("web", 81), ExpectedVersion: ptr("")})
	wantCode(t, `put with expected ""`, err, codes.FailedPrecondition, "current version is \""+v1+"\"")
	_, err = f.client.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: testSet("web", 81), ExpectedVersion: ptr(stale)})
	wantCode(t, "put with a stale version", err, codes.FailedPrecondition, "current version is \""+v1+"\"", stale)
	_, err = f.client.DeleteBackendSet(ctx, &adminv1.DeleteBackendSetRequest{Name: "web", ExpectedVersion: ptr(stale)})
	wantCode(t, "delete with a stale version", err, codes.FailedPrecondition, "current version is \""+v1+"\"")
	if e, err := f.st.Get("web"); err != nil || e.Version != v1 {
		t.Fatalf("after refused changes web is %v, %v; want version %s", e, err, v1)
	}
}

func TestInternal(t *testing.T) {
	f := serve(t, nil)
	ctx := ctxT(t)
	f.st.Close()
	_, err := f.client.PutBackendSet(ctx, &adminv1.PutBackendSetRequest{BackendSet: testSet("web", 80)})
	wantCode(t, "put to a closed store", err, codes.Internal, "closed")
	if !strings.Contains(f.logs.String(), "[ERROR] the store failed: op=put name=web") {
		t.Fatalf("the failure is not logged:\n%s", f.logs)
	}
}

func TestListDataPlanes(t *testing.T) {
	t.Run("none", func(t *testing.T) {
		f := serve(t, nil)
		resp, err := f.client.ListDataPlanes(ctxT(t), &adminv1.ListDataPlanesRequest{})
		if err != nil || len(resp.DataPlanes) != 0 {
			t.Fatalf("without DataPlanes: %v, %v", resp, err)
		}
	})
	t.Run("some", func(t *testing.T) {
		since := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
		want := []*adminv1.DataPlane{{
			NodeId: "node-1", Build: "xlb 1.0", Connected: true, ConnectedSince: timestamppb.New(since), Generation: 7,
			Sets: []*adminv1.SetStatus{
				{Name: "web", AppliedVersion: "aa"},
				{Name: "api", AppliedVersion: "bb", LastNack: &adminv1.Nack{Version: "cc", Message: "backend_set.backends[0].tls: no TLS here", At: timestamppb.New(since)}},
			},
			Workers: []*discoveryv1.WorkerStatus{{Slot: 0, Pid: 42, ObservedGeneration: 7}},
		}, {
			NodeId: "node-2", DisconnectedAt: timestamppb.New(since),
		}}
		var calls atomic.Int32
		f := serve(t, dataPlanesFunc(func() []*adminv1.DataPlane { calls.Add(1); return want }))
		resp, err := f.client.ListDataPlanes(ctxT(t), &adminv1.ListDataPlanesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.DataPlanes) != len(want) || calls.Load() != 1 {
			t.Fatalf("%d data planes from %d calls, want %d from 1", len(resp.DataPlanes), calls.Load(), len(want))
		}
		for i := range want {
			if !proto.Equal(resp.DataPlanes[i], want[i]) {
				t.Fatalf("data plane %d = %v, want %v", i, resp.DataPlanes[i], want[i])
			}
		}
	})
}
