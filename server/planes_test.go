package server

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/dataplane/proxy"
	"github.com/xlbproxy/xlb/server/config"
	"github.com/xlbproxy/xlb/server/rpc"
)

func TestParseDataplane(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "dp.yaml")
	os.WriteFile(file, []byte("listeners:\n  - {address: \"127.0.0.1:9000\", backend_set: api}\nretries: 1\n"), 0o600)
	withSets := filepath.Join(dir, "sets.yaml")
	os.WriteFile(withSets, []byte("listeners:\n  - {address: 127.0.0.1:8080, backend_set: web}\nbackend_sets:\n  - {name: web, backends: [{id: a, address: 127.0.0.1:9001}]}\n"), 0o600)

	tests := []struct {
		name    string
		args    []string
		want    func() config.Config
		wantErr string
	}{
		{name: "flags", args: []string{"--control-plane", "cp:7070", "--node-id", "n1", "--listen", "127.0.0.1:8081", "--backend-set", "web",
			"--tls-ca", "ca.pem", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-server-name", "cp", "--workers", "2"},
			want: func() config.Config {
				return config.Config{
					Listeners:     []config.Listener{{Address: "127.0.0.1:8081", BackendSet: "web"}},
					ControlPlanes: []string{"cp:7070"}, NodeID: "n1", Workers: 2,
					ClientSecurity: rpc.ClientSecurity{CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem", ServerName: "cp"},
				}
			}},
		{name: "defaults", args: []string{"--control-plane", "127.0.0.1:7070", "--insecure"},
			want: func() config.Config {
				return config.Config{Listeners: []config.Listener{{Address: config.DefaultListen, BackendSet: config.DefaultSet}}, ControlPlanes: []string{"127.0.0.1:7070"},
					ClientSecurity: rpc.ClientSecurity{Insecure: true}}
			}},
		{name: "a file of listeners naming sets it does not have", args: []string{"--control-plane", "cp:1", "--config", file},
			want: func() config.Config {
				return config.Config{Listeners: []config.Listener{{Address: "127.0.0.1:9000", BackendSet: "api"}}, ControlPlanes: []string{"cp:1"},
					Proxy: proxyWithRetries(1)}
			}},
		{name: "control planes in order", args: []string{"--control-plane", "cp1:7070, cp2:7070", "--control-plane", "unix:///run/cp.sock", "--insecure"},
			want: func() config.Config {
				return config.Config{Listeners: []config.Listener{{Address: config.DefaultListen, BackendSet: config.DefaultSet}},
					ControlPlanes: []string{"cp1:7070", "cp2:7070", "unix:///run/cp.sock"}, ClientSecurity: rpc.ClientSecurity{Insecure: true}}
			}},
		{name: "no control plane", args: []string{"--listen", "127.0.0.1:1"}, wantErr: "--control-plane ADDR[,ADDR...] is required"},
		{name: "an empty control plane", args: []string{"--control-plane", "cp1:7070,,cp2:7070"}, wantErr: `--control-plane: empty address in "cp1:7070,,cp2:7070"`},
		{name: "a control plane twice", args: []string{"--control-plane", "cp1:7070,cp1:7070"}, wantErr: "--control-plane: cp1:7070 is given twice"},
		{name: "backends are the control plane's", args: []string{"--control-plane", "cp:1", "--backend", "127.0.0.1:1"}, wantErr: "flag provided but not defined: --backend"},
		{name: "a file with backend sets", args: []string{"--control-plane", "cp:1", "--config", withSets},
			wantErr: "backend_sets: xlb dataplane takes its backend sets from its control plane"},
		{name: "config and listen", args: []string{"--control-plane", "cp:1", "--config", file, "--listen", "127.0.0.1:1"}, wantErr: "cannot be combined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDataplane(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.want(); !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
			if err := got.Check(); err != nil {
				t.Errorf("check: %v", err)
			}
		})
	}
}

func proxyWithRetries(n int) proxy.Config { return proxy.Config{Retries: n} }

