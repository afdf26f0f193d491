// Package localadmin is a data plane's DataPlaneAdminService, served by its supervisor on the
// state directory's admin socket (mode 0600: whoever may open it is trusted): Upgrade starts a
// binary upgrade and answers once the new binary is ready or has failed, Status says what the
// supervisor serves. The service only carries requests to the supervisor's loop and back; it is
// the one place of the data plane's server that turns outcomes into gRPC status codes:
//
//	an upgrade already in progress              ABORTED
//	the new binary could not start, exited, or
//	said it could not go on                     FAILED_PRECONDITION
//	the new binary was not ready in time        DEADLINE_EXCEEDED
//	anything else the supervisor could not do   INTERNAL
//	the caller gave up first                    CANCELLED or DEADLINE_EXCEEDED
package localadmin

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	dataplanev1 "github.com/xlbproxy/xlb/gen/xlb/dataplane/v1"
	"github.com/xlbproxy/xlb/server/upgrade"
)

// Supervisor is the supervisor's side of the service. Each call is answered by the supervisor's
// loop; it returns ctx's error when ctx ends first.
type Supervisor interface {
	// Upgrade upgrades to the binary at the supervisor's path, and returns the new supervisor's
	// pid and version once it is ready, or an *upgrade.Error.
	Upgrade(ctx context.Context) (pid int, version string, err error)
	// Status is what the supervisor serves now.
	Status(ctx context.Context) (*dataplanev1.StatusResponse, error)
}

var codeOf = map[upgrade.Kind]codes.Code{upgrade.Internal: codes.Internal, upgrade.Busy: codes.Aborted,
	upgrade.Failed: codes.FailedPrecondition, upgrade.NotReady: codes.DeadlineExceeded}

// Register registers the service of s on srv.
func Register(srv grpc.ServiceRegistrar, s Supervisor) {
	dataplanev1.RegisterDataPlaneAdminServiceServer(srv, service{s: s})
}

type service struct {
	dataplanev1.UnimplementedDataPlaneAdminServiceServer
	s Supervisor
}

func (a service) Upgrade(ctx context.Context, _ *dataplanev1.UpgradeRequest) (*dataplanev1.UpgradeResponse, error) {
	pid, version, err := a.s.Upgrade(ctx)
	if err != nil {
		return nil, statusOf(err)
	}
	return &dataplanev1.UpgradeResponse{Pid: int32(pid), Version: version}, nil
}

func (a service) Status(ctx context.Context, _ *dataplanev1.StatusRequest) (*dataplanev1.StatusResponse, error) {
	res, err := a.s.Status(ctx)
	if err != nil {
		return nil, statusOf(err)
	}
	return res, nil
}

// statusOf is the gRPC status of an outcome of the supervisor.
func statusOf(err error) error {
	var ue *upgrade.Error
	switch {
	case errors.As(err, &ue):
		return status.Error(codeOf[ue.Kind], ue.Msg)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}
