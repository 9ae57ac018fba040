package backplane

import (
	"bytes"
	"testing"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	cases := []envelope{
		{kind: KindFrame, scope: ScopeGroup, instance: 7, seq: 1, origin: "n1", key: "g", exclude: "c1"},
		{kind: KindControl, scope: ScopeNode, instance: 1<<64 - 1, seq: 1<<64 - 1, origin: "n", key: "n2", arg: "approve"},
		{kind: KindClose, scope: ScopeConnection, origin: "", key: string(bytes.Repeat([]byte("k"), 300)), arg: "reason"},
		{kind: kindProbe, scope: ScopeNode, origin: "n", key: "n", arg: "tok"},
	}
	frames := [][]byte{nil, []byte("{\"type\":1}\x1e"), bytes.Repeat([]byte{0xff}, 70000), {}}
	for i, e := range cases {
		frame := frames[i]
		enc := appendEnvelope(nil, &e, frame)
		if len(enc) != e.encodedLen(frame) {
			t.Fatalf("case %d: encodedLen %d, encoded %d", i, e.encodedLen(frame), len(enc))
		}
		setSeq(enc, e.seq+1)
		got, err := decodeEnvelope(string(enc))
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		want := e
		want.seq++
		want.frame = string(frame)
		if got != want {
			t.Fatalf("case %d: got %+v want %+v", i, got, want)
		}
	}
}

func TestDecodeEnvelopeRejects(t *testing.T) {
	good := appendEnvelope(nil, &envelope{kind: KindFrame, scope: ScopeAll, origin: "n", key: "k"}, []byte("f"))
	bad := map[string][]byte{
		"empty":     nil,
		"short":     good[:headerLen-1],
		"version":   append([]byte{2}, good[1:]...),
		"kind":      append([]byte{1, 9}, good[2:]...),
		"scope":     append([]byte{1, 1, 0}, good[3:]...),
		"strings":   good[:headerLen+2],
		"length":    append(append([]byte{}, good[:headerLen]...), 0xff, 0xff, 0xff, 0xff, 0x0f),
		"varint":    append(append([]byte{}, good[:headerLen]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		"truncated": good[:headerLen],
	}
	for name, p := range bad {
		if _, err := decodeEnvelope(string(p)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(appendEnvelope(nil, &envelope{kind: KindFrame, scope: ScopeGroup, origin: "n1", key: "g", exclude: "c"}, []byte("frame")))
	f.Add(appendEnvelope(nil, &envelope{kind: KindControl, scope: ScopeNode, arg: "x"}, nil))
	f.Add([]byte{1, 1, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := decodeEnvelope(string(data))
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes.
		enc := appendEnvelope(nil, &e, []byte(e.frame))
		if !bytes.Equal(enc, data) {
			// Non-minimal varints decode but re-encode shorter; then the
			// re-encoding must decode to the same envelope.
			e2, err := decodeEnvelope(string(enc))
			if err != nil || e2 != e {
				t.Fatalf("re-encoding differs: %+v vs %+v (%v)", e, e2, err)
			}
		}
	})
}

func BenchmarkEnvelope(b *testing.B) {
	e := envelope{kind: KindFrame, scope: ScopeGroup, instance: 3, origin: "node-1", key: "session:42", exclude: "conn-abc"}
	frame := bytes.Repeat([]byte("x"), 256)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendEnvelope(buf[:0], &e, frame)
		if _, err := decodeEnvelope(string(buf)); err != nil {
			b.Fatal(err)
		}
	}
}
