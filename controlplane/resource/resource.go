// Package resource is what a backend set must be, and its version: the rules that the control
// plane applies to a put (INVALID_ARGUMENT naming the field) and that a data plane applies again
// to what it is sent (a NACK naming the field), so that both refuse the same things in the same
// words; and the versioned set (Versioned) that the store keeps and discovery sends.
package resource

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

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

	// The health fields. Counts are bytes in the data plane's health slots.
	HealthCountMax      = 255
	HealthIntervalMin   = 10 * time.Millisecond
	HealthIntervalMax   = time.Hour
	EjectionTimeMin     = 10 * time.Millisecond
	BaseEjectionTimeMax = time.Hour
	MaxEjectionTimeMax  = 24 * time.Hour
	SlowStartWindowMin  = time.Second
	SlowStartWindowMax  = time.Hour
	ProbePathBytesMax   = 1024
	ProbeHostBytesMax   = 260
	StatusRangesMax     = 16
	PercentMax          = 100

	// PathBytesMax bounds each file path of a tls (PATH_MAX on Linux).
	PathBytesMax = 4096

	// Affinity: hash_on and sticky.
	TokenBytesMax      = 128                  // a header or cookie name
	CookiePathBytesMax = 1024                 // sticky.path
	CookieMaxAgeMax    = 400 * 24 * time.Hour // sticky.max_age: browsers cap Max-Age at 400 days
	DefaultCookieName  = "xlb_backend"        // an empty sticky.cookie_name
	DefaultCookiePath  = "/"                  // an empty sticky.path
)

// The sizes of what carries sets over gRPC. The fields' bounds above allow sets far larger than
// any real one (10,000 backends with 64 metadata entries of 1 KiB each), so a set is also bounded
// by its encoding; every gRPC end that carries sets (the control plane's server, the data plane's
// client) accepts MessageBytesMax, so that no set that passes Validate is refused by a message
// limit.
const (
	// SetBytesMax bounds a set's protobuf encoding.
	SetBytesMax = 16 << 20
	// MessageBytesMax is the gRPC message size limit of every end that carries sets: one set at
	// SetBytesMax with room for the request or response around it.
	MessageBytesMax = SetBytesMax + 1<<20
	// ResponseBytesTarget is what the control plane puts in one response to a data plane, at most:
	// the sets past it follow in the next response. A set larger than it goes alone.
	ResponseBytesTarget = 2 << 20
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
	// Other, when not empty, is the path of the field that the offending one conflicts with (the
	// first backend with the same id), for a caller that says where that one is too (the
	// configuration file's line). Msg names it already.
	Other string
}

func (e *Error) Error() string { return e.Field + ": " + e.Msg }

