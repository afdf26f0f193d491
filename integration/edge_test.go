package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestEdgeTrust: through the real binary, a client's X-Forwarded-* and Forwarded fields are
// replaced by what xlb saw unless the client is a trusted proxy, whose chain is extended; an h2c
// upgrade never reaches the backend; an absolute-form target's authority is the Host.
func TestEdgeTrust(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, name := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded", "Upgrade"} {
			fmt.Fprintf(w, "%s=%s\n", name, strings.Join(r.Header.Values(name), "|"))
		}
		fmt.Fprintf(w, "Host=%s\n", r.Host)
	}))
	spoof := []string{"-H", "X-Forwarded-For: 203.0.113.66", "-H", "X-Forwarded-Proto: https", "-H", "X-Forwarded-Host: bank.example",
		"-H", "Forwarded: for=203.0.113.66", "-H", "Connection: Upgrade, HTTP2-Settings", "-H", "Upgrade: h2c",
		"-H", "HTTP2-Settings: AAMAAABkAAQAAP__"}
	for _, tc := range []struct {
		name  string
		flags []string
		want  []string
	}{
		{"nobody trusted", nil, []string{
			"X-Forwarded-For=127.0.0.1\n", "X-Forwarded-Proto=http\n", "X-Forwarded-Host=app.example\n",
			"Forwarded=\n", "Upgrade=\n", "Host=app.example\n"}},
		{"another network trusted, with Forwarded", []string{"--trusted-proxies", "10.0.0.0/8", "--forwarded-field"}, []string{
			"X-Forwarded-For=127.0.0.1\n", "X-Forwarded-Proto=http\n", "X-Forwarded-Host=app.example\n",
			`Forwarded=for=127.0.0.1;host="app.example";proto=http` + "\n", "Upgrade=\n"}},
		{"loopback trusted, with Forwarded", []string{"--trusted-proxies", "10.0.0.0/8,127.0.0.1", "--forwarded-field"}, []string{
			"X-Forwarded-For=203.0.113.66, 127.0.0.1\n", "X-Forwarded-Proto=https\n", "X-Forwarded-Host=bank.example\n",
			`Forwarded=for=203.0.113.66, for=127.0.0.1;host="app.example";proto=http` + "\n", "Upgrade=\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := startXLB(t, runArgs(append([]string{"--backend", addrOf(be)}, tc.flags...)...))
			// An absolute-form target names app.example; the Host field says otherwise.
			args := append([]string{"--request-target", "http://app.example/x", "-H", "Host: other.example"}, spoof...)
			out := curl(t, append(args, "http://"+x.addr+"/")...)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("the backend saw:\n%s\nwant a line %q", out, strings.TrimSpace(w))
				}
			}
		})
	}
}
