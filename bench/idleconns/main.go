// Command idleconns measures what an idle keep-alive connection costs a server: it reads the
// resident memory of the server's processes (-pids, the sum of their VmRSS), opens -n connections
// to -addr, sends one GET on each and reads its response, so that every connection has served a
// request and is idle, waits -settle, reads the memory again, and prints the difference per
// connection. Then it closes every connection and exits. Only loopback addresses are accepted.
//
//	idleconns -addr 127.0.0.1:18090 -n 10000 -pids 123,124,125
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18090", "the server, on a loopback address")
	n := flag.Int("n", 10000, "connections")
	pidList := flag.String("pids", "", "comma-separated pids of the server's processes")
	settle := flag.Duration("settle", 2*time.Second, "wait after the last response before measuring")
	flag.Parse()
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil || !ap.Addr().IsLoopback() {
		log.Fatalf("-addr %q: want a loopback host:port", *addr)
	}
	var pids []int
	for _, s := range strings.Split(*pidList, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			log.Fatalf("-pids: %q: %v", s, err)
		}
		pids = append(pids, p)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(*n)+100 {
		lim.Cur = min(lim.Max, uint64(*n)+100)
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}

	before := rss(pids)
	conns := make([]net.Conn, 0, *n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range *n {
		c, err := net.DialTimeout("tcp", *addr, 5*time.Second)
		if err != nil {
			log.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: idle\r\n\r\n"); err != nil {
			log.Fatalf("connection %d: %v", i, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			log.Fatalf("connection %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c.SetDeadline(time.Time{})
	}
	time.Sleep(*settle) // a measurement's wait, not a test's: the server's memory settles
	after := rss(pids)
	fmt.Printf("%d idle keep-alive connections: RSS %d KiB before, %d KiB after: %.2f KiB per connection\n",
		*n, before, after, float64(after-before)/float64(*n))
}

// rss is the sum of the VmRSS of pids, in KiB.
func rss(pids []int) int64 {
	var sum int64
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			log.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				sum += v
			}
		}
	}
	return sum
}