// Validate checks set; the error names the first offending field under prefix (such as
// "backend_set").
func Validate(prefix string, set *discoveryv1.BackendSet) error {
	if set == nil {
		return &Error{Field: prefix, Msg: "required"}
	}
	bad := func(field, format string, args ...any) error {
		return &Error{Field: prefix + field, Msg: fmt.Sprintf(format, args...)}
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
	if err := validateHealth(prefix, set); err != nil {
		return err
	}
	if err := ValidateTLS(prefix+".tls", set.GetTls()); err != nil {
		return err
	}
	if err := validateAffinity(prefix, set); err != nil {
		return err
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
			other := fmt.Sprintf("%s.backends[%d]", prefix, j)
			return &Error{Field: prefix + at + ".id", Msg: fmt.Sprintf("%q is also the id of %s", b.GetId(), other), Other: other + ".id"}
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
		if err := ValidateTLS(prefix+at+".tls", b.GetTls()); err != nil {
			return err
		}
	}
	if n := proto.Size(set); n > SetBytesMax {
		return bad("", "encoded in %d bytes, at most %d (%d MiB): split it, or shorten its metadata", n, SetBytesMax, SetBytesMax>>20)
	}
	return nil
}

// validateHealth checks the health policy of set (health_check, outlier_detection, slow_start,
// panic_threshold).
func validateHealth(prefix string, set *discoveryv1.BackendSet) error {
	bad := func(field, format string, args ...any) error {
		return &Error{Field: prefix + field, Msg: fmt.Sprintf(format, args...)}
	}
	// duration checks an optional duration: absent or zero is the default; otherwise lo to hi.
	duration := func(field string, d *durationpb.Duration, lo, hi time.Duration) (time.Duration, error) {
		if d == nil {
			return 0, nil
		}
		if err := d.CheckValid(); err != nil {
			return 0, bad(field, "%v", err)
		}
		v := d.AsDuration()
		if v != 0 && (v < lo || v > hi) {
			return 0, bad(field, "want 0 (the default) or %v to %v, got %v", lo, hi, v)
		}
		return v, nil
	}
	count := func(field string, n uint32, max int) error {
		if n > uint32(max) {
			return bad(field, "want 0 (the default) to %d, got %d", max, n)
		}
		return nil
	}
	if hc := set.GetHealthCheck(); hc != nil {
		interval, err := duration(".health_check.interval", hc.GetInterval(), HealthIntervalMin, HealthIntervalMax)
		if err != nil {
			return err
		}
		timeout, err := duration(".health_check.timeout", hc.GetTimeout(), time.Millisecond, HealthIntervalMax)
		if err != nil {
			return err
		}
		if interval == 0 {
			interval = 2 * time.Second // the default, as dataplane/health has it
		}
		if timeout > interval {
			return bad(".health_check.timeout", "%v is longer than the interval (%v)", timeout, interval)
		}
		if err := count(".health_check.fall", hc.GetFall(), HealthCountMax); err != nil {
			return err
		}
		if err := count(".health_check.rise", hc.GetRise(), HealthCountMax); err != nil {
			return err
		}
		if h := hc.GetHttp(); h != nil {
			if p := h.GetPath(); p != "" && (p[0] != '/' || len(p) > ProbePathBytesMax || !visible(p)) {
				return bad(".health_check.http.path", "%.64q: want / and up to %d bytes of visible ASCII", p, ProbePathBytesMax)
			}
			if host := h.GetHost(); len(host) > ProbeHostBytesMax || !visible(host) {
				return bad(".health_check.http.host", "%.64q: want up to %d bytes of visible ASCII", host, ProbeHostBytesMax)
			}
			if n := len(h.GetExpectedStatuses()); n > StatusRangesMax {
				return bad(".health_check.http.expected_statuses", "%d ranges, at most %d", n, StatusRangesMax)
			}
			for i, r := range h.GetExpectedStatuses() {
				end := r.GetEnd()
				if end == 0 {
					end = r.GetStart()
				}
				if r.GetStart() < 100 || end > 599 || end < r.GetStart() {
					return bad(fmt.Sprintf(".health_check.http.expected_statuses[%d]", i), "want 100 <= start <= end <= 599, got %d to %d", r.GetStart(), r.GetEnd())
				}
			}
		}
	}
	if od := set.GetOutlierDetection(); od != nil {
		if err := count(".outlier_detection.consecutive_failures", od.GetConsecutiveFailures(), HealthCountMax); err != nil {
			return err
		}
		base, err := duration(".outlier_detection.base_ejection_time", od.GetBaseEjectionTime(), EjectionTimeMin, BaseEjectionTimeMax)
		if err != nil {
			return err
		}
		maxT, err := duration(".outlier_detection.max_ejection_time", od.GetMaxEjectionTime(), EjectionTimeMin, MaxEjectionTimeMax)
		if err != nil {
			return err
		}
		if maxT != 0 && base != 0 && maxT < base {
			return bad(".outlier_detection.max_ejection_time", "%v is shorter than base_ejection_time (%v)", maxT, base)
		}
		if err := count(".outlier_detection.max_ejection_percent", od.GetMaxEjectionPercent(), PercentMax); err != nil {
			return err
		}
		if _, ok := discoveryv1.FailureStatuses_name[int32(od.GetFailureStatuses())]; !ok {
			return bad(".outlier_detection.failure_statuses", "unknown value %d", od.GetFailureStatuses())
		}
	}
	if ss := set.GetSlowStart(); ss != nil {
		w := ss.GetWindow()
		if w == nil || w.AsDuration() == 0 {
			return bad(".slow_start.window", "required: %v to %v", SlowStartWindowMin, SlowStartWindowMax)
		}
		if err := w.CheckValid(); err != nil {
			return bad(".slow_start.window", "%v", err)
		}
		if v := w.AsDuration(); v < SlowStartWindowMin || v > SlowStartWindowMax {
			return bad(".slow_start.window", "want %v to %v, got %v", SlowStartWindowMin, SlowStartWindowMax, v)
		}
		if err := count(".slow_start.min_weight_percent", ss.GetMinWeightPercent(), PercentMax); err != nil {
			return err
		}
	}
	return count(".panic_threshold", set.GetPanicThreshold(), PercentMax)
}

// validateAffinity checks hash_on (required by policy maglev, refused with any other) and sticky.
func validateAffinity(prefix string, set *discoveryv1.BackendSet) error {
	bad := func(field, format string, args ...any) error {
		return &Error{Field: prefix + field, Msg: fmt.Sprintf(format, args...)}
	}
	h := set.GetHashOn()
	maglev := set.GetPolicy() == discoveryv1.Policy_POLICY_MAGLEV
	switch {
	case maglev && h.GetKey() == nil:
		return bad(".hash_on", "required with policy maglev: a header, a cookie or client_address")
	case !maglev && h != nil:
		return bad(".hash_on", "only with policy maglev (the policy is %s)", strings.ToLower(strings.TrimPrefix(set.GetPolicy().String(), "POLICY_")))
	}
	switch k := h.GetKey().(type) {
	case *discoveryv1.HashOn_Header:
		if err := checkToken(k.Header); err != "" {
			return bad(".hash_on.header", "%s", err)
		}
	case *discoveryv1.HashOn_Cookie:
		if err := checkToken(k.Cookie); err != "" {
			return bad(".hash_on.cookie", "%s", err)
		}
	}
	st := set.GetSticky()
	if st == nil {
		return nil
	}
	if n := st.GetCookieName(); n != "" {
		if err := checkToken(n); err != "" {
			return bad(".sticky.cookie_name", "%s", err)
		}
	}
	if p := st.GetPath(); p != "" && (p[0] != '/' || len(p) > CookiePathBytesMax || !visible(p) || strings.IndexByte(p, ';') >= 0) {
		return bad(".sticky.path", "%.64q: want / and up to %d bytes of visible ASCII without ';'", p, CookiePathBytesMax)
	}
	if d := st.GetMaxAge(); d != nil {
		if err := d.CheckValid(); err != nil {
			return bad(".sticky.max_age", "%v", err)
		}
		v := d.AsDuration()
		if v != 0 && (v < time.Second || v > CookieMaxAgeMax || v%time.Second != 0) {
			return bad(".sticky.max_age", "want 0 (a session cookie) or whole seconds from 1s to %v (400 days), got %v", CookieMaxAgeMax, v)
		}
	}
	if _, ok := discoveryv1.SameSite_name[int32(st.GetSameSite())]; !ok {
		return bad(".sticky.same_site", "unknown value %d", st.GetSameSite())
	}
	if _, ok := discoveryv1.HttpOnly_name[int32(st.GetHttpOnly())]; !ok {
		return bad(".sticky.http_only", "unknown value %d", st.GetHttpOnly())
	}
	return nil
}

// checkToken checks a header or cookie name: an HTTP token (RFC 9110 section 5.6.2) of 1 to
// TokenBytesMax bytes.
func checkToken(s string) string {
	if s == "" {
		return "required: a header or cookie name"
	}
	if len(s) > TokenBytesMax {
		return fmt.Sprintf("%d bytes, at most %d", len(s), TokenBytesMax)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c > '~' || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return fmt.Sprintf("%.64q: want a token (letters, digits and !#$%%&'*+-.^_`|~)", s)
		}
	}
	return ""
}

