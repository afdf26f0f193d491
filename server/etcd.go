package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/xlbproxy/xlb/controlplane/etcdstore"
)

// etcdPasswordEnv is where `xlb controlplane` takes the etcd password from when --etcd-password
// is not given, so that it need not show in the process list.
const etcdPasswordEnv = "XLB_ETCD_PASSWORD"

// The defaults of the etcd flags of `xlb controlplane`.
const (
	defaultEtcdDialTimeout = 5 * time.Second
	defaultEtcdTimeout     = etcdstore.DefaultTimeout
)

// etcdFlags are how `xlb controlplane --store etcd` reaches etcd. The zero value of each field
// means the default its flag documents.
type etcdFlags struct {
	endpoints     []string // required with --store etcd
	prefix        string   // "" means etcdstore.DefaultPrefix
	caFile        string   // "": the system's roots when the endpoints are https
	certFile      string   // with keyFile: a client certificate
	keyFile       string
	username      string // "": no authentication
	password      string // from etcdPasswordEnv when not given
	dialTimeout   time.Duration
	timeout       time.Duration // of each request
	replicaID     string        // "": host name and pid
	passwordGiven bool
}

// check validates f, naming the flag at fault.
func (f *etcdFlags) check() error {
	if len(f.endpoints) == 0 {
		return errors.New("--etcd-endpoints is required with --store etcd")
	}
	for _, e := range f.endpoints {
		if e == "" {
			return errors.New("--etcd-endpoints: an empty endpoint")
		}
	}
	if err := etcdstore.CheckPrefix("--etcd-prefix", f.prefix); err != nil {
		return err
	}
	if (f.certFile == "") != (f.keyFile == "") {
		return errors.New("--etcd-cert and --etcd-key go together")
	}
	if f.password != "" && f.username == "" {
		return errors.New("--etcd-password (or " + etcdPasswordEnv + ") needs --etcd-username")
	}
	if f.dialTimeout <= 0 {
		return errors.New("--etcd-dial-timeout must be positive")
	}
	if f.timeout <= 0 {
		return errors.New("--etcd-timeout must be positive")
	}
	if strings.Contains(f.replicaID, "/") {
		return fmt.Errorf("--replica-id %q: must not contain /", f.replicaID)
	}
	return nil
}

// client returns a client of the etcd cluster f names, once a member answered it (within
// --etcd-dial-timeout, see probe) and, with --etcd-username, authenticated it (within
// --etcd-dial-timeout too).
func (f *etcdFlags) client() (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   f.endpoints,
		DialTimeout: f.dialTimeout,
		// The store and the registry log what matters of etcd on the control plane's logger.
		Logger: zap.NewNop(),
	}
	if f.caFile != "" || f.certFile != "" || anyHTTPS(f.endpoints) {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if f.caFile != "" {
			pem, err := os.ReadFile(f.caFile)
			if err != nil {
				return nil, fmt.Errorf("--etcd-cacert: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--etcd-cacert %s: no PEM certificate in it", f.caFile)
			}
		}
		if f.certFile != "" {
			cert, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
			if err != nil {
				return nil, fmt.Errorf("--etcd-cert, --etcd-key: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		cfg.TLS = tc
	}
	if err := etcdstore.Probe(cfg); err != nil {
		return nil, err
	}
	cfg.Username, cfg.Password = f.username, f.password
	cli, err := clientv3.New(cfg)
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return nil, fmt.Errorf("etcd (%s) refused the authentication of --etcd-username %q: %w (a wrong password?)",
			strings.Join(f.endpoints, ","), f.username, err)
	case f.username != "" && errors.Is(err, context.DeadlineExceeded):
		// The members answered the probe: what did not end in time is the authentication, which
		// etcd agrees on through raft.
		return nil, fmt.Errorf("etcd (%s) did not answer the authentication of --etcd-username %q within --etcd-dial-timeout %v: %w",
			strings.Join(f.endpoints, ","), f.username, f.dialTimeout, err)
	case err != nil:
		return nil, fmt.Errorf("etcd client of %s: %w", strings.Join(f.endpoints, ","), err)
	}
	return cli, nil
}

func anyHTTPS(endpoints []string) bool {
	for _, e := range endpoints {
		if strings.HasPrefix(e, "https://") {
			return true
		}
	}
	return false
}

// defaultReplicaID is a replica's id when --replica-id is not given: host name and pid, unique
// among the processes that run at one time.
func defaultReplicaID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	return fmt.Sprintf("%s-%d", strings.ReplaceAll(host, "/", "_"), os.Getpid())
}
