// Package etcdtest runs a real etcd cluster inside a test: n members of the etcd server on
// loopback ports the kernel chose, in temporary directories, stopped by the test's Cleanup.
// Members can be stopped and started again one by one, so that tests can take a member away, or
// the quorum.
//
// Two kinds of cluster, with one API:
//
//   - Start embeds the members in the test's process (go.etcd.io/etcd/server/v3/embed). It is the
//     faster, and what a test that stops members gracefully (Stop: listeners and data directory
//     closed) should use.
//   - StartProcesses runs each member as a process of its own, the program etcdmember beside this
//     package, which it builds with `go build` into a temporary directory. Only there can a test
//     Kill a member with SIGKILL, as a crash would end it: no goodbye to its peers, no closed
//     files, its leadership lost to an election timeout. A member process never outlives the
//     test's process: it stops when its stdin, a pipe from the test, ends.
//
// StartWith starts an embedded cluster with Options: client URLs over TLS (https) with a server
// certificate of the test's, client certificates required (mTLS), and authentication enabled
// with users whose roles grant read or read and write on key prefixes. Client returns a client
// that has what such a cluster asks for: the CA, a client certificate of its own, the root user.
//
// Only tests import it: the xlb binary talks to etcd as a client and never embeds a server.
//
// The members skip fsync (embed.Config.UnsafeNoFsync): a test stops or kills a member, it never
// cuts the machine's power, so what a member wrote is in the page cache and survives it; fsyncs
// would only make the tests slow on a shared machine.
package etcdtest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/xlbproxy/xlb/internal/testutil"
)

const (
	// readyTimeout bounds how long a cluster, or a member started again, takes to be ready.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds how long a member process takes to exit after SIGTERM (then it is
	// killed) or SIGKILL.
	stopTimeout = 30 * time.Second
	// buildTimeout bounds `go build` of etcdmember, which links an etcd server.
	buildTimeout = 5 * time.Minute
	// statusTimeout bounds one Status call of Leader.
	statusTimeout = 2 * time.Second
	// memberPackage is the program StartProcesses runs for each member.
	memberPackage = "github.com/xlbproxy/xlb/internal/etcdtest/etcdmember"
	// tickInterval and electionTimeout are every member's: a leader killed is replaced in about a
	// second.
	tickInterval    = 50 * time.Millisecond
	electionTimeout = 500 * time.Millisecond
)

// Options are what a cluster of StartWith has beyond its members. The zero value is the cluster
// of Start: plain http, no client certificate asked for, no authentication.
type Options struct {
	// CA issued ServerCert; a client verifies the members with it. Nil means plain http, and then
	// ServerCert and ClientCA are ignored.
	CA *testutil.CA
	// ServerCert is what every member serves its client URL (https) with; it must name 127.0.0.1.
	// Required with CA.
	ServerCert testutil.Leaf
	// ClientCA, with CA, makes the members require of each client a certificate that ClientCA
	// issued (mTLS). Nil means none is asked for. Client uses one it issues itself.
	ClientCA *testutil.CA
	// Users, when not empty, enable authentication: a user root (RootPassword, role root) and
	// each of Users, made before it is enabled. Empty means no authentication.
	Users []User
	// RootPassword is root's password, used by Client. Required with Users.
	RootPassword string
}

// User is a user of a cluster with authentication: a role of the same name grants Perms.
type User struct {
	Name, Password string
	Perms          []Perm
}

// Perm grants read access to every key that starts with Prefix, and write access too when Write.
type Perm struct {
	Prefix string
	Write  bool
}

// Cluster is a running etcd cluster of a test.
type Cluster struct {
	tb      testing.TB
	token   string
	initial string // the initial-cluster flag: name=peer URL, ...
	// bin is the etcdmember program of a cluster of processes; "" when the members are embedded.
	bin  string
	opts Options
	// clientTLS is what Client dials the members with; nil for plain http.
	clientTLS *tls.Config

	mu      sync.Mutex
	members []*member
}

type member struct {
	name      string
	dir       string
	peerURL   url.URL
	clientURL url.URL
	e         *embed.Etcd // an embedded member; nil while stopped
	p         *process    // a member process; nil while stopped
}

// process is a running etcdmember.
type process struct {
	cmd *exec.Cmd
	// stdin is the test's end of the member's stdin: closing it stops the member.
	stdin  io.WriteCloser
	stderr testutil.SyncBuffer
	// exited is closed once the process exited and was waited for.
	exited chan struct{}
}

