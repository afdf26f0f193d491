package telemetry

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/xlbproxy/xlb/controlplane/load"
	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/monitor"
	loadv1 "github.com/xlbproxy/xlb/gen/xlb/load/v1"
)

// OpenTelemetry export of the supervisor's per-backend totals (the sums of its workers' reports):
// OTLP/gRPC pushed to --otlp-endpoint every --metrics-interval, cumulative, and served for
// Prometheus to scrape at --prometheus-listen (/metrics; names as the OpenTelemetry Prometheus
// exporter translates them: xlb_backend_requests_total, ...). Every series carries
// the backend set (xlb.backend_set), the backend id (xlb.backend.id) and, as OpenTelemetry's
// semantic conventions name them, server.address and server.port:
//
//	xlb.backend.requests           counter   attempts sent to the backend
//	xlb.backend.responses          counter   responses, by http.response.status_class (1xx..5xx)
//	xlb.backend.local_errors       counter   connects refused or timed out, resets, no response in time
//	xlb.backend.bad_responses      counter   malformed responses
//	xlb.backend.in_flight          gauge     attempts in progress (an up-down counter)
//	xlb.backend.connections.opened counter   connections dialled
//	xlb.backend.connections.reused counter   attempts on a pooled connection
//	xlb.backend.tls.handshakes     counter   TLS handshakes that succeeded, by xlb.tls.resumed
//	                                         (false: full, true: a resumed session); TLS backends only
//	xlb.backend.tls.handshake_failures counter   TLS handshakes that failed
//	xlb.backend.tls.handshake.time counter   seconds in successful handshakes (over handshakes: the mean)
//	http.client.request.duration   histogram seconds from an attempt's start to the end of its
//	                                         response, over the buckets of proxy.LatencyBuckets
//
// and, from the supervisor's health monitor, with the same attributes:
//
//	xlb.backend.health.state       gauge     1 for the machine's state (xlb.backend.health.state:
//	                                         healthy, ejected, recovering, trial, slow_start), 0 for
//	                                         the others; a draining or disabled backend has none at 1
//	xlb.backend.health.ejections   counter   ejections since the supervisor started
//	xlb.backend.health.probes      counter   probes done, by xlb.probe.result (pass, fail)
//	xlb.backend_set.health.panic   gauge     1 while the set fails open (too few in), by xlb.backend_set
//	xlb.backend_set.health.capped  gauge     backends whose failures call for an ejection that the
//	                                         set's max ejection percent holds back
//
// and, from the workers' reports of their client connections:
//
//	xlb.worker.connections         gauge     client connections a worker holds open, by xlb.worker.slot
//	xlb.worker.accept.paused       counter   times a worker stopped accepting at limits.connections
//
// The histogram comes already aggregated, from the workers' buckets: it is produced as such (a
// metric Producer), not recorded observation by observation.
//
// The number of backends exported is capped at otelBackendsMax: past it, the rest (by set and id)
// are summed into one series whose set and id are "_overflow", so that a control plane with very
// many backends cannot blow up a metrics store.
const otelBackendsMax = 2000

// otlpReader pushes to an OTLP/gRPC endpoint every interval, with export failures logged to log.
func otlpReader(ctx context.Context, endpoint string, insecure bool, interval time.Duration, log hclog.Logger,
	producers ...sdkmetric.Producer) (sdkmetric.Reader, error) {
	opts := []otlpmetricgrpc.Option{otlpmetricgrpc.WithEndpoint(endpoint)}
	if insecure {
		opts = append(opts, otlpmetricgrpc.WithInsecure())
	}
	// The SDK reports export failures to a global handler, which would print a line of its own
	// into a JSON log.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("metrics export failed", "error", err) }))
	exp, err := otlpmetricgrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("OTLP exporter: %w", err)
	}
	ropts := []sdkmetric.PeriodicReaderOption{sdkmetric.WithInterval(interval)}
	for _, p := range producers {
		ropts = append(ropts, sdkmetric.WithProducer(p))
	}
	return sdkmetric.NewPeriodicReader(exp, ropts...), nil
}

