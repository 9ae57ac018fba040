package loadgen

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode/protocol"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

func TestPayloadRoundTrip(t *testing.T) {
	cases := []struct {
		p    Payload
		size int
	}{
		{Payload{Session: 0, Seq: 1, Phase: PhaseMeasure, SentNano: 0}, 100},
		{Payload{Session: 99, Seq: 12345, Phase: PhaseWarmup, SentNano: 987654321012}, 100},
		{Payload{Session: 1<<32 + 7, Seq: maxSeq, Phase: PhaseMeasure, SentNano: 1 << 50}, 10},
		{Payload{Session: 3, Seq: 4, Phase: PhaseMeasure, SentNano: 5}, 4096},
	}
	for _, c := range cases {
		b := AppendPayload([]byte("prefix"), c.p, c.size)
		b = b[len("prefix"):]
		if len(b) < c.size {
			t.Fatalf("%+v: %d bytes, want at least %d", c.p, len(b), c.size)
		}
		if c.size > 64 && len(b) != c.size {
			t.Fatalf("%+v: padded to %d bytes, want exactly %d", c.p, len(b), c.size)
		}
		got, ok := ParsePayload(b)
		if !ok || got != c.p {
			t.Fatalf("round trip of %+v: got %+v ok=%v from %q", c.p, got, ok, b)
		}
		// Plain ASCII without quotes or backslashes: safe in a JSON string
		// as is.
		q, _ := json.Marshal(string(b))
		if string(q) != `"`+string(b)+`"` {
			t.Fatalf("payload %q needs JSON escaping", b)
		}
	}
}

func TestParsePayloadRejectsMalformed(t *testing.T) {
	for _, s := range []string{
		"", "LG|", "LG|1|2|m|", "LG|1|2|m|3", "LG|1|2|q|3|", "LG|a|2|m|3|", "LG|1||m|3|",
		"XX|1|2|m|3|", "LG|1|2|m3|", "LG|99999999999999999999|2|m|3|", "LG|1|2|m|-3|",
	} {
		if p, ok := ParsePayload([]byte(s)); ok {
			t.Errorf("%q parsed as %+v", s, p)
		}
	}
}

// serverRecord builds a ReceiveSessionMessage record the way the node
// does: the AgentMessage with its eventId first, in an Invocation.
func serverRecord(t *testing.T, content string) []byte {
	t.Helper()
	msg := contract.NewAgentMessage(time.Now().UTC())
	msg.Content = content
	msg.SessionID = "7b6c0d9e-1a2b-4c3d-8e9f-001122334455"
	user := `user "quoted"\ LG|1|2|m|3|`
	msg.SenderID = &user
	body, err := json.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	withID := append([]byte(`{"eventId":"1732573153000-0",`), body[1:]...)
	rec := protocol.AppendInvocation(nil, "", "ReceiveSessionMessage", append(append([]byte{'['}, withID...), ']'))
	return rec[:len(rec)-1] // without the separator, as the reader hands it over
}

func TestFindPayloadInServerRecord(t *testing.T) {
	p := AppendPayload(nil, Payload{Session: 42, Seq: 7, Phase: PhaseMeasure, SentNano: 123456789}, 100)
	rec := serverRecord(t, string(p))
	if !bytes.HasPrefix(rec, invocationPrefix) {
		t.Fatalf("the node's record does not start with the fast-path prefix: %.60q", rec)
	}
	got, ok := FindPayload(rec)
	if !ok || !bytes.Equal(got, p) {
		t.Fatalf("FindPayload = %q, %v; want %q", got, ok, p)
	}
	// The quoted sender id contains the marker text, escaped: it must not
	// be mistaken for the payload. A record without a payload has none.
	if _, ok := FindPayload(serverRecord(t, "hello")); ok {
		t.Fatal("payload found in a record without one")
	}
	// Check against a full decode.
	m, err := protocol.DecodeMessage(rec)
	if err != nil {
		t.Fatal(err)
	}
	var am contract.AgentMessage
	if err := json.Unmarshal(m.Arguments[0], &am); err != nil || am.Content != string(p) {
		t.Fatalf("full decode: %q, %v", am.Content, err)
	}
}

// TestReceivePathDoesNotAllocate: finding and parsing a payload in a
// received record, and building the next publish, allocate nothing.
func TestReceivePathDoesNotAllocate(t *testing.T) {
	p := AppendPayload(nil, Payload{Session: 42, Seq: 7, Phase: PhaseMeasure, SentNano: 123456789}, 100)
	rec := serverRecord(t, string(p))
	buf := make([]byte, 0, 256)
	n := testing.AllocsPerRun(1000, func() {
		raw, ok := FindPayload(rec)
		if !ok {
			t.Fatal("not found")
		}
		if _, ok := ParsePayload(raw); !ok {
			t.Fatal("not parsed")
		}
		buf = AppendPayload(buf[:0], Payload{Session: 1, Seq: 2, Phase: PhaseMeasure, SentNano: 3}, 100)
	})
	if n != 0 {
		t.Fatalf("%v allocations per message", n)
	}
}

func BenchmarkFindAndParsePayload(b *testing.B) {
	p := AppendPayload(nil, Payload{Session: 42, Seq: 7, Phase: PhaseMeasure, SentNano: 123456789}, 100)
	rec := serverRecord(&testing.T{}, string(p))
	b.ReportAllocs()
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		raw, _ := FindPayload(rec)
		if _, ok := ParsePayload(raw); !ok {
			b.Fatal("not parsed")
		}
	}
}

// BenchmarkFullDecode is what a general client does with the same record:
// decode the message, then the AgentMessage argument.
func BenchmarkFullDecode(b *testing.B) {
	p := AppendPayload(nil, Payload{Session: 42, Seq: 7, Phase: PhaseMeasure, SentNano: 123456789}, 100)
	rec := serverRecord(&testing.T{}, string(p))
	b.ReportAllocs()
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		m, err := protocol.DecodeMessage(rec)
		if err != nil {
			b.Fatal(err)
		}
		var am contract.AgentMessage
		if err := json.Unmarshal(m.Arguments[0], &am); err != nil || !strings.HasPrefix(am.Content, "LG|") {
			b.Fatal(err)
		}
	}
}