// Start starts a cluster of n members embedded in the test's process and waits until it has a
// leader and every member is ready.
func Start(tb testing.TB, n int) *Cluster {
	tb.Helper()
	return start(tb, n, "", Options{})
}

// StartWith starts a cluster of n members embedded in the test's process, with opts, and waits
// until it has a leader and every member is ready; with opts.Users, until authentication is
// enabled too.
func StartWith(tb testing.TB, n int, opts Options) *Cluster {
	tb.Helper()
	if opts.CA != nil && opts.ServerCert.CertFile == "" {
		tb.Fatal("etcdtest: Options.CA without a ServerCert")
	}
	if len(opts.Users) > 0 && opts.RootPassword == "" {
		tb.Fatal("etcdtest: Options.Users without a RootPassword")
	}
	c := start(tb, n, "", opts)
	if len(opts.Users) > 0 {
		if err := c.enableAuth(); err != nil {
			tb.Fatalf("etcdtest: enable authentication: %v", err)
		}
	}
	return c
}

// StartProcesses starts a cluster of n members, each a process of its own, and waits until it
// has a leader and every member is ready. It builds the member program first, which takes
// seconds with a warm build cache.
func StartProcesses(tb testing.TB, n int) *Cluster {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "etcdmember")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, memberPackage).CombinedOutput(); err != nil {
		tb.Fatalf("etcdtest: go build %s: %v\n%s", memberPackage, err, out)
	}
	return start(tb, n, bin, Options{})
}

func start(tb testing.TB, n int, bin string, opts Options) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb, token: fmt.Sprintf("xlb-test-%d", time.Now().UnixNano()), bin: bin, opts: opts}
	if opts.CA != nil {
		c.clientTLS = &tls.Config{RootCAs: opts.CA.Pool(), MinVersion: tls.VersionTLS12}
		if opts.ClientCA != nil {
			c.clientTLS.Certificates = []tls.Certificate{opts.ClientCA.IssueClient(tb, tb.TempDir(), "etcdtest-client").TLS}
		}
	}
	tb.Cleanup(c.stopAll)
	// The ports were free when picked, and another process (a package's tests run in parallel
	// with others) may bind one before a member does: then the cluster starts again on others.
	for attempt := 1; ; attempt++ {
		err := c.startMembers(tb, n)
		if err == nil {
			return c
		}
		c.stopAll()
		if attempt == startAttempts || !strings.Contains(err.Error(), "address already in use") {
			tb.Fatalf("etcdtest: %v", err)
		}
		tb.Logf("etcdtest: %v; starting again on other ports", err)
	}
}

// startAttempts bounds the starts of a cluster whose ports were taken meanwhile.
const startAttempts = 3