func TestParseControlplane(t *testing.T) {
	c, err := parseControlplane([]string{"--data-dir", "/d", "--listen", "10.0.0.1:7000", "--tls-cert", "c", "--tls-key", "k",
		"--client-ca", "ca", "--admin-token-file", "tok", "--debounce", "10ms", "--log-format", "json"})
	if err != nil {
		t.Fatal(err)
	}
	want := controlplaneFlags{listen: "10.0.0.1:7000", dataDir: "/d", store: "wal", debounce: 10 * time.Millisecond, loadInterval: time.Second, log: config.LogConfig{JSON: true},
		sec:  rpc.ServerSecurity{CertFile: "c", KeyFile: "k", ClientCAFile: "ca", AdminTokenFile: "tok"},
		etcd: etcdFlags{dialTimeout: defaultEtcdDialTimeout, timeout: defaultEtcdTimeout}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v, want %+v", c, want)
	}
	if _, err := parseControlplane(nil); err == nil || !strings.Contains(err.Error(), "--data-dir DIR is required") {
		t.Errorf("no data dir: %v", err)
	}
	if _, err := parseControlplane([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

// TestParseControlplaneEtcd: --store etcd takes the etcd flags, the password from the environment
// when no flag gives it, and a replica id by default; a bad flag is named.
func TestParseControlplaneEtcd(t *testing.T) {
	t.Setenv(etcdPasswordEnv, "from-env")
	c, err := parseControlplane([]string{"--store", "etcd", "--etcd-endpoints", "https://e1:2379,https://e2:2379", "--etcd-prefix", "/x",
		"--etcd-cacert", "ca", "--etcd-cert", "c", "--etcd-key", "k", "--etcd-username", "u", "--etcd-timeout", "3s", "--etcd-dial-timeout", "1s"})
	if err != nil {
		t.Fatal(err)
	}
	want := etcdFlags{endpoints: []string{"https://e1:2379", "https://e2:2379"}, prefix: "/x", caFile: "ca", certFile: "c", keyFile: "k",
		username: "u", password: "from-env", dialTimeout: time.Second, timeout: 3 * time.Second, replicaID: c.etcd.replicaID}
	if c.store != "etcd" || !reflect.DeepEqual(c.etcd, want) || !strings.Contains(c.etcd.replicaID, "-") {
		t.Errorf("got %q %+v, want etcd %+v with a host-pid replica id", c.store, c.etcd, want)
	}
	c, err = parseControlplane([]string{"--store", "etcd", "--etcd-endpoints", "http://e:2379", "--etcd-username", "u", "--etcd-password", "flag", "--replica-id", "r1"})
	if err != nil || c.etcd.password != "flag" || c.etcd.replicaID != "r1" {
		t.Errorf("password flag and replica id: %+v, %v", c.etcd, err)
	}
	t.Setenv(etcdPasswordEnv, "")
	for _, tt := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--store", "etcd"}, "--etcd-endpoints is required"},
		{[]string{"--store", "etcd", "--etcd-endpoints", "a,,b"}, "--etcd-endpoints: an empty endpoint"},
		{[]string{"--store", "etcd", "--etcd-endpoints", "e", "--data-dir", "/d"}, "--data-dir is for --store wal"},
		{[]string{"--store", "etcd", "--etcd-endpoints", "e", "--etcd-prefix", "x/"}, "--etcd-prefix"},
		{[]string{"--store", "etcd", "--etcd-endpoints", "e", "--etcd-cert", "c"}, "--etcd-cert and --etcd-key go together"},
		{[]string{"--store", "etcd", "--etcd-endpoints", "e", "--etcd-password", "p"}, "needs --etcd-username"},
		{[]string{"--store", "etcd", "--etcd-endpoints", "e", "--etcd-timeout", "0s"}, "--etcd-timeout must be positive"},
		{[]string{"--store", "etcd", "--etcd-endpoints", "e", "--replica-id", "a/b"}, "--replica-id"},
		{[]string{"--store", "zk", "--data-dir", "/d"}, `--store "zk": want wal or etcd`},
	} {
		if _, err := parseControlplane(tt.args); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%q: %v, want an error containing %q", tt.args, err, tt.wantErr)
		}
	}
}