// ValidateTLS checks one tls, of a set or of a backend, named field (such as
// "backend_set.backends[2].tls"). Nil is valid: no TLS. It checks the fields only: whether the
// files exist and hold what they should is for the data plane that reads them, on its machine.
func ValidateTLS(field string, t *discoveryv1.BackendTls) error {
	if t == nil {
		return nil
	}
	bad := func(sub, format string, args ...any) error {
		return &Error{Field: field + "." + sub, Msg: fmt.Sprintf(format, args...)}
	}
	if n := t.GetServerName(); n != "" {
		if err := checkAddress(n); err != "" {
			return bad("server_name", "%s", err)
		}
	}
	for _, f := range []struct{ name, path string }{
		{"ca_file", t.GetCaFile()},
		{"client_cert_file", t.GetClientCertFile()},
		{"client_key_file", t.GetClientKeyFile()},
	} {
		if err := checkPath(f.path); err != "" {
			return bad(f.name, "%s", err)
		}
	}
	switch cert, key := t.GetClientCertFile() != "", t.GetClientKeyFile() != ""; {
	case cert && !key:
		return bad("client_key_file", "required with client_cert_file: both or neither")
	case key && !cert:
		return bad("client_cert_file", "required with client_key_file: both or neither")
	}
	switch v := t.GetMinVersion(); v {
	case "", "1.2", "1.3":
	default:
		return bad("min_version", "%.16q: want \"1.2\", \"1.3\" or empty (meaning \"1.2\")", v)
	}
	if t.GetInsecureSkipVerify() && t.GetCaFile() != "" {
		return bad("insecure_skip_verify", "set with ca_file, which it would make unused: verify against ca_file, or skip verification, not both")
	}
	if _, ok := discoveryv1.SessionResumption_name[int32(t.GetSessionResumption())]; !ok {
		return bad("session_resumption", "unknown value %d", t.GetSessionResumption())
	}
	return nil
}

