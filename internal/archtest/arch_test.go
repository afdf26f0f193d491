// Package archtest keeps the import directions of xlb's design:
//
//   - dataplane-isolation: nothing under dataplane/ depends (even transitively) on gRPC, protobuf,
//     OpenTelemetry, or on our server or controlplane packages. The data plane stays small and
//     testable on its own.
//   - controlplane-isolation: nothing under controlplane/ depends on our dataplane or server
//     packages. The two planes meet only in server.
//   - server-only-from-main: only the root main package imports server (packages under server/ may
//     import each other, and server's own tests may import it).
//   - server-inward: a package under server/ (server/cpserver, server/rpc, ...) does not import the
//     server package: the commands there are built from the packages below them, never the reverse.
//   - status-codes-at-the-edge: of the server packages, only server/localadmin (the data plane's
//     admin service) and server/rpc (authentication) import grpc/codes or grpc/status: the
//     supervisor and the upgrade say what happened in plain errors, and the edge picks the code.
//   - unsafe-only-in-shm: of our packages, only dataplane/shm (the shared region) and dataplane/rawio
//     (raw socket reads and writes, see its doc.go for the measurement) import "unsafe"; and gen/,
//     protoc-gen-go's output, whose generated code does.
//
// Test files count too: the rules are checked on `go list -deps -test` of the whole module.
package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// pkg is the part of `go list -json` output the rules need.
type pkg struct {
	ImportPath string
	Name       string
	ForTest    string
	Standard   bool
	Imports    []string
	Deps       []string
}

type rule struct {
	name string
	why  string
}

var (
	ruleDataplane    = rule{"dataplane-isolation", "the data plane must not depend on gRPC, protobuf, OpenTelemetry, server or controlplane"}
	ruleControlplane = rule{"controlplane-isolation", "the control plane must not depend on dataplane or server"}
	ruleServer       = rule{"server-only-from-main", "only the root main package may import server"}
	ruleInward       = rule{"server-inward", "a package under server/ must not import server: arrows point inward"}
	ruleCodes        = rule{"status-codes-at-the-edge", "only server/localadmin and server/rpc may make gRPC status codes"}
	ruleUnsafe       = rule{"unsafe-only-in-shm", `only dataplane/shm and dataplane/rawio may import "unsafe"`}
)

// strip drops the " [p.test]" suffix go list gives to packages recompiled for a test.
func strip(path string) string {
	if i := strings.Index(path, " ["); i >= 0 {
		return path[:i]
	}
	return path
}