// startMembers makes n members on fresh ports and starts them as a new cluster.
func (c *Cluster) startMembers(tb testing.TB, n int) error {
	var initial []string
	c.members = nil
	for i := range n {
		m := &member{name: fmt.Sprintf("m%d", i), dir: tb.TempDir(), peerURL: freeURL(tb), clientURL: freeURL(tb)}
		if c.opts.CA != nil {
			m.clientURL.Scheme = "https"
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL.String())
	}
	c.initial = strings.Join(initial, ",")
	errs := make(chan error, n)
	for _, m := range c.members {
		go func() { errs <- c.start(m, "new") }()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// freeURL is an http URL on a loopback port that was free a moment ago.
func freeURL(tb testing.TB) url.URL {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("etcdtest: %v", err)
	}
	defer ln.Close()
	return url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// start starts m, a member of a new cluster or an existing one, and waits until it is ready.
func (c *Cluster) start(m *member, state string) error {
	if c.bin != "" {
		return c.startProcess(m, state)
	}
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cfg.ListenPeerUrls = []url.URL{m.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{m.peerURL}
	cfg.ListenClientUrls = []url.URL{m.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.clientURL}
	cfg.InitialCluster = c.initial
	cfg.InitialClusterToken = c.token
	cfg.ClusterState = state
	cfg.TickMs = uint(tickInterval.Milliseconds())
	cfg.ElectionMs = uint(electionTimeout.Milliseconds())
	cfg.UnsafeNoFsync = true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	if c.opts.CA != nil {
		cfg.ClientTLSInfo.CertFile = c.opts.ServerCert.CertFile
		cfg.ClientTLSInfo.KeyFile = c.opts.ServerCert.KeyFile
		if c.opts.ClientCA != nil {
			cfg.ClientTLSInfo.ClientCertAuth = true
			cfg.ClientTLSInfo.TrustedCAFile = c.opts.ClientCA.File
		}
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start member %s: %w", m.name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("member %s: %w", m.name, err)
	case <-time.After(readyTimeout):
		e.Close()
		return fmt.Errorf("member %s not ready within %v", m.name, readyTimeout)
	}
	c.mu.Lock()
	m.e = e
	c.mu.Unlock()
	return nil
}

// startProcess starts m as an etcdmember process and waits for its "ready" line.
func (c *Cluster) startProcess(m *member, state string) error {
	p := &process{exited: make(chan struct{})}
	p.cmd = exec.Command(c.bin, "-name", m.name, "-data-dir", m.dir,
		"-peer-url", m.peerURL.String(), "-client-url", m.clientURL.String(),
		"-initial-cluster", c.initial, "-initial-cluster-token", c.token, "-initial-cluster-state", state,
		"-tick", tickInterval.String(), "-election", electionTimeout.String())
	p.cmd.Stderr = &p.stderr
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("member %s: %w", m.name, err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("member %s: %w", m.name, err)
	}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start member %s: %w", m.name, err)
	}
	p.stdin = stdin
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		said := false
		for sc.Scan() {
			if sc.Text() == "ready" && !said {
				said = true
				close(ready)
			}
		}
		p.cmd.Wait() // after the reads: Wait closes stdout
		close(p.exited)
	}()
	select {
	case <-ready:
	case <-p.exited:
		return fmt.Errorf("member %s (pid %d) exited before it was ready: %v\n%s", m.name, p.cmd.Process.Pid, p.cmd.ProcessState, p.stderr.String())
	case <-time.After(readyTimeout):
		p.kill()
		return fmt.Errorf("member %s (pid %d) not ready within %v\n%s", m.name, p.cmd.Process.Pid, readyTimeout, p.stderr.String())
	}
	c.mu.Lock()
	m.p = p
	c.mu.Unlock()
	return nil
}

// kill ends p with SIGKILL and waits for it.
func (p *process) kill() error {
	p.cmd.Process.Kill() // an error means it exited already
	select {
	case <-p.exited:
		p.stdin.Close()
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("pid %d did not exit within %v of SIGKILL", p.cmd.Process.Pid, stopTimeout)
	}
}

// stop ends p with SIGTERM, or SIGKILL when it did not exit within stopTimeout.
func (p *process) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM) // an error means it exited already
	select {
	case <-p.exited:
		p.stdin.Close()
		return nil
	case <-time.After(stopTimeout):
	}
	if err := p.kill(); err != nil {
		return err
	}
	return fmt.Errorf("pid %d did not exit within %v of SIGTERM, killed", p.cmd.Process.Pid, stopTimeout)
}

// Endpoints are the client URLs of every member, running or not.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.clientURL.String()
	}
	return out
}

// Stop stops member i gracefully: an embedded one closes its listeners and its data directory; a
// process gets SIGTERM, and SIGKILL if it did not exit within 30s (which fails the test).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	m := c.members[i]
	e, p := m.e, m.p
	m.e, m.p = nil, nil
	c.mu.Unlock()
	if e != nil {
		e.Close()
	}
	if p != nil {
		if err := p.stop(); err != nil {
			c.tb.Errorf("etcdtest: member %s: %v\n%s", m.name, err, p.stderr.String())
		}
	}
}

// Kill kills member i, a process of a cluster of StartProcesses, with SIGKILL, and waits for it
// to exit. It fails the test when i is not running or the members are embedded.
func (c *Cluster) Kill(i int) {
	c.tb.Helper()
	c.mu.Lock()
	m := c.members[i]
	p := m.p
	m.p = nil
	c.mu.Unlock()
	if p == nil {
		c.tb.Fatalf("etcdtest: Kill(%d): member %s is not a running process (StartProcesses runs them)", i, m.name)
	}
	if err := p.kill(); err != nil {
		c.tb.Fatalf("etcdtest: member %s: %v", m.name, err)
	}
}

// PID is the process id of member i, a running process of a cluster of StartProcesses, or 0.
func (c *Cluster) PID(i int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.members[i].p; p != nil {
		return p.cmd.Process.Pid
	}
	return 0
}

