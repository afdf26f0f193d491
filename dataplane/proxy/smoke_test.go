package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/xlbproxy/xlb/dataplane/table"
)

func startProxy(t testing.TB, cfg Config, backends ...string) (*Proxy, string) {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var bs []table.Backend
	for i, a := range backends {
		bs = append(bs, table.Backend{ID: fmt.Sprint("b", i), Address: a, Weight: 1})
	}
	if err := p.SetBackends([]table.Set{{Name: "web", Backends: bs}}); err != nil {
		t.Fatal(err)
	}
	return p, serveWeb(t, p)
}

// serveWeb serves set "web" of p on a loopback port until the test ends, and returns its address.
func serveWeb(t testing.TB, p *Proxy) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln, "web") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func TestSmoke(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s len=%d xff=%s", r.Method, r.URL.RequestURI(), len(body), r.Header.Get("X-Forwarded-For"))
	}))
	defer be.Close()
	_, addr := startProxy(t, Config{}, be.Listener.Addr().String())
	res, err := http.Get("http://" + addr + "/a?b=c")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if got := string(b); got != "GET /a?b=c len=0 xff=127.0.0.1" {
		t.Fatalf("got %q", got)
	}
	big := bytes.Repeat([]byte("x"), 300000)
	res, err = http.Post("http://"+addr+"/p", "text/plain", bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if got := string(b); !strings.HasPrefix(got, "POST /p len=300000") {
		t.Fatalf("got %q", got)
	}
	// chunked upload
	res, err = http.Post("http://"+addr+"/c", "text/plain", io.MultiReader(strings.NewReader("hello"), strings.NewReader(" world")))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if got := string(b); !strings.HasPrefix(got, "POST /c len=11") {
		t.Fatalf("got %q", got)
	}
}