// under reports whether path is prefix or a package below it.
func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// check returns one message per violation of the rules by the packages of module among pkgs.
func check(module string, pkgs []pkg) []string {
	byPath := make(map[string]*pkg, len(pkgs))
	for i := range pkgs {
		byPath[pkgs[i].ImportPath] = &pkgs[i]
	}
	ours := func(rel string) string { return module + "/" + rel }
	dataplaneForbidden := func(dep string) bool {
		return under(dep, "google.golang.org/grpc") || under(dep, "google.golang.org/protobuf") ||
			strings.HasPrefix(dep, "go.opentelemetry.io/") ||
			under(dep, ours("server")) || under(dep, ours("controlplane"))
	}
	controlplaneForbidden := func(dep string) bool {
		return under(dep, ours("dataplane")) || under(dep, ours("server"))
	}

	var out []string
	seen := map[string]bool{}
	report := func(r rule, p *pkg, owner string, inTests bool, target string, direct bool) {
		key := r.name + "\x00" + owner + "\x00" + target
		if seen[key] {
			return
		}
		seen[key] = true
		what := owner
		if inTests {
			what += " (tests)"
		}
		how := "imports " + target
		if !direct {
			how = "depends on " + target + " via " + strings.Join(chain(byPath, p.ImportPath, target), " -> ")
		}
		out = append(out, "rule "+r.name+": "+what+" "+how+": "+r.why)
	}

	// Plain packages first, so a violation also present in tests is reported once, without "(tests)".
	order := make([]*pkg, 0, len(pkgs))
	for i := range pkgs {
		if pkgs[i].ForTest == "" {
			order = append(order, &pkgs[i])
		}
	}
	for i := range pkgs {
		if pkgs[i].ForTest != "" {
			order = append(order, &pkgs[i])
		}
	}

	for _, p := range order {
		path := strip(p.ImportPath)
		if p.Standard || !under(path, module) {
			continue
		}
		if p.Name == "main" && strings.HasSuffix(path, ".test") && p.ForTest == "" {
			continue // the test main go test generates
		}
		owner := path
		if p.ForTest != "" && strings.HasSuffix(path, "_test") {
			owner = p.ForTest // an external test package belongs to the package it tests
		}
		// owner's own test variant or external test; not a package merely recompiled for one
		inTests := p.ForTest != "" && owner == p.ForTest
		imports := make([]string, len(p.Imports))
		for i, imp := range p.Imports {
			imports[i] = strip(imp)
		}

		switch {
		case under(owner, ours("dataplane")):
			for _, d := range p.Deps {
				if d := strip(d); dataplaneForbidden(d) {
					report(ruleDataplane, p, owner, inTests, d, slices.Contains(imports, d))
				}
			}
		case under(owner, ours("controlplane")):
			for _, d := range p.Deps {
				if d := strip(d); controlplaneForbidden(d) {
					report(ruleControlplane, p, owner, inTests, d, slices.Contains(imports, d))
				}
			}
		}
		if owner != module && !under(owner, ours("server")) {
			for _, imp := range imports {
				if under(imp, ours("server")) {
					report(ruleServer, p, owner, inTests, imp, true)
				}
			}
		}
		if under(owner, ours("server")) && owner != ours("server") && !inTests {
			for _, imp := range imports {
				if imp == ours("server") {
					report(ruleInward, p, owner, inTests, imp, true)
				}
			}
		}
		if under(owner, ours("server")) && owner != ours("server/localadmin") && owner != ours("server/rpc") && !inTests {
			for _, imp := range imports {
				if imp == "google.golang.org/grpc/codes" || imp == "google.golang.org/grpc/status" {
					report(ruleCodes, p, owner, inTests, imp, true)
				}
			}
		}
		if owner != ours("dataplane/shm") && owner != ours("dataplane/rawio") && !under(owner, ours("gen")) && slices.Contains(imports, "unsafe") {
			report(ruleUnsafe, p, owner, inTests, "unsafe", true)
		}
	}
	return out
}

// chain returns the shortest import path from the package from to the package whose stripped path
// is target, as stripped paths, or just [from target] when there is none in byPath.
func chain(byPath map[string]*pkg, from, target string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if strip(cur) == target {
			var c []string
			for n := cur; n != ""; n = prev[n] {
				c = append(c, strip(n))
			}
			slices.Reverse(c)
			return c
		}
		p := byPath[cur]
		if p == nil {
			continue
		}
		for _, imp := range p.Imports {
			if _, ok := prev[imp]; !ok {
				prev[imp] = cur
				queue = append(queue, imp)
			}
		}
	}
	return []string{strip(from), target}
}

