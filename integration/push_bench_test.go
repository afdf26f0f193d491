package integration

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminclient "github.com/xlbproxy/xlb/clients/admin"
	"github.com/xlbproxy/xlb/clients/xds"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// BenchmarkControlPlanePush measures the push latency of a real `xlb controlplane` process: from
// the call of PutBackendSet to the moment every one of N data planes has applied the new version
// (its ACK goes out as its Apply returns). The data planes are xds client streams of this test
// process, one gRPC connection each, whose Apply only records the time. It also reports the
// control plane's CPU time per push and its resident memory with N streams open.
//
//	go test -run XXX -bench ControlPlanePush -benchtime 30x ./integration
func BenchmarkControlPlanePush(b *testing.B) {
	raiseNofile(b, 4096)
	for _, dps := range []int{1, 100, 1000} {
		for _, backends := range []int{10, 1000} {
			b.Run(fmt.Sprintf("dataplanes=%d/backends=%d", dps, backends), func(b *testing.B) {
				benchmarkPush(b, dps, backends)
			})
		}
	}
}

func benchmarkPush(b *testing.B, dps, backends int) {
	cp := startControlPlane(b, b.TempDir(), nil)
	conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	admin := adminclient.New(conn)

	// Every data plane reports each version it applies on applied.
	type appliedAt struct {
		version string
		at      time.Time
	}
	applied := make(chan appliedAt, dps*4)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for i := range dps {
		dc, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer dc.Close()
		state := map[string]string{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			xds.Run(ctx, xds.Config{
				ControlPlanes: []xds.ControlPlane{{Conn: dc}},
				Node:          &discoveryv1.Node{Id: "dp" + strconv.Itoa(i)},
				Initial:       func() (map[string]string, uint64, []*discoveryv1.WorkerStatus) { return nil, 0, nil },
				Apply: func(_ context.Context, resp *discoveryv1.StreamBackendSetsResponse) (map[string]string, []*discoveryv1.SetError, uint64, []*discoveryv1.WorkerStatus) {
					for _, name := range resp.GetRemoved() {
						delete(state, name)
					}
					for _, vs := range resp.GetSets() {
						state[vs.GetBackendSet().GetName()] = vs.GetVersion()
						applied <- appliedAt{vs.GetVersion(), time.Now()}
					}
					return maps.Clone(state), nil, 0, nil
				},
				BackoffMin: 10 * time.Millisecond,
			})
		}()
	}
	// Every stream is open once the control plane lists every data plane as connected.
	deadline := time.Now().Add(readyTimeout)
	for {
		list, err := admin.DataPlanes(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for _, dp := range list {
			if dp.GetConnected() {
				n++
			}
		}
		if n == dps {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d data planes connected after %v", n, dps, readyTimeout)
		}
		time.Sleep(pollInterval)
	}

	set := &discoveryv1.BackendSet{Name: "bench"}
	for i := range backends {
		set.Backends = append(set.Backends, &discoveryv1.Backend{Id: "b" + strconv.Itoa(i), Address: "10.0.0.1", Port: uint32(1 + i%60000), Weight: 1})
	}
	// The first put and its pushes warm everything up.
	put := func(i int) (string, time.Time) {
		set.Backends[0].Weight = uint32(1 + i)
		start := time.Now()
		v, err := admin.Put(context.Background(), set, nil)
		if err != nil {
			b.Fatal(err)
		}
		return v, start
	}
	wait := func(version string) time.Time {
		var last time.Time
		for got := 0; got < dps; {
			select {
			case a := <-applied:
				if a.version == version {
					got++
					last = a.at
				}
			case <-time.After(readyTimeout):
				b.Fatalf("%d of %d data planes applied version %s", got, dps, version)
			}
		}
		return last
	}
	v, _ := put(0)
	wait(v)

	cpu0 := cpuSeconds(b, cp.pid())
	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		v, start := put(i + 1)
		latencies = append(latencies, wait(v).Sub(start))
	}
	b.StopTimer()
	cpu := cpuSeconds(b, cp.pid()) - cpu0
	slices.Sort(latencies)
	q := func(p float64) float64 {
		return float64(latencies[max(0, int(math.Ceil(p*float64(len(latencies))))-1)]) / float64(time.Millisecond)
	}
	b.ReportMetric(q(0.5), "ms-median")
	b.ReportMetric(q(0.99), "ms-p99")
	b.ReportMetric(cpu/float64(b.N)*1000, "cp-cpu-ms/push")
	b.ReportMetric(float64(rssBytes(b, cp.pid()))/(1<<20), "cp-RSS-MB")
}

// cpuSeconds is the user and system CPU time of process pid so far.
func cpuSeconds(tb testing.TB, pid int) float64 {
	tb.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // clock ticks: USER_HZ is 100 on Linux
}