// TLSFor is the tls that applies to backend b of set: b's own when it has one, whole, else the
// set's; nil means plain TCP.
func TLSFor(set *discoveryv1.BackendSet, b *discoveryv1.Backend) *discoveryv1.BackendTls {
	if t := b.GetTls(); t != nil {
		return t
	}
	return set.GetTls()
}

// checkPath checks an optional file path of the data plane's machine.
func checkPath(p string) string {
	switch {
	case p == "":
		return ""
	case len(p) > PathBytesMax:
		return fmt.Sprintf("%d bytes, at most %d", len(p), PathBytesMax)
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Sprintf("%.64q: a path cannot hold a NUL byte", p)
	case !filepath.IsAbs(p):
		return fmt.Sprintf("%.64q: want an absolute path (a file on the data plane's machine)", p)
	}
	return ""
}

// visible tells whether s is printable ASCII without spaces.
func visible(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// ValidateName checks a set's name alone, for the requests that name a set.
func ValidateName(field, name string) error {
	if err := checkName(name); err != "" {
		return &Error{Field: field, Msg: err}
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
	case !hostRE.MatchString(a) && strings.Contains(a, ":"):
		return fmt.Sprintf("%q: want an IP address or a host name (the port goes in port)", a)
	case !hostRE.MatchString(a):
		return fmt.Sprintf("%q: want an IP address or a host name", a)
	}
	return ""
}

// Versioned is a backend set and its version, as the store keeps it and discovery sends it. Set is
// never modified once it is versioned: whoever holds one must not modify it.
type Versioned struct {
	Set     *discoveryv1.BackendSet
	Version string
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
