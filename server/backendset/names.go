package backendset

import (
	"errors"
	"slices"
	"strings"

	"github.com/xlbproxy/xlb/dataplane/balance"
	"github.com/xlbproxy/xlb/dataplane/health"
	"github.com/xlbproxy/xlb/dataplane/table"
	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// The names that the configuration file and the flags give a policy, a backend state and the
// failure statuses are the wire enum's, without the enum's prefix, in lower case: POLICY_LEAST_REQUEST
// is least_request. There is no other list of them: a value added to the proto is a name of the
// file as soon as FromProto translates it. The UNSPECIFIED value has no name (a key left out means
// the default).

// ParsePolicy reads a policy by its name: round_robin, least_request or maglev.
func ParsePolicy(s string) (balance.Policy, error) {
	v, err := parseEnum(s, "POLICY_", discoveryv1.Policy_value, nil)
	if err != nil {
		return 0, err
	}
	return policies[discoveryv1.Policy(v)], nil
}

// ParseState reads a backend's state by its name: active, draining or disabled.
func ParseState(s string) (table.State, error) {
	v, err := parseEnum(s, "BACKEND_STATE_", discoveryv1.BackendState_value, nil)
	if err != nil {
		return 0, err
	}
	return states[discoveryv1.BackendState(v)], nil
}

// ParseFailureStatuses reads the failure statuses of an outlier detection by their name: none,
// gateway (502, 503, 504) or 5xx.
func ParseFailureStatuses(s string) (health.FailureStatuses, error) {
	v, err := parseEnum(s, "FAILURE_STATUSES_", discoveryv1.FailureStatuses_value, map[string]string{"gateway": "502, 503, 504"})
	if err != nil {
		return 0, err
	}
	return failureStatuses[discoveryv1.FailureStatuses(v)], nil
}

// policies maps the wire's policies to balance's; a valid set has no other.
var policies = map[discoveryv1.Policy]balance.Policy{
	discoveryv1.Policy_POLICY_UNSPECIFIED:   balance.RoundRobin,
	discoveryv1.Policy_POLICY_ROUND_ROBIN:   balance.RoundRobin,
	discoveryv1.Policy_POLICY_LEAST_REQUEST: balance.LeastRequest,
	discoveryv1.Policy_POLICY_MAGLEV:        balance.MaglevHash,
}

// ParseSameSite reads a sticky cookie's SameSite by its name: lax, strict or none.
func ParseSameSite(s string) (table.SameSite, error) {
	v, err := parseEnum(s, "SAME_SITE_", discoveryv1.SameSite_value, map[string]string{"none": "always Secure"})
	if err != nil {
		return 0, err
	}
	return sameSites[discoveryv1.SameSite(v)], nil
}

// sameSites maps the wire's SameSite to table's; a valid set has no other.
var sameSites = map[discoveryv1.SameSite]table.SameSite{
	discoveryv1.SameSite_SAME_SITE_UNSPECIFIED: table.SameSiteLax,
	discoveryv1.SameSite_SAME_SITE_LAX:         table.SameSiteLax,
	discoveryv1.SameSite_SAME_SITE_STRICT:      table.SameSiteStrict,
	discoveryv1.SameSite_SAME_SITE_NONE:        table.SameSiteNone,
}

// parseEnum finds s among the names of an enum (values, by name), as the file spells them. Its
// error lists them in the enum's order, each with its note if it has one.
func parseEnum(s, prefix string, values map[string]int32, notes map[string]string) (int32, error) {
	if v, ok := values[prefix+strings.ToUpper(s)]; ok && v != 0 && s == strings.ToLower(s) {
		return v, nil
	}
	type name struct {
		v    int32
		name string
	}
	var names []name
	for n, v := range values {
		if v != 0 {
			names = append(names, name{v, strings.ToLower(strings.TrimPrefix(n, prefix))})
		}
	}
	slices.SortFunc(names, func(a, b name) int { return int(a.v - b.v) })
	var b strings.Builder
	b.WriteString("want ")
	for i, n := range names {
		switch {
		case i > 0 && i == len(names)-1:
			b.WriteString(" or ")
		case i > 0:
			b.WriteString(", ")
		}
		b.WriteString(n.name)
		if note := notes[n.name]; note != "" {
			b.WriteString(" (" + note + ")")
		}
	}
	return 0, errors.New(b.String())
}
