package backplane

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Envelope wire format, version 1. Every pub/sub message is one envelope:
//
//	offset size  field
//	0      1     version (1)
//	1      1     kind     (Kind; kindProbe for readiness probes)
//	2      1     scope    (Scope)
//	3      8     instance (big-endian uint64: random per Backplane, tells restarts of one node id apart)
//	11     8     seq      (big-endian uint64: per instance, in publish order, from 1)
//	19     ...   origin, key, arg, exclude: each a uvarint byte length then the bytes
//	...    rest  frame (opaque, possibly empty; no length: it runs to the end)
//
// The fixed header lets the publisher stamp seq in place after the payload
// was encoded by the caller. Receivers drop a message whose seq is not above
// the last one delivered from the same origin instance: Redis delivers one
// publisher's messages to one subscriber in publish order, so a lower or
// equal seq can only be a re-send (the Redis client retries a pipeline
// after a connection error).
//
// Decoding never panics on any input and never reads past it (fuzzed).
const (
	envelopeVersion = 1
	headerLen       = 19
	seqOffset       = 11
	// kindProbe is a readiness probe a node sends to its own inbox; it is
	// never handed to the Handler.
	kindProbe Kind = 0x7f
)

var (
	errEnvelopeShort   = errors.New("backplane: envelope: truncated")
	errEnvelopeVersion = errors.New("backplane: envelope: unknown version")
	errEnvelopeKind    = errors.New("backplane: envelope: unknown kind or scope")
)

// envelope is a decoded message. Its strings are substrings of the message
// payload (no copies).
type envelope struct {
	kind     Kind
	scope    Scope
	instance uint64
	seq      uint64
	origin   string
	key      string
	arg      string
	exclude  string
	frame    string
}

// encodedLen is the exact length encode produces for e with frame.
func (e *envelope) encodedLen(frame []byte) int {
	n := headerLen
	for _, s := range [...]string{e.origin, e.key, e.arg, e.exclude} {
		n += uvarintLen(uint64(len(s))) + len(s)
	}
	return n + len(frame)
}

// appendEnvelope appends the encoding of e, with frame as its frame
// (e.frame is ignored), to dst.
func appendEnvelope(dst []byte, e *envelope, frame []byte) []byte {
	dst = append(dst, envelopeVersion, byte(e.kind), byte(e.scope))
	dst = binary.BigEndian.AppendUint64(dst, e.instance)
	dst = binary.BigEndian.AppendUint64(dst, e.seq)
	for _, s := range [...]string{e.origin, e.key, e.arg, e.exclude} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	return append(dst, frame...)
}

// setSeq stamps seq into an encoded envelope.
func setSeq(b []byte, seq uint64) {
	binary.BigEndian.PutUint64(b[seqOffset:seqOffset+8], seq)
}

// decodeEnvelope parses an encoded envelope. The result's strings share p's
// memory.
func decodeEnvelope(p string) (envelope, error) {
	var e envelope
	if len(p) < headerLen {
		return e, errEnvelopeShort
	}
	if p[0] != envelopeVersion {
		return e, fmt.Errorf("%w %d", errEnvelopeVersion, p[0])
	}
	e.kind, e.scope = Kind(p[1]), Scope(p[2])
	if !validKind(e.kind) || e.scope < ScopeGroup || e.scope > ScopeNode {
		return e, errEnvelopeKind
	}
	e.instance = beUint64(p[3:11])
	e.seq = beUint64(p[11:19])
	rest := p[headerLen:]
	var err error
	for _, dst := range [...]*string{&e.origin, &e.key, &e.arg, &e.exclude} {
		if *dst, rest, err = readString(rest); err != nil {
			return envelope{}, err
		}
	}
	e.frame = rest
	return e, nil
}

func validKind(k Kind) bool {
	return (k >= KindFrame && k <= KindControl) || k == kindProbe
}

// readString reads a uvarint length and that many bytes from p.
func readString(p string) (string, string, error) {
	var n uint64
	var shift uint
	for i := 0; ; i++ {
		if i >= len(p) || i == binary.MaxVarintLen64 {
			return "", "", errEnvelopeShort
		}
		c := p[i]
		n |= uint64(c&0x7f) << shift
		if c < 0x80 {
			p = p[i+1:]
			break
		}
		shift += 7
	}
	if n > uint64(len(p)) {
		return "", "", errEnvelopeShort
	}
	return p[:n], p[n:], nil
}

func beUint64(s string) uint64 {
	_ = s[7]
	return uint64(s[7]) | uint64(s[6])<<8 | uint64(s[5])<<16 | uint64(s[4])<<24 |
		uint64(s[3])<<32 | uint64(s[2])<<40 | uint64(s[1])<<48 | uint64(s[0])<<56
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}
