package config

import (
	"errors"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/server/backendset"
)

// The health keys of a backend set in the configuration file. They mirror the control plane's
// BackendSet fields, and the same rules check them (controlplane/resource.ValidateHealth), so a
// file and a grpcurl call reject the same values with the same words:
//
//	health_check:          # no key: no probes
//	  interval: 2s
//	  timeout: 1s
//	  fall: 3
//	  rise: 2
//	  http:                # or tcp: {}; neither means http
//	    path: /healthz
//	    host: example.com
//	    expected_statuses: [200, "300-399"]
//	outlier_detection:     # passive ejection, on by default
//	  disabled: false
//	  consecutive_failures: 5
//	  base_ejection_time: 30s
//	  max_ejection_time: 300s
//	  max_ejection_percent: 50
//	  failure_statuses: none   # gateway (502, 503, 504) or 5xx
//	slow_start:
//	  window: 30s          # required in the section
//	  min_weight_percent: 10
//	panic_threshold: 0

// healthNodes remembers the node of each health key decoded, so that an error found by
// ValidateHealth, which names a field, points at that field's line.
type healthNodes map[string]*yaml.Node

// healthKey decodes one health key of a backend set into c; it returns false for a key that is not
// one.
func (d *decoder) healthKey(key string, v *yaml.Node, path string, c *health.Config, nodes healthNodes) bool {
	at := path + "." + key
	nodes[at] = v
	switch key {
	case "health_check":
		d.healthCheck(v, at, &c.Probe, nodes)
	case "outlier_detection":
		d.outlierDetection(v, at, &c.Outlier, nodes)
	case "slow_start":
		d.slowStart(v, at, &c.SlowStart, nodes)
	case "panic_threshold":
		if x, ok := d.integer(v, at, 0, resource.PercentMax); ok {
			c.PanicThreshold = x
		}
	default:
		delete(nodes, at)
		return false
	}
	return true
}

func (d *decoder) healthCheck(n *yaml.Node, path string, p *health.Probe, nodes healthNodes) {
	p.Kind = health.ProbeHTTP // a section with nothing in it: HTTP probes with every default
	if isNull(resolve(n)) {
		return
	}
	var kindNode *yaml.Node
	kind := func(k *yaml.Node, want health.ProbeKind) {
		if kindNode != nil {
			d.errorf(k, path, "give http or tcp, not both (the other is on line %d)", kindNode.Line)
			return
		}
		kindNode, p.Kind = k, want
	}
	d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		at := path + "." + key
		nodes[at] = v
		switch key {
		case "interval":
			if dur, ok := d.duration(v, at); ok {
				p.Interval = dur
			}
		case "timeout":
			if dur, ok := d.duration(v, at); ok {
				p.Timeout = dur
			}
		case "fall":
			if x, ok := d.integer(v, at, 1, resource.HealthCountMax); ok {
				p.Fall = x
			}
		case "rise":
			if x, ok := d.integer(v, at, 1, resource.HealthCountMax); ok {
				p.Rise = x
			}
		case "http":
			kind(k, health.ProbeHTTP)
			d.httpProbe(v, at, p, nodes)
		case "tcp":
			kind(k, health.ProbeTCP)
			if !isNull(v) {
				d.mapping(v, at, func(string, *yaml.Node, *yaml.Node) bool { return false })
			}
		default:
			delete(nodes, at)
			return false
		}
		return true
	})
}

func (d *decoder) httpProbe(n *yaml.Node, path string, p *health.Probe, nodes healthNodes) {
	if isNull(resolve(n)) {
		return
	}
	d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		at := path + "." + key
		nodes[at] = v
		switch key {
		case "path":
			if s, ok := d.str(v, at); ok {
				p.Path = s
				if s == "" {
					d.errorf(v, at, `want a path such as /healthz, got ""`)
				}
			}
		case "host":
			if s, ok := d.str(v, at); ok {
				p.Host = s
			}
		case "expected_statuses":
			for i, sn := range d.sequence(v, at) {
				iat := index(at, i)
				nodes[iat] = sn
				s, ok := d.str(sn, iat)
				if !ok {
					continue
				}
				r, err := parseStatusRange(s)
				if err != nil {
					d.errorf(sn, iat, "%v, got %q", err, s)
					continue
				}
				p.Statuses = append(p.Statuses, r)
			}
		default:
			delete(nodes, at)
			return false
		}
		return true
	})
}

