package config

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/xlbproxy/xlb/controlplane/resource"
	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/table"
	"github.com/xlbproxy/xlb/server/backendset"
)

// The health keys of a backend set in the configuration file. They mirror the control plane's
// BackendSet fields, and the same rules check them (controlplane/resource.Validate, on the whole
// set: checkSet), so a file and a grpcurl call reject the same values with the same words. The
// decoder checks only the form: keys, types, and the spelling of statuses and names.
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
//
// As on the wire, a count or percentage of 0 means its default.

// setNodes remembers the value node of each key of a backend set decoded, by its key path
// (backend_sets[0].backends[1].weight), so that an error of the control plane's rules, which names
// a field, points at that key's line.
type setNodes map[string]*yaml.Node

// healthKey decodes one health key of a backend set into c; it returns false for a key that is not
// one.
func (d *decoder) healthKey(key string, v *yaml.Node, path string, c *health.Config, nodes setNodes) bool {
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
		if x, ok := d.integer(v, at, 0, math.MaxUint32); ok {
			c.PanicThreshold = x
		}
	default:
		delete(nodes, at)
		return false
	}
	return true
}

func (d *decoder) healthCheck(n *yaml.Node, path string, p *health.Probe, nodes setNodes) {
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
			if x, ok := d.integer(v, at, 0, math.MaxUint32); ok {
				p.Fall = x
			}
		case "rise":
			if x, ok := d.integer(v, at, 0, math.MaxUint32); ok {
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

func (d *decoder) httpProbe(n *yaml.Node, path string, p *health.Probe, nodes setNodes) {
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

var errStatusRange = errors.New(`want a status such as 200 or a range such as "200-399"`)

// parseStatusRange reads the form of 200 or 200-399; whether they are statuses is the control
// plane's rule to say (checkSet).
func parseStatusRange(s string) (health.StatusRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 32)
	b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 32)
	if err1 != nil || err2 != nil {
		return health.StatusRange{}, errStatusRange
	}
	return health.StatusRange{Lo: int(a), Hi: int(b)}, nil
}

func (d *decoder) outlierDetection(n *yaml.Node, path string, o *health.Outlier, nodes setNodes) {
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
			if x, ok := d.integer(v, at, 0, math.MaxUint32); ok {
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
			if x, ok := d.integer(v, at, 0, math.MaxUint32); ok {
				o.MaxEjectionPercent = x
			}
		case "failure_statuses":
			if s, ok := d.str(v, at); ok {
				f, err := backendset.ParseFailureStatuses(s)
				if err != nil {
					d.errorf(v, at, "%v, got %q", err, s)
				}
				o.FailureStatuses = f
			}
		default:
			delete(nodes, at)
			return false
		}
		return true
	})
}

func (d *decoder) slowStart(n *yaml.Node, path string, s *health.SlowStart, nodes setNodes) {
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
				if x, ok := d.integer(v, at, 0, math.MaxUint32); ok {
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

// checkSet applies the control plane's rules (resource.Validate on backendset.ToProto) to a set
// whose form is right, and returns it as the control plane would hand it to the data plane
// (backendset.FromProto: a zero weight is 1, the failure statuses in both places). It reports the
// first error, at the line of the key it names, or of the closest key above it.
func (d *decoder) checkSet(set table.Set, path string, setNode *yaml.Node, nodes setNodes) table.Set {
	m := backendset.ToProto(set)
	err := resource.Validate(path, m)
	if err == nil {
		var out table.Set
		if out, err = backendset.FromProto(m); err == nil {
			return out
		}
	}
	var re *resource.Error
	if !errors.As(err, &re) {
		d.errorf(setNode, path, "%v", err)
		return set
	}
	field, msg := fileField(re, nodes)
	n := setNode
	for f := field; len(f) > len(path); f = f[:max(strings.LastIndexAny(f, ".["), len(path))] {
		if at, ok := nodes[f]; ok {
			n = at
			break
		}
	}
	d.errorf(n, field, "%s", msg)
	return set
}

// backendField matches the field path of a backend's host or port, which the file writes as one
// key, address.
var backendField = regexp.MustCompile(`^(.*\.backends\[\d+\])\.(address|port)$`)

// fileField is the key path and message of the file for an error of the control plane's rules on
// a set (validated with the set's key path as the prefix): the wire's address and port are the
// file's address (its message says which part, of what), and the backend a duplicate id is also
// the id of is given its line.
func fileField(re *resource.Error, nodes setNodes) (string, string) {
	field, msg := re.Field, re.Msg
	if m := backendField.FindStringSubmatch(field); m != nil {
		field = m[1] + ".address"
		part := m[2]
		if part == "address" {
			part = "host"
		}
		if n := nodes[field]; n != nil {
			msg = fmt.Sprintf("%s of %q: %s", part, n.Value, msg)
		}
	}
	if n := nodes[re.Other]; re.Other != "" && n != nil {
		msg = fmt.Sprintf("%s (line %d)", msg, n.Line)
	}
	return field, msg
}
