package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Probe waits until a member of cfg's endpoints answers a Status request, within cfg.DialTimeout,
// and otherwise returns why none did: the last error of gRPC's connection attempts (a TLS
// handshake that failed, a connection refused), and what TLS said of this client if etcd refused
// it (tlsRefusal). A clientv3 call would say no more than "context deadline exceeded" (it
// replaces a deadline's status with the context's error), hence the request on the client's gRPC
// connection itself. cfg has no credentials: an authentication over a connection that cannot be
// made would hide the reason too. Its messages name the flags of `xlb controlplane` that
// would fix what failed. A member that answers with an error (etcd with authentication
// enabled refuses a Status without a user) answered: the connection works.
func Probe(cfg clientv3.Config) error {
	endpoints := strings.Join(cfg.Endpoints, ",")
	cli, err := clientv3.New(cfg)
	if err != nil {
		return fmt.Errorf("etcd client of %s: %w", endpoints, err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DialTimeout)
	defer cancel()
	_, err = etcdserverpb.NewMaintenanceClient(cli.ActiveConnection()).Status(ctx, &etcdserverpb.StatusRequest{}, grpc.WaitForReady(true))
	switch status.Code(err) {
	case codes.OK:
		return nil
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown:
	default:
		return nil // an answer of etcd's
	}
	msg := status.Convert(err).Message()
	if cfg.TLS != nil && !strings.Contains(msg, "tls: ") { // else gRPC says what TLS did
		for _, e := range cfg.Endpoints {
			if strings.HasPrefix(e, "https://") {
				if r := tlsRefusal(e, cfg.TLS, tlsRefusalWait); r != "" {
					msg += "; " + r
				}
				break
			}
		}
	}
	return fmt.Errorf("etcd (%s): no member answered within --etcd-dial-timeout %v: %s", endpoints, cfg.DialTimeout, msg)
}

// tlsRefusalWait bounds tlsRefusal's connection, handshake, and wait for an alert after it.
const tlsRefusalWait = time.Second

// tlsRefusal makes a TLS connection to endpoint, an https URL, with tc, within limit, and returns
// what TLS said if the handshake failed or etcd sent an alert right after it; "" if neither
// (TLS works, or endpoint cannot be reached: gRPC's error says that). Under TLS 1.3 a server
// checks the client's certificate after the client's side of the handshake is done: a member
// that requires one sends "certificate required" then, which gRPC, writing its preface at once,
// often sees only as a broken pipe. tlsRefusal writes nothing, so the alert is what it reads.
func tlsRefusal(endpoint string, tc *tls.Config, limit time.Duration) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	d := &tls.Dialer{Config: tc.Clone()}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err == nil {
		defer conn.Close()
		deadline, _ := ctx.Deadline()
		conn.SetReadDeadline(deadline)
		_, err = conn.Read(make([]byte, 1))
	}
	var opErr *net.OpError
	switch {
	case err == nil, errors.Is(err, context.DeadlineExceeded), errors.As(err, &opErr) && opErr.Op != "remote error":
		return "" // etcd sent data, or it is not TLS that failed (a timeout: etcd waits for the client)
	case errors.As(err, &opErr):
		return fmt.Sprintf("TLS with %s: %v (etcd refused this client's certificate, or asks for one: --etcd-cert, --etcd-key)", u.Host, err)
	}
	return fmt.Sprintf("TLS with %s: %v", u.Host, err)
}
