// Package rpc is the gRPC plumbing of xlb's processes: the control plane's server with its TLS,
// authentication and node binding (NewServer, ServerSecurity), how a data plane dials its control
// plane (ClientSecurity), and the unix sockets of a state directory, bound at a name of their own
// process and published by a rename when ready (UnixListener), so that an upgrade never leaves a
// socket path without a server.
package rpc

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/xlbproxy/xlb/controlplane/resource"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
)

// The security of the control plane's gRPC server:
//
//   - Listening on an address that is not loopback (or a unix socket) requires TLS (--tls-cert and
//     --tls-key), unless --insecure says plaintext on purpose.
//   - With --client-ca, clients may present certificates signed by it. Data planes must then
//     present one: the data planes' services (DiscoveryService, LoadReportingService) refuse a
//     caller without a verified client certificate. Without --client-ca they are open: off
//     loopback, give --client-ca.
//   - With --client-ca, a data plane's node id must be a name of its certificate (its CN, a DNS
//     or a URI SAN): a stream that says another is PERMISSION_DENIED and logged.
//   - With --admin-token-file or --client-ca, the AdminService, and any other service registered
//     but those named here, requires a caller to present the bearer token ("authorization: Bearer
//     TOKEN") or a verified client certificate.
//   - The health service and reflection are open: they tell nothing about backends.
//   - A refused call gets UNAUTHENTICATED and is logged at warn with the peer and the reason.

// ServerSecurity is how the control plane's server authenticates.
type ServerSecurity struct {
	CertFile, KeyFile string // the server's certificate
	ClientCAFile      string // verifies client certificates
	AdminTokenFile    string // holds the admin bearer token
	Insecure          bool   // allows plaintext on a non-loopback address
}

// Services of the control plane, as gRPC full method prefixes.
const (
	discoveryService = "/xlb.discovery.v1.DiscoveryService/"
	loadService      = "/xlb.load.v1.LoadReportingService/"
	healthService    = "/grpc.health.v1.Health/"
	reflectionPrefix = "/grpc.reflection."
)

// ServerWindowBytes is the HTTP/2 flow-control window of the control plane's gRPC server, per
// stream and per connection: how much each peer may send it before it reads. A fixed window turns
// off grpc-go's BDP estimation, which pings the peer after the first data it receives since the
// last ping: on a stream that carries one small ACK per push, that is a ping and its answer per
// push per data plane, 40 % of the push's time at 1,000 data planes (bench/RESULTS.md). 1 MiB
// lets a put of the largest set through at 1 MiB per round trip.
const ServerWindowBytes = 1 << 20