// goCmd runs the go command in dir and returns its standard output.
func goCmd(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

func TestImportRules(t *testing.T) {
	gomod := strings.TrimSpace(string(goCmd(t, ".", "env", "GOMOD")))
	if gomod == "" || gomod == "/dev/null" {
		t.Fatalf("not inside a module (go env GOMOD = %q)", gomod)
	}
	root := filepath.Dir(gomod)
	module := strings.TrimSpace(string(goCmd(t, root, "list", "-m")))

	// -e: a package that does not build yet still lists its imports; the build itself is other tests' job.
	out := goCmd(t, root, "list", "-e", "-deps", "-test", "-json=ImportPath,Name,ForTest,Standard,Imports,Deps", "./...")
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if !slices.ContainsFunc(pkgs, func(p pkg) bool { return p.ImportPath == module+"/internal/archtest" }) {
		t.Fatalf("go list in %s did not list %s/internal/archtest: wrong module root?", root, module)
	}
	for _, msg := range check(module, pkgs) {
		t.Error(msg)
	}
}

// TestRulesFire checks that each rule catches what it should and lets the rest through, since while
// the project is young most of the packages the rules are about do not exist yet.
func TestRulesFire(t *testing.T) {
	const m = "example.com/lb"
	tests := []struct {
		name string
		pkgs []pkg
		want string // rule name expected in the only message, "" for none
	}{
		{"dataplane imports grpc", []pkg{
			{ImportPath: m + "/dataplane/proxy", Imports: []string{"google.golang.org/grpc"}, Deps: []string{"google.golang.org/grpc"}},
		}, "dataplane-isolation"},
		{"dataplane depends on otel through a library", []pkg{
			{ImportPath: m + "/dataplane/proxy", Imports: []string{"example.org/metrics"}, Deps: []string{"example.org/metrics", "go.opentelemetry.io/otel"}},
			{ImportPath: "example.org/metrics", Imports: []string{"go.opentelemetry.io/otel"}, Deps: []string{"go.opentelemetry.io/otel"}},
		}, "dataplane-isolation"},
		{"dataplane test imports protobuf", []pkg{
			{ImportPath: m + "/dataplane/http1_test [" + m + "/dataplane/http1.test]", ForTest: m + "/dataplane/http1",
				Imports: []string{"google.golang.org/protobuf/proto"}, Deps: []string{"google.golang.org/protobuf/proto"}},
		}, "dataplane-isolation"},
		{"dataplane imports controlplane", []pkg{
			{ImportPath: m + "/dataplane", Imports: []string{m + "/controlplane/xds"}, Deps: []string{m + "/controlplane/xds"}},
		}, "dataplane-isolation"},
		{"controlplane imports dataplane", []pkg{
			{ImportPath: m + "/controlplane/xds", Imports: []string{m + "/dataplane/balance"}, Deps: []string{m + "/dataplane/balance"}},
		}, "controlplane-isolation"},
		{"non-main imports server", []pkg{
			{ImportPath: m + "/integration", Imports: []string{m + "/server"}, Deps: []string{m + "/server"}},
		}, "server-only-from-main"},
		{"a server package imports server", []pkg{
			{ImportPath: m + "/server/cpserver", Imports: []string{m + "/server"}, Deps: []string{m + "/server"}},
		}, "server-inward"},
		{"the supervisor makes a status code", []pkg{
			{ImportPath: m + "/server", Imports: []string{"google.golang.org/grpc/status"}, Deps: []string{"google.golang.org/grpc/status"}},
		}, "status-codes-at-the-edge"},
		{"unsafe outside shm", []pkg{
			{ImportPath: m + "/dataplane/http1", Imports: []string{"unsafe"}, Deps: []string{"unsafe"}},
		}, "unsafe-only-in-shm"},
		{"allowed", []pkg{
			{ImportPath: m, Name: "main", Imports: []string{m + "/server"}, Deps: []string{m + "/server"}},
			{ImportPath: m + "/server", Imports: []string{m + "/dataplane/proxy", m + "/controlplane", "google.golang.org/grpc"}},
			{ImportPath: m + "/server_test [" + m + "/server.test]", ForTest: m + "/server", Imports: []string{m + "/server [" + m + "/server.test]"}},
			{ImportPath: m + "/dataplane/shm", Imports: []string{"unsafe"}, Deps: []string{"unsafe"}},
			{ImportPath: m + "/gen/xlb/admin/v1", Imports: []string{"unsafe"}, Deps: []string{"unsafe"}},
			{ImportPath: m + "/dataplane/proxy", Imports: []string{"github.com/hashicorp/go-hclog"}, Deps: []string{"github.com/hashicorp/go-hclog", "unsafe"}},
			{ImportPath: m + "/controlplane", Imports: []string{"google.golang.org/grpc"}, Deps: []string{"google.golang.org/grpc", "unsafe"}},
			{ImportPath: "os", Standard: true, Imports: []string{"unsafe"}},
			{ImportPath: m + "/dataplane/proxy.test", Name: "main", Imports: []string{"unsafe"}},
			{ImportPath: m + "/server/localadmin", Imports: []string{"google.golang.org/grpc/codes", "google.golang.org/grpc/status"}},
			{ImportPath: m + "/server/rpc", Imports: []string{"google.golang.org/grpc/codes", m + "/server/cpserver"}},
			{ImportPath: m + "/server/upgrade_test [" + m + "/server/upgrade.test]", ForTest: m + "/server/upgrade", Imports: []string{"google.golang.org/grpc/status"}},
		}, ""},
	}
	for _, tt := range tests {
		got := check(m, tt.pkgs)
		switch {
		case tt.want == "" && len(got) > 0:
			t.Errorf("%s: want no violation, got %q", tt.name, got)
		case tt.want != "" && (len(got) != 1 || !strings.Contains(got[0], "rule "+tt.want+":")):
			t.Errorf("%s: want one violation of %s, got %q", tt.name, tt.want, got)
		default:
			t.Logf("%s: %q", tt.name, got)
		}
	}
}
