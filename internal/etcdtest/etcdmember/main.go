// Command etcdmember runs one member of an etcd cluster, the etcd server embedded
// (go.etcd.io/etcd/server/v3/embed), as a process of its own: package etcdtest builds it and runs
// one per member (etcdtest.StartProcesses), so that a test can kill a member with SIGKILL, which
// an embedded member in the test's own process cannot take.
//
// It is a test helper, not a part of xlb: only tests build it.
//
// It writes "ready" and a newline to stdout once the member is ready (it joined a cluster with a
// leader). It stops gracefully on SIGTERM or SIGINT, and also when its stdin ends: the test holds
// the other end of that pipe, so a member never outlives the test process, however that ends.
// Errors go to stderr; the exit status is 1 when the member failed, 2 for a bad flag.
//
// The member skips fsync (embed.Config.UnsafeNoFsync), as those of etcdtest.Start do: SIGKILL
// ends a process, not the machine, so what it wrote is in the page cache and survives it.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		name    = flag.String("name", "", "the member's name (required)")
		dir     = flag.String("data-dir", "", "its data directory (required)")
		peer    = flag.String("peer-url", "", "the URL it listens on for, and advertises to, its peers (required)")
		client  = flag.String("client-url", "", "the URL it listens on for, and advertises to, clients (required)")
		initial = flag.String("initial-cluster", "", "every member as name=peer URL, comma-separated (required)")
		token   = flag.String("initial-cluster-token", "", "the cluster's token (required)")
		state   = flag.String("initial-cluster-state", "new", "new, or existing for a member started again")
		tick    = flag.Duration("tick", 50*time.Millisecond, "the heartbeat interval")
		elect   = flag.Duration("election", 500*time.Millisecond, "the election timeout")
	)
	flag.Parse()
	for _, f := range []struct{ name, v string }{{"name", *name}, {"data-dir", *dir}, {"peer-url", *peer},
		{"client-url", *client}, {"initial-cluster", *initial}, {"initial-cluster-token", *token}} {
		if f.v == "" {
			fmt.Fprintf(os.Stderr, "etcdmember: -%s is required\n", f.name)
			return 2
		}
	}
	if *state != "new" && *state != "existing" {
		fmt.Fprintf(os.Stderr, "etcdmember: -initial-cluster-state: want new or existing, got %q\n", *state)
		return 2
	}
	peerURL, err := url.Parse(*peer)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcdmember: -peer-url: %v\n", err)
		return 2
	}
	clientURL, err := url.Parse(*client)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcdmember: -client-url: %v\n", err)
		return 2
	}

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dir
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.InitialCluster = *initial
	cfg.InitialClusterToken = *token
	cfg.ClusterState = *state
	cfg.TickMs = uint(tick.Milliseconds())
	cfg.ElectionMs = uint(elect.Milliseconds())
	cfg.UnsafeNoFsync = true
	logCfg := zap.NewProductionConfig()
	logCfg.Level = zap.NewAtomicLevelAt(zapcore.ErrorLevel)
	logCfg.OutputPaths, logCfg.ErrorOutputPaths = []string{"stderr"}, []string{"stderr"}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.Must(logCfg.Build()))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcdmember %s: %v\n", *name, err)
		return 1
	}
	defer e.Close()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	stdinEnded := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin) // returns when the test's end of the pipe closes
		close(stdinEnded)
	}()

	select {
	case <-e.Server.ReadyNotify():
		fmt.Println("ready")
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcdmember %s: %v\n", *name, err)
		return 1
	case <-stop:
		return 0
	case <-stdinEnded:
		return 0
	}
	select {
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcdmember %s: %v\n", *name, err)
		return 1
	case <-stop:
	case <-stdinEnded:
	}
	return 0
}
