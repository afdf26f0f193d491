// Package resource is what a backend set must be, and its version: the rules that the control
// plane applies to a put (INVALID_ARGUMENT naming the field) and that a data plane applies again
// to what it is sent (a NACK naming the field), so that both refuse the same things in the same
// words.
package resource

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"regexp"

	"google.golang.org/protobuf/proto"

	discoveryv1 "github.com/xlbproxy/xlb/gen/xlb/discovery/v1"
)

// Bounds on a backend set. Past each, the set is refused.
const (
	NameBytesMax     = 128
	BackendsMax      = 10_000
	IDBytesMax       = 128
	AddressBytesMax  = 253
	WeightMax        = 1_000_000
	ZoneBytesMax     = 128
	MetadataMax      = 64
	MetadataKeyMax   = 128
	MetadataValueMax = 1024
)

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	idRE   = regexp.MustCompile(`^[A-Za-z0-9._:-]+$`)
	hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$`)
)

// Error is a set refused for one field.
type Error struct {
	// Field is the path of the offending field, as in backend_set.backends[2].port.
	Field string
	// Msg says what is wrong and what is wanted.
	Msg string
}

func (e *Error) Error() string { return e.Field + ": " + e.Msg }

// Validate checks set; the error names the first offending field under prefix (such as
// "backend_set").
func Validate(prefix string, set *discoveryv1.BackendSet) error {
	if set == nil {
		return &Error{prefix, "required"}
	}
	bad := func(field, format string, args ...any) error {
		return &Error{prefix + field, fmt.Sprintf(format, args...)}
	}
	if err := checkName(set.GetName()); err != "" {
		return bad(".name", "%s", err)
	}
	if _, ok := discoveryv1.Policy_name[int32(set.GetPolicy())]; !ok {
		return bad(".policy", "unknown policy %d", set.GetPolicy())
	}
	if n := len(set.GetBackends()); n > BackendsMax {
		return bad(".backends", "%d backends, at most %d", n, BackendsMax)
	}
	ids := make(map[string]int, len(set.GetBackends()))
	for i, b := range set.GetBackends() {
		at := fmt.Sprintf(".backends[%d]", i)
		switch id := b.GetId(); {
		case id == "":
			return bad(at+".id", "required")
		case len(id) > IDBytesMax:
			return bad(at+".id", "%d bytes, at most %d", len(id), IDBytesMax)
		case !idRE.MatchString(id):
			return bad(at+".id", "%q: want letters, digits and . _ : -", id)
		}
		if j, dup := ids[b.GetId()]; dup {
			return bad(at+".id", "%q is also the id of backends[%d]", b.GetId(), j)
		}
		ids[b.GetId()] = i
		if err := checkAddress(b.GetAddress()); err != "" {
			return bad(at+".address", "%s", err)
		}
		if p := b.GetPort(); p < 1 || p > 65535 {
			return bad(at+".port", "want 1 to 65535, got %d", p)
		}
		if w := b.GetWeight(); w > WeightMax {
			return bad(at+".weight", "want 0 (meaning 1) to %d, got %d", WeightMax, w)
		}
		if _, ok := discoveryv1.BackendState_name[int32(b.GetState())]; !ok {
			return bad(at+".state", "unknown state %d", b.GetState())
		}
		if z := b.GetZone(); len(z) > ZoneBytesMax {
			return bad(at+".zone", "%d bytes, at most %d", len(z), ZoneBytesMax)
		}
		if n := len(b.GetMetadata()); n > MetadataMax {
			return bad(at+".metadata", "%d entries, at most %d", n, MetadataMax)
		}
		for k, v := range b.GetMetadata() {
			if k == "" || len(k) > MetadataKeyMax || len(v) > MetadataValueMax {
				return bad(at+".metadata", "key %.32q: keys of 1 to %d bytes, values of at most %d", k, MetadataKeyMax, MetadataValueMax)
			}
		}
	}
	return nil
}

// ValidateName checks a set's name alone, for the requests that name a set.
func ValidateName(field, name string) error {
	if err := checkName(name); err != "" {
		return &Error{field, err}
	}
	return nil
}

func checkName(name string) string {
	switch {
	case name == "":
		return "required"
	case len(name) > NameBytesMax:
		return fmt.Sprintf("%d bytes, at most %d", len(name), NameBytesMax)
	case !nameRE.MatchString(name):
		return fmt.Sprintf("%q: want letters, digits and . _ -", name)
	}
	return ""
}

func checkAddress(a string) string {
	switch {
	case a == "":
		return "required"
	case len(a) > AddressBytesMax:
		return fmt.Sprintf("%d bytes, at most %d", len(a), AddressBytesMax)
	case net.ParseIP(a) != nil:
		return ""
	case !hostRE.MatchString(a):
		return fmt.Sprintf("%q: want an IP address or a host name (the port goes in port)", a)
	}
	return ""
}

// Version is a set's version: the first 128 bits of the SHA-256 of its deterministic encoding, in
// hex. Equal sets have equal versions, on every control plane.
func Version(set *discoveryv1.BackendSet) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(set)
	if err != nil {
		panic(fmt.Sprintf("resource: marshal a backend set: %v", err)) // a valid message always marshals
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
