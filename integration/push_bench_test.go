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
// and sent its ACK (gRPC took the message). The data planes are xds client streams of this test
// process, one gRPC connection each (dialled as a supervisor dials, xds.DialOptions), whose Apply
// only records the time. It also reports the control plane's CPU time per push and its resident
// memory with N streams open, and the CPU time per push of this process: the N data planes' xds
// clients (and the admin client's put), which share the machine's CPUs with the control plane.
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

	// Every data plane reports on applied each version whose ACK it sent, as its gRPC stream took it.
	applied := make(chan appliedAt, dps*4)
	acks := grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		return ackStream{cs, applied}, err
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for i := range dps {
		// Dialled as a data plane's supervisor dials its control plane.
		dc, err := grpc.NewClient(cp.addr, append(xds.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()), acks)...)
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
					if a.at.After(last) {
						last = a.at
					}
				}
			case <-time.After(readyTimeout):
				b.Fatalf("%d of %d data planes applied version %s", got, dps, version)
			}
		}
		return last
	}
	v, _ := put(0)
	wait(v)

	cpu0, dpCPU0 := cpuSeconds(b, cp.pid()), cpuSeconds(b, os.Getpid())
	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		v, start := put(i + 1)
		latencies = append(latencies, wait(v).Sub(start))
	}
	b.StopTimer()
	cpu, dpCPU := cpuSeconds(b, cp.pid())-cpu0, cpuSeconds(b, os.Getpid())-dpCPU0
	slices.Sort(latencies)
	q := func(p float64) float64 {
		return float64(latencies[max(0, int(math.Ceil(p*float64(len(latencies))))-1)]) / float64(time.Millisecond)
	}
	b.ReportMetric(q(0.5), "ms-median")
	b.ReportMetric(q(0.99), "ms-p99")
	b.ReportMetric(cpu/float64(b.N)*1000, "cp-cpu-ms/push")
	b.ReportMetric(dpCPU/float64(b.N)*1000, "dps-cpu-ms/push")
	b.ReportMetric(float64(rssBytes(b, cp.pid()))/(1<<20), "cp-RSS-MB")
}

// appliedAt is a data plane's ACK of a version of the set "bench", and when it went out.
type appliedAt struct {
	version string
	at      time.Time
}

// ackStream is a data plane's stream that reports on applied the ACKs it sends.
type ackStream struct {
	grpc.ClientStream
	applied chan<- appliedAt
}

func (s ackStream) SendMsg(m any) error {
	err := s.ClientStream.SendMsg(m)
	if req, ok := m.(*discoveryv1.StreamBackendSetsRequest); ok && err == nil && req.GetResponseNonce() != "" && len(req.GetErrors()) == 0 {
		if v, ok := req.GetApplied()["bench"]; ok {
			s.applied <- appliedAt{v, time.Now()}
		}
	}
	return err
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