var errStatusRange = errors.New(`want a status such as 200 or a range such as "200-399", from 100 to 599`)

// parseStatusRange reads 200 or 200-399.
func parseStatusRange(s string) (health.StatusRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil || a < 100 || b > 599 || b < a {
		return health.StatusRange{}, errStatusRange
	}
	return health.StatusRange{Lo: a, Hi: b}, nil
}

func (d *decoder) outlierDetection(n *yaml.Node, path string, o *health.Outlier, nodes healthNodes) {
	if isNull(resolve(n)) {
		return
	}
	d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
		at := path + "." + key
		nodes[at] = v
		switch key {
		case "disabled":
			if b, ok := d.boolean(v, at); ok {
				o.Disabled = b
			}
		case "consecutive_failures":
			if x, ok := d.integer(v, at, 1, resource.HealthCountMax); ok {
				o.ConsecutiveFailures = x
			}
		case "base_ejection_time":
			if dur, ok := d.duration(v, at); ok {
				o.BaseEjectionTime = dur
			}
		case "max_ejection_time":
			if dur, ok := d.duration(v, at); ok {
				o.MaxEjectionTime = dur
			}
		case "max_ejection_percent":
			if x, ok := d.integer(v, at, 1, resource.PercentMax); ok {
				o.MaxEjectionPercent = x
			}
		case "failure_statuses":
			if s, ok := d.str(v, at); ok {
				switch s {
				case "none":
					o.FailureStatuses = health.FailNoStatus
				case "gateway":
					o.FailureStatuses = health.FailGateway
				case "5xx":
					o.FailureStatuses = health.Fail5xx
				default:
					d.errorf(v, at, "want none, gateway (502, 503, 504) or 5xx, got %q", s)
				}
			}
		default:
			delete(nodes, at)
			return false
		}
		return true
	})
}

func (d *decoder) slowStart(n *yaml.Node, path string, s *health.SlowStart, nodes healthNodes) {
	var window *yaml.Node
	if !isNull(resolve(n)) {
		d.mapping(n, path, func(key string, k, v *yaml.Node) bool {
			at := path + "." + key
			nodes[at] = v
			switch key {
			case "window":
				window = v
				if dur, ok := d.duration(v, at); ok {
					s.Window = dur
				}
			case "min_weight_percent":
				if x, ok := d.integer(v, at, 1, resource.PercentMax); ok {
					s.MinWeightPercent = x
				}
			default:
				delete(nodes, at)
				return false
			}
			return true
		})
	}
	d.required(window, n, path, "window")
}

// checkHealth applies the control plane's rules to a set's decoded health policy, for what one key
// alone cannot show (a timeout longer than the interval, a window out of its range). It reports the
// first error, at the line of the field it names, or of the closest key above it.
func (d *decoder) checkHealth(c health.Config, path string, setNode *yaml.Node, nodes healthNodes) {
	err := resource.ValidateHealth(path, backendset.ToProto(table.Set{Health: c}))
	if err == nil {
		return
	}
	var re *resource.Error
	if !errors.As(err, &re) {
		d.errorf(setNode, path, "%v", err)
		return
	}
	n := setNode
	for field := re.Field; field != path; field = field[:max(strings.LastIndexAny(field, ".["), len(path))] {
		if at, ok := nodes[field]; ok {
			n = at
			break
		}
	}
	d.errorf(n, re.Field, "%s", re.Msg)
}