// newMeterProvider makes a meter provider of xlb at version (instance names it) with readers.
func newMeterProvider(instance, version string, readers ...sdkmetric.Reader) *sdkmetric.MeterProvider {
	res := resource.NewSchemaless(
		attribute.String("service.name", "xlb"),
		attribute.String("service.version", version),
		attribute.String("service.instance.id", instance),
	)
	opts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	for _, r := range readers {
		opts = append(opts, sdkmetric.WithReader(r))
	}
	return sdkmetric.NewMeterProvider(opts...)
}

// prometheusReader serves the metrics for Prometheus to scrape at http://listen/metrics; addr is
// the address bound (listen's port may be 0). The returned func stops the server.
func prometheusReader(listen string, log hclog.Logger, producers ...sdkmetric.Producer) (r sdkmetric.Reader, addr string, stop func(), err error) {
	reg := prometheus.NewRegistry()
	opts := []otelprom.Option{otelprom.WithRegisterer(reg)}
	for _, p := range producers {
		opts = append(opts, otelprom.WithProducer(p))
	}
	r, err = otelprom.New(opts...)
	if err != nil {
		return nil, "", nil, err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, "", nil, fmt.Errorf("--prometheus-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Info("serving metrics for Prometheus", "address", "http://"+ln.Addr().String()+"/metrics")
	return r, ln.Addr().String(), func() { srv.Close() }, nil
}

// stopper flushes and stops mp within a bound.
func stopper(mp *sdkmetric.MeterProvider) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return mp.Shutdown(ctx)
	}
}

// Export is what the supervisor exports and where.
type Export struct {
	// OTLPEndpoint, when set, is the OpenTelemetry collector pushed to every Interval (plaintext
	// with OTLPInsecure); PrometheusListen, when set, where Prometheus scrapes /metrics.
	OTLPEndpoint     string
	OTLPInsecure     bool
	Interval         time.Duration
	PrometheusListen string
	// Instance names the data plane (service.instance.id), Version the binary's.
	Instance, Version string
}

// Sources are what the metrics are observed from.
type Sources struct {
	// Backends are the per-backend totals of the workers' reports (Totals.Snapshot).
	Backends func() []*loadv1.BackendLoad
	// Health is the monitor's status.
	Health func(context.Context) monitor.Status
	// Conns are the workers' client connections (Totals.ConnStats).
	Conns func() (map[int32]WorkerConns, uint64)
}

