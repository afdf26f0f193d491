// Package telemetry is the path of a data plane's per-backend metrics: each worker's Reporter
// streams deltas to its supervisor over the state directory's metrics socket (Serve); the
// supervisor sums them (Totals), streams them on to its control plane (ReportLoad), shows them in
// its Status, and exports them, with the health monitor's view and the workers' client
// connections, to an OpenTelemetry collector or for Prometheus to scrape (Export). The control
// plane's own metrics (pushes, ACKs, NACKs) are here too (StartControlPlane). The names and
// attributes of every series are in otel.go.
package telemetry
