package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/controlplane/store"
	adminv1 "github.com/xlbproxy/xlb/gen/xlb/admin/v1"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
)

// DataPlanes is what ListDataPlanes reports; the discovery server implements it.
type DataPlanes interface {
	// DataPlanes returns every data plane that connected since the control plane started. The
	// server does not modify what it returns.
	DataPlanes() []*adminv1.DataPlane
}

// Store is where the server keeps backend sets: store.Store (a write-ahead log on one machine) or
// etcdstore.Store (replicas sharing etcd). Each returns errors that wrap store.ErrNotFound,
// store.ErrVersionMismatch and store.ErrUnavailable as their doc says; the server makes them gRPC
// codes (see the package doc).
type Store interface {
	// Put stores the validated set and returns its version; expected != nil makes it a
	// compare-and-set ("" meaning that the set must not exist). A put of a set identical to the
	// stored one changes nothing and returns the same version.
	Put(set *discoveryv1.BackendSet, expected *string) (string, error)
	// Get returns the set name.
	Get(name string) (resource.Versioned, error)
	// List returns every set, by name.
	List() []resource.Versioned
	// Delete removes the set name, with a compare-and-set as for Put.
	Delete(name string, expected *string) error
}

// versionBytesMax bounds an expected_version: a version is 32 hex digits (resource.Version), and
// a longer string cannot match one.
const versionBytesMax = 64

// Server implements adminv1.AdminServiceServer over a store.
type Server struct {
	adminv1.UnimplementedAdminServiceServer

	st   Store
	dps  DataPlanes // nil: no data planes
	load Load       // nil: no load reported
	log  hclog.Logger
}

// Load is what GetLoad reports, and each data plane's view of its backends' health that
// ListDataPlanes adds; the load aggregator implements it.
type Load interface {
	Load() *adminv1.GetLoadResponse
	Health(node string) ([]*loadv1.BackendHealth, time.Time)
}

// WithDataPlanes makes ListDataPlanes report dps (replicas.Registry: every replica's).
func (s *Server) WithDataPlanes(dps DataPlanes) *Server {
	s.dps = dps
	return s
}

// WithLoad makes GetLoad report l.
func (s *Server) WithLoad(l Load) *Server {
	s.load = l
	return s
}

// GetLoad returns the load reported by the data planes.
func (s *Server) GetLoad(context.Context, *adminv1.GetLoadRequest) (*adminv1.GetLoadResponse, error) {
	if s.load == nil {
		return &adminv1.GetLoadResponse{}, nil
	}
	return s.load.Load(), nil
}

