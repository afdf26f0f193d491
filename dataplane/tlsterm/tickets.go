package tlsterm

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

const (
	// TicketKeysMax bounds the keys of a ticket key file.
	TicketKeysMax = 16
	// TicketFileBytesMax bounds a ticket key file: TicketKeysMax lines are about 1.4 KiB.
	TicketFileBytesMax = 16 << 10
	// DefaultRotationPeriod is how often a new ticket key is made, when RotationPolicy.Period is zero.
	DefaultRotationPeriod = 12 * time.Hour
	// DefaultTicketKeysKept is how many ticket keys are kept, when RotationPolicy.Keep is zero.
	DefaultTicketKeysKept = 3

	ticketMagic   = "xlb-ticket-keys"
	ticketVersion = "v1"
)

// TicketKey is one session ticket key.
type TicketKey struct {
	// Created is when it was made, to the second: its age decides the rotations.
	Created time.Time
	// Key is what tls.Config.SetSessionTicketKeys takes.
	Key [32]byte
}

// TicketKeys are the session ticket keys in force, the current one (which encrypts new tickets)
// first, then the previous ones, newest first (which still decrypt tickets).
type TicketKeys []TicketKey

// RotationPolicy says when ticket keys are made and dropped. The zero value of every field means
// its documented default.
type RotationPolicy struct {
	// Period is how long a key is the current one. Zero means DefaultRotationPeriod (12h); it is
	// at least a minute.
	Period time.Duration
	// Keep is how many keys are kept, the current one counted: at least 2, TicketKeysMax at most.
	// Zero means DefaultTicketKeysKept (3).
	Keep int
}

// withDefaults returns p with its defaults applied, or an error naming the field out of range.
func (p RotationPolicy) withDefaults() (RotationPolicy, error) {
	if p.Period == 0 {
		p.Period = DefaultRotationPeriod
	}
	if p.Keep == 0 {
		p.Keep = DefaultTicketKeysKept
	}
	if p.Period < time.Minute {
		return p, fmt.Errorf("tlsterm: ticket key rotation period %v: less than a minute", p.Period)
	}
	if p.Keep < 2 || p.Keep > TicketKeysMax {
		return p, fmt.Errorf("tlsterm: ticket keys kept %d: want 2 to %d (the current key and at least one before it)", p.Keep, TicketKeysMax)
	}
	return p, nil
}

// Window is how long a ticket stays valid at least, with p's defaults applied: (Keep-1) × Period
// after its key stopped being the current one, so at least that long after it was issued (24h
// by default) and, when rotations come on time, at most Keep × Period (36h).
func (p RotationPolicy) Window() time.Duration {
	p, _ = p.withDefaults()
	return time.Duration(p.Keep-1) * p.Period
}

// rotate returns ks as they are at now under p (whose defaults must be applied): with a new
// current key when there is none or the current one is Period old (or more than Period in the
// future: the clock was set back), and without the keys past their window: a key is kept while
// fewer than Keep keys are newer and the key after it was made less than Window ago. changed says
// whether the result differs from ks. ks is not modified.
func (ks TicketKeys) rotate(now time.Time, p RotationPolicy) (out TicketKeys, changed bool) {
	now = time.Unix(now.Unix(), 0)
	out = ks
	if len(ks) == 0 || now.Sub(ks[0].Created) >= p.Period || ks[0].Created.Sub(now) > p.Period {
		k := TicketKey{Created: now}
		rand.Read(k.Key[:]) // never fails: crypto/rand crashes the program rather than return short
		out = append(TicketKeys{k}, ks...)
		changed = true
	}
	window := time.Duration(p.Keep-1) * p.Period
	n := 1
	for n < len(out) && n < p.Keep && now.Sub(out[n-1].Created) < window {
		n++
	}
	if n < len(out) {
		out = out[:n:n]
		changed = true
	}
	return out, changed
}

// Raw is ks for tls.Config.SetSessionTicketKeys, the current key first.
func (ks TicketKeys) Raw() [][32]byte {
	raw := make([][32]byte, len(ks))
	for i, k := range ks {
		raw[i] = k.Key
	}
	return raw
}

// Marshal encodes ks as a ticket key file:
//
//	xlb-ticket-keys v1 3
//	1767268800 <the current key, 64 hex digits>
//	1767225600 <the key before it>
//	1767182400 <...>
//
// each key's line its creation time (Unix seconds) and the key. The count in the first line
// tells a file cut short at a line's end from a whole one.
func (ks TicketKeys) Marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s %d\n", ticketMagic, ticketVersion, len(ks))
	for _, k := range ks {
		fmt.Fprintf(&b, "%d %s\n", k.Created.Unix(), hex.EncodeToString(k.Key[:]))
	}
	return b.Bytes()
}

// ParseTicketKeys decodes a ticket key file (see Marshal). Its errors say the line at fault.
func ParseTicketKeys(data []byte) (TicketKeys, error) {
	if len(data) > TicketFileBytesMax {
		return nil, fmt.Errorf("%d bytes, more than the %d a ticket key file may have", len(data), TicketFileBytesMax)
	}
	if len(data) == 0 {
		return nil, errors.New("empty")
	}
	text, ok := strings.CutSuffix(string(data), "\n")
	if !ok {
		return nil, errors.New("does not end with a newline: cut short?")
	}
	lines := strings.Split(text, "\n")
	head := strings.Split(lines[0], " ")
	if len(head) != 3 || head[0] != ticketMagic {
		return nil, fmt.Errorf("line 1: not a ticket key file (want %q)", ticketMagic+" "+ticketVersion+" COUNT")
	}
	if head[1] != ticketVersion {
		return nil, fmt.Errorf("line 1: version %q: this binary reads %s", head[1], ticketVersion)
	}
	n, err := strconv.Atoi(head[2])
	if err != nil || n < 1 || n > TicketKeysMax {
		return nil, fmt.Errorf("line 1: key count %q: want 1 to %d", head[2], TicketKeysMax)
	}
	if len(lines)-1 != n {
		return nil, fmt.Errorf("line 1 says %d keys, %d lines follow", n, len(lines)-1)
	}
	ks := make(TicketKeys, n)
	for i, line := range lines[1:] {
		created, key, ok := strings.Cut(line, " ")
		secs, err := strconv.ParseInt(created, 10, 64)
		if !ok || err != nil || secs <= 0 {
			return nil, fmt.Errorf("line %d: want \"UNIX-SECONDS HEX-KEY\"", i+2)
		}
		if len(key) != 2*len(ks[i].Key) {
			return nil, fmt.Errorf("line %d: a key of %d hex digits, want %d", i+2, len(key), 2*len(ks[i].Key))
		}
		if _, err := hex.Decode(ks[i].Key[:], []byte(key)); err != nil {
			return nil, fmt.Errorf("line %d: key: %v", i+2, err)
		}
		ks[i].Created = time.Unix(secs, 0)
	}
	return ks, nil
}
