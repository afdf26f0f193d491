package localadmin

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	dataplanev1 "github.com/xlbproxy/xlb/gen/xlb/dataplane/v1"
	"github.com/xlbproxy/xlb/server/upgrade"
)

// answers is a Supervisor that answers with what it is given, or waits for ctx when block is set.
type answers struct {
	err   error
	block bool
}

func (a answers) Upgrade(ctx context.Context) (int, string, error) {
	if a.block {
		<-ctx.Done()
		return 0, "", ctx.Err()
	}
	if a.err != nil {
		return 0, "", a.err
	}
	return 42, "v2", nil
}

func (a answers) Status(ctx context.Context) (*dataplanev1.StatusResponse, error) {
	if a.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &dataplanev1.StatusResponse{Pid: 7, Generation: 3}, a.err
}

// TestCodes: each outcome of the supervisor reaches a caller on a real gRPC connection as the code
// of the package's table, with the supervisor's words.
func TestCodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    answers
		code codes.Code
		msg  string
	}{
		{"ready", answers{}, codes.OK, ""},
		{"busy", answers{err: upgrade.Errorf(upgrade.Busy, "an upgrade is in progress: pid %d is starting", 9)}, codes.Aborted, "an upgrade is in progress: pid 9 is starting"},
		{"failed", answers{err: upgrade.Errorf(upgrade.Failed, "the new binary exited before it was ready: exit status 1")}, codes.FailedPrecondition, "exit status 1"},
		{"not ready", answers{err: upgrade.Errorf(upgrade.NotReady, "the new binary was not ready within 2s")}, codes.DeadlineExceeded, "not ready within 2s"},
		{"internal", answers{err: upgrade.Errorf(upgrade.Internal, "readiness pipe: too many open files")}, codes.Internal, "readiness pipe"},
		{"another error", answers{err: errors.New("odd")}, codes.Internal, "odd"},
		{"the caller gives up", answers{block: true}, codes.DeadlineExceeded, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := serve(t, tc.s)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if tc.s.block {
				ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
			}
			defer cancel()
			res, err := client.Upgrade(ctx, &dataplanev1.UpgradeRequest{})
			st := status.Convert(err)
			if st.Code() != tc.code || tc.msg != "" && !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("Upgrade: %v, want %v with %q", err, tc.code, tc.msg)
			}
			if tc.code == codes.OK && (res.GetPid() != 42 || res.GetVersion() != "v2") {
				t.Fatalf("Upgrade: %v, want pid 42 and v2", res)
			}
		})
	}
	t.Run("status", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := serve(t, answers{}).Status(ctx, &dataplanev1.StatusRequest{})
		if err != nil || res.GetPid() != 7 || res.GetGeneration() != 3 {
			t.Fatalf("Status: %v, %v", res, err)
		}
	})
}

// serve serves the service of s on a loopback port and returns a client of it.
func serve(t *testing.T, s Supervisor) dataplanev1.DataPlaneAdminServiceClient {
	t.Helper()
	srv := grpc.NewServer()
	Register(srv, s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return dataplanev1.NewDataPlaneAdminServiceClient(conn)
}