// NewServer makes the control plane's gRPC server for listening on addr ("unix:PATH" for a unix
// socket): TLS and authentication as sec says, the health service (SERVING) and reflection.
func NewServer(addr string, sec ServerSecurity, log hclog.Logger) (*grpc.Server, *health.Server, error) {
	var opts []grpc.ServerOption
	a := &authenticator{log: log}
	switch {
	case sec.CertFile != "" || sec.KeyFile != "":
		if sec.CertFile == "" || sec.KeyFile == "" {
			return nil, nil, errors.New("--tls-cert and --tls-key go together")
		}
		cert, err := tls.LoadX509KeyPair(sec.CertFile, sec.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("TLS certificate: %w", err)
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if sec.ClientCAFile != "" {
			pool, err := loadPool(sec.ClientCAFile)
			if err != nil {
				return nil, nil, fmt.Errorf("--client-ca: %w", err)
			}
			cfg.ClientCAs = pool
			cfg.ClientAuth = tls.VerifyClientCertIfGiven
			a.clientCerts = true
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	case sec.ClientCAFile != "":
		return nil, nil, errors.New("--client-ca needs --tls-cert and --tls-key")
	case !IsLocal(addr) && !sec.Insecure:
		return nil, nil, fmt.Errorf("listening on %s, which is not loopback, needs --tls-cert and --tls-key (or --insecure for plaintext)", addr)
	}
	if sec.AdminTokenFile != "" {
		b, err := os.ReadFile(sec.AdminTokenFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--admin-token-file: %w", err)
		}
		if a.token = strings.TrimSpace(string(b)); a.token == "" {
			return nil, nil, fmt.Errorf("--admin-token-file %s is empty", sec.AdminTokenFile)
		}
	}
	opts = append(opts, grpc.ChainUnaryInterceptor(a.unary), grpc.ChainStreamInterceptor(a.stream),
		// A put or a push of the largest set that resource.Validate allows, and no message
		// limit below it anywhere.
		grpc.MaxRecvMsgSize(resource.MessageBytesMax), grpc.MaxSendMsgSize(resource.MessageBytesMax),
		grpc.InitialWindowSize(ServerWindowBytes), grpc.InitialConnWindowSize(ServerWindowBytes))
	s := grpc.NewServer(opts...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s, hs, nil
}

// IsLocal tells whether addr is a unix socket or a loopback address. An empty host (every
// interface) is not.
func IsLocal(addr string) bool {
	if strings.HasPrefix(addr, "unix:") {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// authenticator enforces who may call what.
type authenticator struct {
	log         hclog.Logger
	clientCerts bool   // data planes must present a verified certificate; admins may
	token       string // admins may present it instead
}

func (a *authenticator) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a *authenticator) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	if a.clientCerts && (strings.HasPrefix(info.FullMethod, discoveryService) || strings.HasPrefix(info.FullMethod, loadService)) {
		ss = &nodeBoundStream{ServerStream: ss, a: a, method: info.FullMethod, names: certNames(ss.Context())}
	}
	return h(srv, ss)
}

// nodeBoundStream is a data plane's stream when client certificates are verified: every node id
// it sends must be a name of its certificate (its CN, a DNS or a URI SAN), so that a data plane
// cannot speak as another, NACK that one's updates or forge its load.
type nodeBoundStream struct {
	grpc.ServerStream
	a      *authenticator
	method string
	names  []string
}

func (s *nodeBoundStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	var field, id string
	switch req := m.(type) {
	case *discoveryv1.StreamBackendSetsRequest:
		field, id = "node.id", req.GetNode().GetId() // on the first request; later ones may leave it out
	case *loadv1.StreamLoadStatsRequest:
		field, id = "node_id", req.GetNodeId()
	}
	if id == "" || slices.Contains(s.names, id) {
		return nil
	}
	why := fmt.Sprintf("%s %q is not a name of the client certificate (its CN and SANs: %q)", field, id, s.names)
	from := "unknown"
	if p, ok := peer.FromContext(s.Context()); ok {
		from = p.Addr.String()
	}
	s.a.log.Warn("refused a data plane speaking for another node", "method", s.method, "peer", from, "reason", why)
	return status.Error(codes.PermissionDenied, why)
}

// certNames are the names of the caller's verified client certificate: its CN, DNS and URI SANs.
func certNames(ctx context.Context) []string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	c := ti.State.VerifiedChains[0][0]
	names := []string{}
	if c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	names = append(names, c.DNSNames...)
	for _, u := range c.URIs {
		names = append(names, u.String())
	}
	return names
}

// check returns nil when the caller of method may call it, else an UNAUTHENTICATED status, logged.
func (a *authenticator) check(ctx context.Context, method string) error {
	var why string
	switch {
	case strings.HasPrefix(method, healthService), strings.HasPrefix(method, reflectionPrefix):
	case strings.HasPrefix(method, discoveryService), strings.HasPrefix(method, loadService):
		if a.clientCerts && !verifiedCert(ctx) {
			why = "a data plane must present a client certificate signed by --client-ca"
		}
	default: // the AdminService, and whatever else is registered: denied unless named above
		if (a.clientCerts || a.token != "") && !verifiedCert(ctx) && !a.tokenOK(ctx) {
			switch {
			case a.token != "" && a.clientCerts:
				why = "an admin call needs the bearer token or a client certificate signed by --client-ca"
			case a.token != "":
				why = "an admin call needs the bearer token (authorization: Bearer TOKEN)"
			default:
				why = "an admin call needs a client certificate signed by --client-ca"
			}
		}
	}
	if why == "" {
		return nil
	}
	from := "unknown"
	if p, ok := peer.FromContext(ctx); ok {
		from = p.Addr.String()
	}
	a.log.Warn("refused an unauthenticated call", "method", method, "peer", from, "reason", why)
	return status.Error(codes.Unauthenticated, why)
}

func verifiedCert(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	return ok && len(ti.State.VerifiedChains) > 0
}

func (a *authenticator) tokenOK(ctx context.Context) bool {
	if a.token == "" {
		return false
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok && subtle.ConstantTimeCompare([]byte(t), []byte(a.token)) == 1 {
			return true
		}
	}
	return false
}

// ClientSecurity is how a data plane connects to its control plane.
type ClientSecurity struct {
	CAFile            string // verifies the control plane's certificate; TLS when set
	CertFile, KeyFile string // the data plane's client certificate
	ServerName        string // overrides the name verified
	Insecure          bool   // allows plaintext to a non-loopback control plane
}

// DialCreds returns the transport credentials for reaching the control plane at addr.
func (c ClientSecurity) DialCreds(addr string) (credentials.TransportCredentials, error) {
	if c.CAFile == "" && c.CertFile == "" {
		if !IsLocal(addr) && !c.Insecure {
			return nil, fmt.Errorf("the control plane %s is not loopback: give --tls-ca (TLS) or --insecure (plaintext)", addr)
		}
		return insecure.NewCredentials(), nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(cfg), nil
}