// Start starts the export of the supervisor's metrics (OTLP push, Prometheus scrape, or both),
// observed from src. It returns the func that flushes and stops it, and the address Prometheus
// scrapes ("" without one).
func (e Export) Start(ctx context.Context, src Sources, log hclog.Logger) (stop func(context.Context) error, promAddr string, err error) {
	prod := durations{backends: src.Backends, start: time.Now()}
	var readers []sdkmetric.Reader
	var stops []func()
	if e.OTLPEndpoint != "" {
		r, err := otlpReader(ctx, e.OTLPEndpoint, e.OTLPInsecure, e.Interval, log, prod)
		if err != nil {
			return nil, "", err
		}
		readers = append(readers, r)
	}
	if e.PrometheusListen != "" {
		r, addr, stop, err := prometheusReader(e.PrometheusListen, log, prod)
		if err != nil {
			return nil, "", err
		}
		promAddr = addr
		readers, stops = append(readers, r), append(stops, stop)
	}
	mp := newMeterProvider(e.Instance, e.Version, readers...)
	stopAll := func(ctx context.Context) error {
		for _, stop := range stops {
			stop()
		}
		return stopper(mp)(ctx)
	}
	m := mp.Meter("github.com/xlbproxy/xlb")
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err2 := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		if err == nil {
			err = err2
		}
		return c
	}
	requests := counter("xlb.backend.requests", "{request}", "Attempts sent to the backend.")
	responses := counter("xlb.backend.responses", "{response}", "Responses of the backend, by status class.")
	localErrors := counter("xlb.backend.local_errors", "{error}", "Attempts that failed on the way: connect refused or timed out, reset, no response in time.")
	badResponses := counter("xlb.backend.bad_responses", "{response}", "Malformed responses of the backend.")
	opened := counter("xlb.backend.connections.opened", "{connection}", "Connections dialled to the backend.")
	reused := counter("xlb.backend.connections.reused", "{request}", "Attempts sent on a pooled connection.")
	tlsHandshakes := counter("xlb.backend.tls.handshakes", "{handshake}", "TLS handshakes with the backend that succeeded, by whether they resumed a session (xlb.tls.resumed).")
	tlsFailures := counter("xlb.backend.tls.handshake_failures", "{handshake}", "TLS handshakes with the backend that failed: a refused certificate, an alert, a timeout.")
	tlsTime, err2 := m.Float64ObservableCounter("xlb.backend.tls.handshake.time", metric.WithUnit("s"),
		metric.WithDescription("Time spent in the successful TLS handshakes with the backend: divided by xlb.backend.tls.handshakes, their mean."))
	if err == nil {
		err = err2
	}
	inFlight, err2 := m.Int64ObservableUpDownCounter("xlb.backend.in_flight", metric.WithUnit("{request}"), metric.WithDescription("Attempts in progress."))
	if err == nil {
		err = err2
	}
	if err != nil {
		stopAll(ctx)
		return nil, "", err
	}
	classes := [5]string{"1xx", "2xx", "3xx", "4xx", "5xx"}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, b := range capBackends(src.Backends(), otelBackendsMax) {
			host, port, _ := net.SplitHostPort(b.GetAddress())
			p, _ := strconv.Atoi(port)
			base := []attribute.KeyValue{
				attribute.String("xlb.backend_set", b.GetBackendSet()),
				attribute.String("xlb.backend.id", b.GetBackendId()),
				attribute.String("server.address", host),
				attribute.Int("server.port", p),
			}
			set := metric.WithAttributeSet(attribute.NewSet(base...))
			o.ObserveInt64(requests, int64(b.GetRequests()), set)
			o.ObserveInt64(localErrors, int64(b.GetLocalOriginErrors()), set)
			o.ObserveInt64(badResponses, int64(b.GetBadResponses()), set)
			o.ObserveInt64(opened, int64(b.GetConnectionsOpened()), set)
			o.ObserveInt64(reused, int64(b.GetConnectionsReused()), set)
			o.ObserveInt64(inFlight, b.GetInFlight(), set)
			if full, resumed, failed := b.GetTlsHandshakesFull(), b.GetTlsHandshakesResumed(), b.GetTlsHandshakeFailures(); full+resumed+failed > 0 {
				// Only backends that spoke TLS have these series: a plain one has none, not zeros.
				o.ObserveInt64(tlsHandshakes, int64(full), metric.WithAttributeSet(attribute.NewSet(append(base, attribute.Bool("xlb.tls.resumed", false))...)))
				o.ObserveInt64(tlsHandshakes, int64(resumed), metric.WithAttributeSet(attribute.NewSet(append(base, attribute.Bool("xlb.tls.resumed", true))...)))
				o.ObserveInt64(tlsFailures, int64(failed), set)
				o.ObserveFloat64(tlsTime, b.GetTlsHandshakeLatency().GetSumSeconds(), set)
			}
			for i, n := range b.GetResponses() {
				if i < len(classes) {
					o.ObserveInt64(responses, int64(n), metric.WithAttributeSet(attribute.NewSet(append(base, attribute.String("http.response.status_class", classes[i]))...)))
				}
			}
		}
		return nil
	}, requests, responses, localErrors, badResponses, opened, reused, tlsHandshakes, tlsFailures, tlsTime, inFlight)
	if err != nil {
		stopAll(ctx)
		return nil, "", err
	}
	if err := healthMetrics(m, src.Health); err != nil {
		stopAll(ctx)
		return nil, "", err
	}
	if err := connectionMetrics(m, src.Conns); err != nil {
		stopAll(ctx)
		return nil, "", err
	}
	return stopAll, promAddr, nil
}

// connectionMetrics registers the client-connection metrics listed at the top of this file,
// observed from stats.
func connectionMetrics(m metric.Meter, stats func() (map[int32]WorkerConns, uint64)) error {
	conns, err := m.Int64ObservableGauge("xlb.worker.connections", metric.WithUnit("{connection}"),
		metric.WithDescription("Client connections a worker holds open, at its last report."))
	if err != nil {
		return err
	}
	paused, err := m.Int64ObservableCounter("xlb.worker.accept.paused", metric.WithUnit("{pause}"),
		metric.WithDescription("Times a worker stopped accepting at limits.connections until a connection closed."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		workers, total := stats()
		for _, w := range workers {
			o.ObserveInt64(conns, int64(w.Connections), metric.WithAttributeSet(attribute.NewSet(attribute.Int("xlb.worker.slot", int(w.Slot)))))
		}
		o.ObserveInt64(paused, int64(total))
		return nil
	}, conns, paused)
	return err
}