// NewServer returns the AdminService of st. dps may be nil (ListDataPlanes then returns none), and
// log may be nil.
func NewServer(st Store, dps DataPlanes, log hclog.Logger) *Server {
	if st == nil {
		panic("admin: NewServer with a nil store")
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Server{st: st, dps: dps, log: log}
}

var _ adminv1.AdminServiceServer = (*Server)(nil)

// PutBackendSet validates the set and stores it, with a compare-and-set when expected_version is
// present.
func (s *Server) PutBackendSet(ctx context.Context, req *adminv1.PutBackendSetRequest) (*adminv1.PutBackendSetResponse, error) {
	set := req.GetBackendSet()
	if err := resource.Validate("backend_set", set); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := validateVersion("expected_version", req.ExpectedVersion); err != nil {
		return nil, err
	}
	var previous string
	if e, err := s.st.Get(set.GetName()); err == nil {
		previous = e.Version
	}
	version, err := s.st.Put(set, req.ExpectedVersion)
	if err != nil {
		return nil, s.storeError(ctx, "put", set.GetName(), err)
	}
	if version == previous {
		s.log.Debug("backend set put unchanged", "name", set.GetName(), "version", version, "peer", peerOf(ctx))
	} else {
		s.log.Info("backend set put", "name", set.GetName(), "version", version, "previous", previous,
			"backends", len(set.GetBackends()), "peer", peerOf(ctx))
	}
	return &adminv1.PutBackendSetResponse{Version: version}, nil
}

// GetBackendSet returns the set name.
func (s *Server) GetBackendSet(ctx context.Context, req *adminv1.GetBackendSetRequest) (*adminv1.GetBackendSetResponse, error) {
	if err := resource.ValidateName("name", req.GetName()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	e, err := s.st.Get(req.GetName())
	if err != nil {
		return nil, s.storeError(ctx, "get", req.GetName(), err)
	}
	return &adminv1.GetBackendSetResponse{BackendSet: versioned(e)}, nil
}

// ListBackendSets returns every set, by name.
func (s *Server) ListBackendSets(context.Context, *adminv1.ListBackendSetsRequest) (*adminv1.ListBackendSetsResponse, error) {
	entries := s.st.List()
	out := make([]*discoveryv1.VersionedBackendSet, len(entries))
	for i, e := range entries {
		out[i] = versioned(e)
	}
	return &adminv1.ListBackendSetsResponse{BackendSets: out}, nil
}

// DeleteBackendSet removes the set name, with a compare-and-set when expected_version is present.
func (s *Server) DeleteBackendSet(ctx context.Context, req *adminv1.DeleteBackendSetRequest) (*adminv1.DeleteBackendSetResponse, error) {
	name := req.GetName()
	if err := resource.ValidateName("name", name); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := validateVersion("expected_version", req.ExpectedVersion); err != nil {
		return nil, err
	}
	var previous string
	if e, err := s.st.Get(name); err == nil {
		previous = e.Version
	}
	if err := s.st.Delete(name, req.ExpectedVersion); err != nil {
		return nil, s.storeError(ctx, "delete", name, err)
	}
	s.log.Info("backend set deleted", "name", name, "version", previous, "peer", peerOf(ctx))
	return &adminv1.DeleteBackendSetResponse{}, nil
}

// ListDataPlanes returns what DataPlanes reports.
func (s *Server) ListDataPlanes(context.Context, *adminv1.ListDataPlanesRequest) (*adminv1.ListDataPlanesResponse, error) {
	if s.dps == nil {
		return &adminv1.ListDataPlanesResponse{}, nil
	}
	dps := s.dps.DataPlanes()
	if s.load != nil {
		for _, dp := range dps { // made for this call: DataPlanes builds them anew
			if len(dp.GetBackendHealth()) > 0 {
				continue // DataPlanes knew it (another replica's data plane): it is that replica's view
			}
			if h, at := s.load.Health(dp.GetNodeId()); len(h) > 0 {
				dp.BackendHealth, dp.BackendHealthAt = h, timestamppb.New(at)
			}
		}
	}
	return &adminv1.ListDataPlanesResponse{DataPlanes: dps}, nil
}

// versioned is the wire form of a store entry. The set is shared, not copied: the store never
// modifies it, and gRPC only reads it.
func versioned(e resource.Versioned) *discoveryv1.VersionedBackendSet {
	return &discoveryv1.VersionedBackendSet{BackendSet: e.Set, Version: e.Version}
}

// validateVersion checks an expected version: absent, empty, or lowercase hex of at most
// versionBytesMax bytes.
func validateVersion(field string, v *string) error {
	if v == nil {
		return nil
	}
	bad := len(*v) > versionBytesMax
	for i := 0; i < len(*v) && !bad; i++ {
		c := (*v)[i]
		bad = !('0' <= c && c <= '9' || 'a' <= c && c <= 'f')
	}
	if bad {
		return status.Error(codes.InvalidArgument, (&resource.Error{
			Field: field,
			Msg:   fmt.Sprintf("%.80q: want a version as PutBackendSet returns it (lowercase hex), or empty for a set that must not exist", *v),
		}).Error())
	}
	return nil
}

// storeError is the status of an error of the store from op on the set name.
func (s *Server) storeError(ctx context.Context, op, name string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Errorf(codes.NotFound, "backend set %q does not exist", name)
	case errors.Is(err, store.ErrVersionMismatch):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, store.ErrPermissionDenied):
		s.log.Error("the store refused the write: no permission", "op", op, "name", name, "peer", peerOf(ctx), "error", err)
		return status.Errorf(codes.PermissionDenied, "%s backend set %q: %v", op, name, err)
	case errors.Is(err, store.ErrUnavailable):
		s.log.Warn("the store is unavailable", "op", op, "name", name, "peer", peerOf(ctx), "error", err)
		return status.Errorf(codes.Unavailable, "%s backend set %q: %v", op, name, err)
	}
	s.log.Error("the store failed", "op", op, "name", name, "peer", peerOf(ctx), "error", err)
	return status.Errorf(codes.Internal, "%s backend set %q: %v", op, name, err)
}

// peerOf is the address of the client of ctx's call, for logs.
func peerOf(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
