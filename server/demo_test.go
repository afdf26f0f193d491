package server

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/xlbproxy/xlb/dataplane/table"
	dataplanev1 "github.com/xlbproxy/xlb/gen/xlb/dataplane/v1"
	"github.com/xlbproxy/xlb/server/exit"
	"github.com/xlbproxy/xlb/server/supervisor"
)

// TestDemoBackends: the demo's backends have the demo's weights and answer with what they saw.
func TestDemoBackends(t *testing.T) {
	set, stop, err := startDemoBackends(hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if set.Name != demoSet || len(set.Backends) != len(demoWeights) {
		t.Fatalf("demo set %+v, want %s of %d backends", set, demoSet, len(demoWeights))
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: wait}
	for i, b := range set.Backends {
		if b.Weight != demoWeights[i] {
			t.Errorf("backend %s weight %d, want %d", b.ID, b.Weight, demoWeights[i])
		}
		req, err := http.NewRequest("POST", "http://"+b.Address+"/echo?x=1", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Forwarded-For", "192.0.2.1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("backend %s: %v", b.ID, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := "backend " + b.ID + " (" + b.Address + ")\nmethod: POST\npath: /echo?x=1\nbody bytes: 5\nx-forwarded-for: 192.0.2.1\n"
		if string(body) != want {
			t.Errorf("backend %s answered %q, want %q", b.ID, body, want)
		}
	}
}

var testDemoSet = table.Set{Name: demoSet, Backends: []table.Backend{
	{ID: "b1", Address: "127.0.0.1:9001", Weight: 1},
	{ID: "b2", Address: "127.0.0.1:9002", Weight: 1},
	{ID: "b3", Address: "127.0.0.1:9003", Weight: 2},
}}

// TestDemoServes: the banner waits for a Status whose workers all serve the demo's backends.
func TestDemoServes(t *testing.T) {
	states := func(addrs ...string) []*dataplanev1.BackendState {
		var out []*dataplanev1.BackendState
		for i, a := range addrs {
			out = append(out, &dataplanev1.BackendState{BackendSet: demoSet, BackendId: testDemoSet.Backends[i].ID, Address: a})
		}
		return out
	}
	ours := states("127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003")
	workers := func(observed ...uint64) []*dataplanev1.Worker {
		var out []*dataplanev1.Worker
		for _, g := range observed {
			out = append(out, &dataplanev1.Worker{ObservedGeneration: g})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		st   *dataplanev1.StatusResponse
		want bool
	}{
		{"serving", &dataplanev1.StatusResponse{Generation: 2, Workers: workers(2, 2), BackendStates: ours}, true},
		{"no generation yet", &dataplanev1.StatusResponse{Workers: workers(0, 0)}, false},
		{"a worker behind", &dataplanev1.StatusResponse{Generation: 2, Workers: workers(2, 1), BackendStates: ours}, false},
		{"a worker missing", &dataplanev1.StatusResponse{Generation: 2, Workers: workers(2), BackendStates: ours}, false},
		{"an earlier run's backends", &dataplanev1.StatusResponse{Generation: 1, Workers: workers(1, 1),
			BackendStates: states("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003")}, false},
		{"a backend missing", &dataplanev1.StatusResponse{Generation: 2, Workers: workers(2, 2), BackendStates: ours[:2]}, false},
	} {
		if got := demoServes(tc.st, testDemoSet, 2); got != tc.want {
			t.Errorf("%s: demoServes = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestDemoBanner: the banner's commands name the listener, the state directory's sockets and the
// Prometheus listener, quoted for the shell; the put disables b1 and keeps b2 and b3.
func TestDemoBanner(t *testing.T) {
	sv := supervisor.Served{Listeners: []string{"127.0.0.1:8080"}, StateDir: "/tmp/it's here", Prometheus: "127.0.0.1:9100"}
	out := demoBanner(sv, testDemoSet, 2, true)
	for _, want := range []string{
		"a supervisor and 2 worker processes serve http://127.0.0.1:8080/",
		"b3 on 127.0.0.1:9003 (weight 2)",
		"State directory: /tmp/it's here (removed on exit)",
		"\n  for i in 1 2 3 4 5 6 7 8; do curl -s http://127.0.0.1:8080/ | head -n 1; done\n",
		"\n  curl -s -X POST --data 'hello, xlb' http://127.0.0.1:8080/echo\n",
		` '/tmp/it'\''s here/control.sock' xlb.admin.v1.AdminService/PutBackendSet` + "\n",
		"\n  grpcurl -plaintext -unix '/tmp/it'\\''s here/admin.sock' xlb.dataplane.v1.DataPlaneAdminService/Status\n",
		"\n  curl -s http://127.0.0.1:9100/metrics | grep ^xlb_backend_requests_total\n",
		"bash tools/install.sh",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the banner:\n%s\nwants %q", out, want)
		}
	}
	if kept := demoBanner(sv, testDemoSet, 2, false); !strings.Contains(kept, "(kept on exit)") {
		t.Errorf("the banner with --state-dir:\n%s\nwants (kept on exit)", kept)
	}

	// The put's request, as sh hands it to grpcurl.
	_, after, _ := strings.Cut(out, "grpcurl -plaintext -unix -d ")
	quoted, _, _ := strings.Cut(after, " '/tmp")
	arg, err := exec.Command("sh", "-c", `printf %s `+quoted).Output()
	if err != nil {
		t.Fatal(err)
	}
	var put struct {
		BackendSet struct {
			Name     string `json:"name"`
			Backends []struct {
				ID      string `json:"id"`
				Address string `json:"address"`
				Port    int    `json:"port"`
				Weight  int    `json:"weight"`
				State   string `json:"state"`
			} `json:"backends"`
		} `json:"backend_set"`
	}
	if err := json.Unmarshal(arg, &put); err != nil {
		t.Fatalf("the put's request %s: %v", arg, err)
	}
	got := put.BackendSet
	if got.Name != demoSet || len(got.Backends) != 3 {
		t.Fatalf("the put's request %s, want the set %s of three backends", arg, demoSet)
	}
	for i, b := range got.Backends {
		want, state := testDemoSet.Backends[i], ""
		if i == 0 {
			state = "BACKEND_STATE_DISABLED"
		}
		if b.ID != want.ID || b.Address+":"+strconv.Itoa(b.Port) != want.Address || b.Weight != want.Weight || b.State != state {
			t.Errorf("the put's backend %+v, want %+v with state %q", b, want, state)
		}
	}
}

// TestShellQuote: a word the shell reads as it is stays bare; anything else is single-quoted, its
// single quotes too, so that sh gives back the string.
func TestShellQuote(t *testing.T) {
	for _, s := range []string{"/tmp/xlb-demo-1/admin.sock", "http://127.0.0.1:8080/", "", "a b", "it's", `$HOME`, "a*", "[::1]", "x\ny"} {
		q := shellQuote(s)
		out, err := exec.Command("sh", "-c", "printf %s "+q).Output()
		if err != nil {
			t.Fatalf("sh -c printf %%s %s: %v", q, err)
		}
		if string(out) != s {
			t.Errorf("shellQuote(%q) = %s, which sh reads as %q", s, q, out)
		}
		if bare := !strings.HasPrefix(q, "'"); bare != (s != "" && !strings.ContainsAny(s, " '$*[]\n")) {
			t.Errorf("shellQuote(%q) = %s: quoted %v", s, q, !bare)
		}
	}
}

// TestDemoFlags: help lists the demo's flags; a bad value is refused with the flag's name, and a
// state directory that cannot be one fails the start with its path.
func TestDemoFlags(t *testing.T) {
	_, help, _ := runMain("demo", "--help")
	for _, want := range []string{"\n  --listen ADDR\n", "\n  --state-dir DIR\n", "\n  --workers N\n", "control.sock", "admin.sock"} {
		if !strings.Contains(help, want) {
			t.Errorf("demo help:\n%s\nwants %q", help, want)
		}
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args    []string
		code    int
		wantErr string
	}{
		{[]string{"--workers", "0"}, exit.Usage, `xlb demo: invalid value "0" for flag --workers: want an integer >= 1`},
		{[]string{"--workers", "two"}, exit.Usage, `invalid value "two" for flag --workers`},
		{[]string{"--state-dir", ""}, exit.Usage, `invalid value "" for flag --state-dir: want a directory path`},
		{[]string{"--listen", "127.0.0.1:0", "--state-dir", file}, exit.Failure, "state directory: mkdir " + file},
	} {
		code, _, stderr := runMain(append([]string{"demo"}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.wantErr) {
			t.Errorf("xlb demo %s: exit %d, stderr:\n%s\nwant exit %d and %q", strings.Join(tc.args, " "), code, stderr, tc.code, tc.wantErr)
		}
	}
}