// healthMetrics registers the health metrics listed at the top of this file, observed from status.
func healthMetrics(m metric.Meter, status func(context.Context) monitor.Status) error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	state, err := m.Int64ObservableGauge("xlb.backend.health.state",
		metric.WithDescription("1 for the state the backend's health machine is in, 0 for the others."))
	add(err)
	ejections, err := m.Int64ObservableCounter("xlb.backend.health.ejections", metric.WithUnit("{ejection}"),
		metric.WithDescription("Ejections of the backend since the supervisor started."))
	add(err)
	probes, err := m.Int64ObservableCounter("xlb.backend.health.probes", metric.WithUnit("{probe}"),
		metric.WithDescription("Active probes of the backend, by result."))
	add(err)
	panicking, err := m.Int64ObservableGauge("xlb.backend_set.health.panic",
		metric.WithDescription("1 while too few of the set's backends are healthy and every active one takes traffic."))
	add(err)
	capped, err := m.Int64ObservableGauge("xlb.backend_set.health.capped", metric.WithUnit("{backend}"),
		metric.WithDescription("Backends whose failures call for an ejection that the set's max ejection percent holds back."))
	add(err)
	if len(errs) > 0 {
		return errs[0]
	}
	states := []health.Status{health.Healthy, health.Ejected, health.Recovering, health.Trial, health.SlowStarting}
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		n := 0
		for _, set := range status(ctx).Sets {
			setAttr := attribute.String("xlb.backend_set", set.Name)
			nCapped := 0
			for _, b := range set.Backend {
				if b.Capped && b.Active() {
					nCapped++
				}
				if n++; n > otelBackendsMax {
					continue
				}
				host, port, _ := net.SplitHostPort(b.Address)
				p, _ := strconv.Atoi(port)
				base := []attribute.KeyValue{setAttr, attribute.String("xlb.backend.id", b.ID),
					attribute.String("server.address", host), attribute.Int("server.port", p)}
				for _, st := range states {
					v := int64(0)
					if b.Active() && b.Machine.Status == st {
						v = 1
					}
					o.ObserveInt64(state, v, metric.WithAttributeSet(attribute.NewSet(append(base, attribute.String("xlb.backend.health.state", st.String()))...)))
				}
				o.ObserveInt64(ejections, int64(b.Ejections), metric.WithAttributeSet(attribute.NewSet(base...)))
				o.ObserveInt64(probes, int64(b.ProbesPassed), metric.WithAttributeSet(attribute.NewSet(append(base, attribute.String("xlb.probe.result", "pass"))...)))
				o.ObserveInt64(probes, int64(b.ProbesFailed), metric.WithAttributeSet(attribute.NewSet(append(base, attribute.String("xlb.probe.result", "fail"))...)))
			}
			p := int64(0)
			if set.View.Panic {
				p = 1
			}
			o.ObserveInt64(panicking, p, metric.WithAttributes(setAttr))
			o.ObserveInt64(capped, int64(nCapped), metric.WithAttributes(setAttr))
		}
		return nil
	}, state, ejections, probes, panicking, capped)
	return err
}

// capBackends keeps the first max backends and sums the rest into one "_overflow" series.
func capBackends(bs []*loadv1.BackendLoad, max int) []*loadv1.BackendLoad {
	if len(bs) <= max {
		return bs
	}
	over := &loadv1.BackendLoad{BackendSet: "_overflow", BackendId: "_overflow"}
	for _, b := range bs[max:] {
		load.Add(over, b)
		over.InFlight += b.GetInFlight()
	}
	over.Address = ""
	return append(bs[:max:max], over)
}

// durations produces http.client.request.duration from the workers' aggregated histograms.
type durations struct {
	backends func() []*loadv1.BackendLoad
	start    time.Time
}