// Restart starts the stopped member i again on its data directory and waits until it is ready,
// which takes a quorum of the members.
func (c *Cluster) Restart(i int) {
	c.tb.Helper()
	if err := c.start(c.members[i], "existing"); err != nil {
		c.tb.Fatalf("etcdtest: %v", err)
	}
}

func (c *Cluster) stopAll() {
	for i := range c.members {
		c.Stop(i)
	}
}

// Client returns a client of every member, closed by the test's Cleanup. Of a cluster of
// StartWith it verifies the members with Options.CA, has a certificate of Options.ClientCA when
// they ask for one, and is the user root when authentication is enabled.
func (c *Cluster) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cli, err := c.client(c.opts.RootPassword)
	if err != nil {
		tb.Fatalf("etcdtest: client: %v", err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// client is a client of every member, as root when rootPassword is not empty.
func (c *Cluster) client(rootPassword string) (*clientv3.Client, error) {
	cfg := clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: c.clientTLS}
	if rootPassword != "" {
		cfg.Username, cfg.Password = "root", rootPassword
	}
	return clientv3.New(cfg)
}

// enableAuth makes root and c.opts.Users, each with a role of its name, and enables
// authentication.
func (c *Cluster) enableAuth() error {
	cli, err := c.client("") // authentication is not enabled yet
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if _, err := cli.UserAdd(ctx, "root", c.opts.RootPassword); err != nil {
		return fmt.Errorf("user root: %w", err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		return fmt.Errorf("user root: %w", err)
	}
	for _, u := range c.opts.Users {
		if _, err := cli.RoleAdd(ctx, u.Name); err != nil {
			return fmt.Errorf("role %s: %w", u.Name, err)
		}
		for _, p := range u.Perms {
			perm := clientv3.PermissionType(clientv3.PermRead)
			if p.Write {
				perm = clientv3.PermissionType(clientv3.PermReadWrite)
			}
			if _, err := cli.RoleGrantPermission(ctx, u.Name, p.Prefix, clientv3.GetPrefixRangeEnd(p.Prefix), perm); err != nil {
				return fmt.Errorf("role %s: grant %v on %s: %w", u.Name, perm, p.Prefix, err)
			}
		}
		if _, err := cli.UserAdd(ctx, u.Name, u.Password); err != nil {
			return fmt.Errorf("user %s: %w", u.Name, err)
		}
		if _, err := cli.UserGrantRole(ctx, u.Name, u.Name); err != nil {
			return fmt.Errorf("user %s: %w", u.Name, err)
		}
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return err
	}
	return nil
}

// Leader returns the index of the member that leads, as a running member sees it, or -1. Of a
// cluster of processes it asks each running member's Status (within 2s each).
func (c *Cluster) Leader() int {
	if c.bin != "" {
		return c.processLeader()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if m.e == nil {
			continue
		}
		lead := m.e.Server.Leader()
		for j, o := range c.members {
			if o.e != nil && uint64(o.e.Server.MemberID()) == uint64(lead) {
				return j
			}
		}
	}
	return -1
}

func (c *Cluster) processLeader() int {
	c.mu.Lock()
	var running []int
	for i, m := range c.members {
		if m.p != nil {
			running = append(running, i)
		}
	}
	c.mu.Unlock()
	byID := make(map[uint64]int)
	var leads []uint64
	for _, i := range running {
		st, err := c.status(c.members[i].clientURL.String())
		if err != nil {
			continue
		}
		byID[st.Header.GetMemberId()] = i
		leads = append(leads, st.Leader)
	}
	for _, l := range leads {
		if j, ok := byID[l]; ok && l != 0 {
			return j
		}
	}
	return -1
}

// status is the Status of the member at endpoint.
func (c *Cluster) status(endpoint string) (*clientv3.StatusResponse, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: statusTimeout, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	st, err := cli.Status(ctx, endpoint)
	if err == nil && st.Header == nil {
		err = errors.New("a status without a header")
	}
	return st, err
}

// Ping puts and deletes a key through cli within limit, to tell whether the cluster takes writes.
func Ping(cli *clientv3.Client, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	_, err := cli.Put(ctx, "/etcdtest/ping", "1")
	return err
}

// LeakOptions are the goleak options of a package whose tests run clusters: a stopped member's
// HTTP connections to its peers (keep-alive loops, and the server side's last read) can outlive
// its Close by a while.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
		goleak.IgnoreAnyFunction("net/http.(*connReader).backgroundRead"),
	}
}
