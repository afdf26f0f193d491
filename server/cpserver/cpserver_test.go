package cpserver

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xlbproxy/xlb/controlplane/store"
	adminv1 "github.com/xlbproxy/xlb/gen/xlb/admin/v1"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
)

// TestServices: the services built over a store answer on a real gRPC server: the admin API
// lists the store's sets, a put reaches a data plane's discovery stream, and the data plane shows
// in ListDataPlanes; the load service takes a stream.
func TestServices(t *testing.T) {
	st, err := store.Open("", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	web := &discoveryv1.BackendSet{Name: "web", Policy: discoveryv1.Policy_POLICY_ROUND_ROBIN,
		Backends: []*discoveryv1.Backend{{Id: "a", Address: "127.0.0.1", Port: 8081, Weight: 1}}}
	if _, err := st.Put(web, nil); err != nil {
		t.Fatal(err)
	}
	s := New(st, Config{Debounce: time.Millisecond})
	defer s.Close()
	srv := grpc.NewServer()
	s.Register(srv)
	for _, name := range []string{"xlb.discovery.v1.DiscoveryService", "xlb.load.v1.LoadReportingService", "xlb.admin.v1.AdminService"} {
		if _, ok := srv.GetServiceInfo()[name]; !ok {
			t.Errorf("%s is not registered", name)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	admin := adminv1.NewAdminServiceClient(conn)
	list, err := admin.ListBackendSets(ctx, &adminv1.ListBackendSetsRequest{})
	if err != nil || len(list.GetBackendSets()) != 1 || list.GetBackendSets()[0].GetBackendSet().GetName() != "web" {
		t.Fatalf("ListBackendSets: %v, %v; want web", list, err)
	}
	stream, err := discoveryv1.NewDiscoveryServiceClient(conn).StreamBackendSets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv1.StreamBackendSetsRequest{Node: &discoveryv1.Node{Id: "dp1"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil || len(resp.GetSets()) != 1 || resp.GetSets()[0].GetBackendSet().GetName() != "web" {
		t.Fatalf("first response %v, %v; want web", resp, err)
	}
	dps, err := admin.ListDataPlanes(ctx, &adminv1.ListDataPlanesRequest{})
	if err != nil || len(dps.GetDataPlanes()) != 1 || dps.GetDataPlanes()[0].GetNodeId() != "dp1" {
		t.Fatalf("ListDataPlanes: %v, %v; want dp1", dps, err)
	}
	lrs, err := loadv1.NewLoadReportingServiceClient(conn).StreamLoadStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lrs.Recv(); err != nil {
		t.Fatalf("the load service did not answer a stream: %v", err)
	}
}