func (d durations) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	h := metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
	for _, b := range capBackends(d.backends(), otelBackendsMax) {
		tl := b.GetTotalLatency()
		if tl == nil {
			continue
		}
		host, port, _ := net.SplitHostPort(b.GetAddress())
		p, _ := strconv.Atoi(port)
		var count uint64
		for _, n := range tl.GetCounts() {
			count += n
		}
		h.DataPoints = append(h.DataPoints, metricdata.HistogramDataPoint[float64]{
			Attributes: attribute.NewSet(
				attribute.String("xlb.backend_set", b.GetBackendSet()),
				attribute.String("xlb.backend.id", b.GetBackendId()),
				attribute.String("server.address", host),
				attribute.Int("server.port", p),
			),
			StartTime:    d.start,
			Time:         now,
			Count:        count,
			Bounds:       tl.GetBoundsSeconds(),
			BucketCounts: tl.GetCounts(),
			Sum:          tl.GetSumSeconds(),
		})
	}
	if len(h.DataPoints) == 0 {
		return nil, nil
	}
	return []metricdata.ScopeMetrics{{
		Scope: instrumentation.Scope{Name: "github.com/xlbproxy/xlb"},
		Metrics: []metricdata.Metrics{{
			Name:        "http.client.request.duration",
			Description: "Duration of requests to backends, from an attempt's start to the end of its response.",
			Unit:        "s",
			Data:        h,
		}},
	}}, nil
}

// ControlPlaneMetrics are the control plane's own: pushes, their answers and how long those took,
// and the data planes connected.
//
//	xlb.controlplane.pushes               counter    responses sent to data planes
//	xlb.controlplane.acks                 counter    responses acknowledged
//	xlb.controlplane.nacks                counter    responses that rejected a set
//	xlb.controlplane.push.duration        histogram  seconds from a response's send to its answer
//	xlb.controlplane.data_planes.connected gauge     data planes with a stream open
type ControlPlaneMetrics struct {
	pushes, acks, nacks metric.Int64Counter
	duration            metric.Float64Histogram
}

// StartControlPlane exports the control plane's metrics to the OTLP collector at endpoint every
// interval (plaintext with insecure); connected counts the data planes.
func StartControlPlane(ctx context.Context, endpoint string, insecure bool, interval time.Duration, version string, connected func() int, log hclog.Logger) (*ControlPlaneMetrics, func(context.Context) error, error) {
	r, err := otlpReader(ctx, endpoint, insecure, interval, log)
	if err != nil {
		return nil, nil, err
	}
	mp := newMeterProvider("controlplane", version, r)
	m := mp.Meter("github.com/xlbproxy/xlb/controlplane")
	cm := &ControlPlaneMetrics{}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	cm.pushes, err = m.Int64Counter("xlb.controlplane.pushes", metric.WithUnit("{response}"), metric.WithDescription("Responses sent to data planes."))
	add(err)
	cm.acks, err = m.Int64Counter("xlb.controlplane.acks", metric.WithUnit("{response}"), metric.WithDescription("Responses acknowledged."))
	add(err)
	cm.nacks, err = m.Int64Counter("xlb.controlplane.nacks", metric.WithUnit("{response}"), metric.WithDescription("Responses that rejected a set."))
	add(err)
	cm.duration, err = m.Float64Histogram("xlb.controlplane.push.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from a response's send to its answer."))
	add(err)
	_, err = m.Int64ObservableGauge("xlb.controlplane.data_planes.connected", metric.WithUnit("{data_plane}"),
		metric.WithDescription("Data planes with a stream open."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(connected()))
			return nil
		}))
	add(err)
	if len(errs) > 0 {
		mp.Shutdown(ctx)
		return nil, nil, errs[0]
	}
	return cm, stopper(mp), nil
}

// Push counts a response sent.
func (cm *ControlPlaneMetrics) Push() { cm.pushes.Add(context.Background(), 1) }

// Answer counts an ACK or a NACK, d after its response was sent.
func (cm *ControlPlaneMetrics) Answer(d time.Duration, nack bool) {
	if nack {
		cm.nacks.Add(context.Background(), 1)
	} else {
		cm.acks.Add(context.Background(), 1)
	}
	cm.duration.Record(context.Background(), d.Seconds())
}
