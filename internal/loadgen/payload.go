package loadgen

import (
	"bytes"
	"strconv"
)

// Payload layout (plain ASCII, so it travels inside a JSON string without
// escaping and can be found in a received frame by a byte search):
//
//	LG|<session>|<seq>|<phase>|<sendNanos>|xxxx...
//
// padded with 'x' to the requested size. sendNanos is read from the
// generator's monotonic clock just before the frame is written; sender and
// receiver are the same process, so latency needs no clock sync. phase is
// PhaseWarmup or PhaseMeasure: warm-up deliveries count for loss and
// duplicates but not for latency or throughput.

// Phases carried in a payload.
const (
	PhaseWarmup  byte = 'w'
	PhaseMeasure byte = 'm'
)

// payloadMarker starts every payload; quoteMarker is how it starts inside a
// JSON string.
var (
	payloadMarker = []byte("LG|")
	quoteMarker   = []byte(`"LG|`)
)

// Payload is a decoded payload header.
type Payload struct {
	Session  uint64
	Seq      uint64
	Phase    byte
	SentNano int64
}

// AppendPayload appends a payload of at least size bytes to dst. The header
// alone takes 30-40 bytes in practice; a smaller size gets just the header.
func AppendPayload(dst []byte, p Payload, size int) []byte {
	start := len(dst)
	dst = append(dst, payloadMarker...)
	dst = strconv.AppendUint(dst, p.Session, 10)
	dst = append(dst, '|')
	dst = strconv.AppendUint(dst, p.Seq, 10)
	dst = append(dst, '|', p.Phase, '|')
	dst = strconv.AppendInt(dst, p.SentNano, 10)
	dst = append(dst, '|')
	for len(dst)-start < size {
		dst = append(dst, 'x')
	}
	return dst
}

// ParsePayload decodes the header of a payload (the padding is not
// checked).
func ParsePayload(b []byte) (Payload, bool) {
	var p Payload
	if !bytes.HasPrefix(b, payloadMarker) {
		return p, false
	}
	b = b[len(payloadMarker):]
	var ok bool
	if p.Session, b, ok = parseField(b); !ok {
		return p, false
	}
	if p.Seq, b, ok = parseField(b); !ok {
		return p, false
	}
	if len(b) < 2 || b[1] != '|' || (b[0] != PhaseWarmup && b[0] != PhaseMeasure) {
		return p, false
	}
	p.Phase = b[0]
	var ts uint64
	if ts, _, ok = parseField(b[2:]); !ok || ts > 1<<62 {
		return p, false
	}
	p.SentNano = int64(ts)
	return p, true
}

// parseField reads decimal digits up to a '|' and returns the rest after it.
func parseField(b []byte) (uint64, []byte, bool) {
	var n uint64
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		if i == 19 { // would overflow
			return 0, nil, false
		}
		n = n*10 + uint64(b[i]-'0')
		i++
	}
	if i == 0 || i == len(b) || b[i] != '|' {
		return 0, nil, false
	}
	return n, b[i+1:], true
}

// FindPayload locates a payload inside a raw hub protocol record without
// decoding the JSON: the bytes from the marker to the closing quote of the
// string holding it. Nothing else in a ReceiveSessionMessage record can
// contain `"LG|`: the other string fields are ids, a user name and a
// timestamp, and a quote inside them would be escaped.
func FindPayload(record []byte) ([]byte, bool) {
	i := bytes.Index(record, quoteMarker)
	if i < 0 {
		return nil, false
	}
	rest := record[i+1:]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil, false
	}
	return rest[:j], true
}
