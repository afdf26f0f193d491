package http1

// tokenChar marks the bytes of RFC 9110 token: "!#$%&'*+-.^_`|~", DIGIT and ALPHA.
var tokenChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// valueChar marks the bytes allowed inside a field value: VCHAR, obs-text, SP and HTAB. NUL, CR, LF
// and the other controls are not.
var valueChar = func() (t [256]bool) {
	for c := 0x21; c <= 0xff; c++ {
		t[c] = c != 0x7f
	}
	t[' '], t['\t'] = true, true
	return t
}()

// targetChar marks the bytes allowed in a request target: visible ASCII and obs-text, so that a
// target is forwarded byte for byte without judging its encoding. No controls, no space.
var targetChar = func() (t [256]bool) {
	for c := 0x21; c <= 0xff; c++ {
		t[c] = c != 0x7f
	}
	return t
}()

// schemeChar marks the letters that may start a URI scheme (RFC 3986 §3.1).
var schemeChar = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	return t
}()

// hostChar marks the bytes of a Host value: reg-name, IP-literal and port (RFC 3986).
var hostChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-._~!$&'()*+,;=%:[]" {
		t[c] = true
	}
	return t
}()

// lower folds an ASCII letter to lower case.
func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// EqualFold reports whether a equals the lower-case ASCII string b, ignoring the case of a.
func EqualFold(a []byte, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != b[i] {
			return false
		}
	}
	return true
}

// equalFoldBytes reports whether a and b are equal, ignoring the case of ASCII letters.
func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

// trimOWS strips optional whitespace (SP and HTAB) from both ends of b.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// nextListItem returns the first element of a comma-separated list and the rest, skipping empty
// elements as RFC 9110 §5.6.1 asks. ok is false when nothing is left.
func nextListItem(b []byte) (item, rest []byte, ok bool) {
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != ',' {
			i++
		}
		item = trimOWS(b[:i])
		if i < len(b) {
			rest = b[i+1:]
		} else {
			rest = nil
		}
		if len(item) > 0 {
			return item, rest, true
		}
		b = rest
	}
	return nil, nil, false
}

// NextListItem returns the first element of a comma-separated field value and the rest, skipping
// empty elements (RFC 9110 §5.6.1); ok is false when nothing is left.
func NextListItem(b []byte) (item, rest []byte, ok bool) { return nextListItem(b) }

// IsToken reports whether s is a non-empty RFC 9110 token.
func IsToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !tokenChar[s[i]] {
			return false
		}
	}
	return s != ""
}
