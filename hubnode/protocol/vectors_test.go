package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// The vectors below are the JSON test vectors of the protocol notes (§5),
// copied byte for byte. "C→S" ones were captured from @microsoft/signalr
// 10.0.11 and put "type" last; "S→C" ones use ASP.NET Core's field order.
const (
	vecHandshakeV1        = "{\"protocol\":\"json\",\"version\":1}\u001e"
	vecHandshakeV2        = "{\"protocol\":\"json\",\"version\":2}\u001e"
	vecHandshakeOK        = "{}\u001e"
	vecHandshakeErr       = "{\"error\":\"The protocol 'xml' is not supported.\"}\u001e"
	vecInvocation         = "{\"target\":\"Add\",\"arguments\":[40,2],\"invocationId\":\"0\",\"type\":1}\u001e"
	vecNonBlocking        = "{\"target\":\"NonBlocking\",\"arguments\":[\"foo\"],\"type\":1}\u001e"
	vecCompletionResult   = "{\"type\":3,\"invocationId\":\"0\",\"result\":42}\u001e"
	vecCompletionError    = "{\"type\":3,\"invocationId\":\"1\",\"error\":\"It didn't work!\"}\u001e"
	vecBindingFailure     = "{\"type\":3,\"invocationId\":\"5\",\"error\":\"Failed to invoke 'Add' due to an error on the server.\"}\u001e"
	vecStreamInvocation   = "{\"target\":\"Counter\",\"arguments\":[2],\"invocationId\":\"2\",\"type\":4}\u001e"
	vecStreamItem         = "{\"type\":2,\"invocationId\":\"2\",\"item\":0}\u001e"
	vecStreamEnd          = "{\"type\":3,\"invocationId\":\"2\"}\u001e"
	vecUploadInvocation   = "{\"target\":\"Upload\",\"arguments\":[\"x\"],\"streamIds\":[\"3\"],\"type\":1}\u001e"
	vecUploadItem         = "{\"invocationId\":\"3\",\"item\":1,\"type\":2}\u001e"
	vecUploadEnd          = "{\"invocationId\":\"3\",\"type\":3}\u001e"
	vecPing               = "{\"type\":6}\u001e"
	vecClientClose        = "{\"type\":7}\u001e"
	vecServerClose        = "{\"type\":7,\"error\":\"Server is shutting down\",\"allowReconnect\":true}\u001e"
	vecClientResultInvoke = "{\"type\":1,\"invocationId\":\"srv-1\",\"target\":\"GetAnswer\",\"arguments\":[]}\u001e"
	vecClientResult       = "{\"invocationId\":\"srv-1\",\"result\":42,\"type\":3}\u001e"
	vecClientNoResult     = "{\"error\":\"Client didn't provide a result.\",\"invocationId\":\"srv-2\",\"type\":3}\u001e"
	vecBatched            = "{\"error\":\"Client didn't provide a result.\",\"invocationId\":\"srv-2\",\"type\":3}\u001e{\"type\":6}\u001e{\"invocationId\":\"srv-1\",\"result\":42,\"type\":3}\u001e"
	vecSequence           = "{\"type\":9,\"sequenceId\":1}\u001e"
	vecAck                = "{\"type\":8,\"sequenceId\":1}\u001e"
	vecBroadcast          = "{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"hi\"]}\u001e"
)

// allVectors seeds the fuzzers.
var allVectors = []string{
	vecHandshakeV1, vecHandshakeV2, vecHandshakeOK, vecHandshakeErr, vecInvocation, vecNonBlocking,
	vecCompletionResult, vecCompletionError, vecBindingFailure, vecStreamInvocation, vecStreamItem,
	vecStreamEnd, vecUploadInvocation, vecUploadItem, vecUploadEnd, vecPing, vecClientClose,
	vecServerClose, vecClientResultInvoke, vecClientResult, vecClientNoResult, vecBatched,
	vecSequence, vecAck, vecBroadcast,
}

func raws(vals ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(vals))
	for i, v := range vals {
		out[i] = json.RawMessage(v)
	}
	return out
}

// decodeFrame splits a frame and decodes every record in it.
func decodeFrame(t testing.TB, frame string) []Message {
	t.Helper()
	var msgs []Message
	err := SplitRecords([]byte(frame), func(rec []byte) error {
		m, err := DecodeMessage(rec)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
		return nil
	})
	if err != nil {
		t.Fatalf("decoding %q: %v", frame, err)
	}
	return msgs
}

// normalize makes nil and empty collections compare equal so the tables can
// leave them out.
func normalize(m Message) Message {
	if len(m.Arguments) == 0 {
		m.Arguments = nil
	}
	if len(m.StreamIDs) == 0 {
		m.StreamIDs = nil
	}
	if len(m.Headers) == 0 {
		m.Headers = nil
	}
	return m
}

func TestDecodeVectors(t *testing.T) {
	tests := []struct {
		name  string
		frame string
		want  []Message
		// emptyArgs: the message must carry a non-nil, empty arguments
		// array (present but empty, as opposed to missing).
		emptyArgs bool
	}{
		{name: "invocation type last", frame: vecInvocation, want: []Message{{
			Type: TypeInvocation, InvocationID: "0", Target: "Add", Arguments: raws("40", "2"),
		}}},
		{name: "non-blocking invocation", frame: vecNonBlocking, want: []Message{{
			Type: TypeInvocation, Target: "NonBlocking", Arguments: raws(`"foo"`),
		}}},
		{name: "stream invocation", frame: vecStreamInvocation, want: []Message{{
			Type: TypeStreamInvocation, InvocationID: "2", Target: "Counter", Arguments: raws("2"),
		}}},
		{name: "upload invocation with streamIds", frame: vecUploadInvocation, want: []Message{{
			Type: TypeInvocation, Target: "Upload", Arguments: raws(`"x"`), StreamIDs: []string{"3"},
		}}},
		{name: "upload stream item", frame: vecUploadItem, want: []Message{{
			Type: TypeStreamItem, InvocationID: "3", Item: json.RawMessage("1"),
		}}},
		{name: "upload stream completion", frame: vecUploadEnd, want: []Message{{
			Type: TypeCompletion, InvocationID: "3",
		}}},
		{name: "ping", frame: vecPing, want: []Message{{Type: TypePing}}},
		{name: "client close", frame: vecClientClose, want: []Message{{Type: TypeClose}}},
		{name: "server close allowing reconnect", frame: vecServerClose, want: []Message{{
			Type: TypeClose, Error: "Server is shutting down", HasError: true, AllowReconnect: true,
		}}},
		{name: "completion with result", frame: vecCompletionResult, want: []Message{{
			Type: TypeCompletion, InvocationID: "0", Result: json.RawMessage("42"),
		}}},
		{name: "completion with error", frame: vecCompletionError, want: []Message{{
			Type: TypeCompletion, InvocationID: "1", Error: "It didn't work!", HasError: true,
		}}},
		{name: "binding failure", frame: vecBindingFailure, want: []Message{{
			Type: TypeCompletion, InvocationID: "5", HasError: true,
			Error: "Failed to invoke 'Add' due to an error on the server.",
		}}},
		{name: "stream item", frame: vecStreamItem, want: []Message{{
			Type: TypeStreamItem, InvocationID: "2", Item: json.RawMessage("0"),
		}}},
		{name: "void completion ends stream", frame: vecStreamEnd, want: []Message{{
			Type: TypeCompletion, InvocationID: "2",
		}}},
		{name: "client result request", frame: vecClientResultInvoke, emptyArgs: true, want: []Message{{
			Type: TypeInvocation, InvocationID: "srv-1", Target: "GetAnswer",
		}}},
		{name: "client result", frame: vecClientResult, want: []Message{{
			Type: TypeCompletion, InvocationID: "srv-1", Result: json.RawMessage("42"),
		}}},
		{name: "client without result", frame: vecClientNoResult, want: []Message{{
			Type: TypeCompletion, InvocationID: "srv-2", Error: "Client didn't provide a result.", HasError: true,
		}}},
		{name: "batched frame of three", frame: vecBatched, want: []Message{
			{Type: TypeCompletion, InvocationID: "srv-2", Error: "Client didn't provide a result.", HasError: true},
			{Type: TypePing},
			{Type: TypeCompletion, InvocationID: "srv-1", Result: json.RawMessage("42")},
		}},
		{name: "sequence", frame: vecSequence, want: []Message{{Type: TypeSequence, SequenceID: 1}}},
		{name: "ack", frame: vecAck, want: []Message{{Type: TypeAck, SequenceID: 1}}},
		{name: "broadcast", frame: vecBroadcast, want: []Message{{
			Type: TypeInvocation, Target: "ReceiveMessage", Arguments: raws(`"hi"`),
		}}},
		{name: "headers are kept", frame: "{\"type\":1,\"headers\":{\"a\":\"b\"},\"target\":\"T\",\"arguments\":[]}\u001e", want: []Message{{
			Type: TypeInvocation, Target: "T", Headers: map[string]string{"a": "b"},
		}}},
		{name: "unknown fields ignored", frame: "{\"type\":6,\"future\":{\"x\":[1,2]}}\u001e", want: []Message{{Type: TypePing}}},
		{name: "null result is a present result", frame: "{\"type\":3,\"invocationId\":\"7\",\"result\":null}\u001e", want: []Message{{
			Type: TypeCompletion, InvocationID: "7", Result: json.RawMessage("null"),
		}}},
		{name: "null stream item", frame: "{\"type\":2,\"invocationId\":\"7\",\"item\":null}\u001e", want: []Message{{
			Type: TypeStreamItem, InvocationID: "7", Item: json.RawMessage("null"),
		}}},
		{name: "cancel invocation", frame: "{\"invocationId\":\"4\",\"type\":5}\u001e", want: []Message{{
			Type: TypeCancelInvocation, InvocationID: "4",
		}}},
		{name: "whitespace between tokens", frame: "{ \"type\" : 3 ,\n\t\"invocationId\" : \"1\" , \"result\" : { \"a\" : [ 1 , 2 ] } }\u001e", want: []Message{{
			Type: TypeCompletion, InvocationID: "1", Result: json.RawMessage(`{ "a" : [ 1 , 2 ] }`),
		}}},
		{name: "unknown type keeps only type", frame: "{\"type\":99,\"invocationId\":\"1\",\"target\":\"x\",\"arguments\":[1],\"result\":1,\"error\":\"e\",\"sequenceId\":3}\u001e", want: []Message{{
			Type: MessageType(99),
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decodeFrame(t, tt.frame)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d messages, want %d: %+v", len(got), len(tt.want), got)
			}
			for i := range got {
				if g, w := normalize(got[i]), normalize(tt.want[i]); !reflect.DeepEqual(g, w) {
					t.Errorf("message %d:\n got %+v\nwant %+v", i, g, w)
				}
			}
			if tt.emptyArgs && (got[0].Arguments == nil || len(got[0].Arguments) != 0) {
				t.Errorf("arguments = %#v, want empty non-nil", got[0].Arguments)
			}
		})
	}
}

func TestHandshakeRequestVectors(t *testing.T) {
	for _, tt := range []struct {
		frame   string
		version int
	}{{vecHandshakeV1, 1}, {vecHandshakeV2, 2}} {
		h, rest, err := ParseHandshakeRequest([]byte(tt.frame))
		if err != nil {
			t.Fatalf("ParseHandshakeRequest(%q): %v", tt.frame, err)
		}
		if h != (HandshakeRequest{Protocol: "json", Version: tt.version}) || len(rest) != 0 {
			t.Errorf("ParseHandshakeRequest(%q) = %+v, rest %q", tt.frame, h, rest)
		}
		if msg := ValidateHandshake(h); msg != "" {
			t.Errorf("ValidateHandshake(%+v) = %q, want accepted", h, msg)
		}
		if got := string(AppendHandshakeRequest(nil, tt.version)); got != tt.frame {
			t.Errorf("AppendHandshakeRequest(%d) = %q, want %q", tt.version, got, tt.frame)
		}
	}

	// The handshake may share the transport message with hub messages.
	h, rest, err := ParseHandshakeRequest([]byte(vecHandshakeV1 + vecPing))
	if err != nil || h.Protocol != "json" || string(rest) != vecPing {
		t.Errorf("handshake followed by ping: %+v, rest %q, err %v", h, rest, err)
	}
}

func TestValidateHandshake(t *testing.T) {
	tests := []struct {
		h    HandshakeRequest
		want string
	}{
		{HandshakeRequest{"json", 0}, ""},
		{HandshakeRequest{"json", 2}, ""},
		{HandshakeRequest{"xml", 1}, "The protocol 'xml' is not supported."},
		{HandshakeRequest{"messagepack", 1}, "The protocol 'messagepack' is not supported."},
		{HandshakeRequest{"json", 3}, "The server does not support version 3 of the 'json' protocol."},
		{HandshakeRequest{"json", -1}, "The server does not support version -1 of the 'json' protocol."},
	}
	for _, tt := range tests {
		if got := ValidateHandshake(tt.h); got != tt.want {
			t.Errorf("ValidateHandshake(%+v) = %q, want %q", tt.h, got, tt.want)
		}
	}
}

func TestHandshakeResponseVectors(t *testing.T) {
	if got := string(AppendHandshakeResponse(nil, "")); got != vecHandshakeOK {
		t.Errorf("AppendHandshakeResponse(ok) = %q, want %q", got, vecHandshakeOK)
	}
	errText := ValidateHandshake(HandshakeRequest{Protocol: "xml", Version: 1})
	if got := string(AppendHandshakeResponse(nil, errText)); got != vecHandshakeErr {
		t.Errorf("AppendHandshakeResponse(err) = %q, want %q", got, vecHandshakeErr)
	}

	tests := []struct {
		name, data, wantErr, wantRest string
	}{
		{name: "ok", data: vecHandshakeOK},
		{name: "error", data: vecHandshakeErr, wantErr: "The protocol 'xml' is not supported."},
		{name: "ok followed by messages", data: vecHandshakeOK + vecBroadcast + vecPing, wantRest: vecBroadcast + vecPing},
		{name: "unknown fields", data: "{\"minorVersion\":0}\u001e"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errText, rest, err := ParseHandshakeResponse([]byte(tt.data))
			if err != nil {
				t.Fatalf("ParseHandshakeResponse: %v", err)
			}
			if errText != tt.wantErr || string(rest) != tt.wantRest {
				t.Errorf("got (%q, %q), want (%q, %q)", errText, rest, tt.wantErr, tt.wantRest)
			}
		})
	}
}

func TestHandshakeErrors(t *testing.T) {
	requests := map[string]string{
		"no separator":     `{"protocol":"json","version":1}`,
		"malformed":        "{\"protocol\":\"json\",\u001e",
		"missing protocol": "{\"version\":1}\u001e",
		"missing version":  "{\"protocol\":\"json\"}\u001e",
		"string version":   "{\"protocol\":\"json\",\"version\":\"1\"}\u001e",
		"not an object":    "[1]\u001e",
		"null":             "null\u001e",
		"empty":            "\u001e",
	}
	for name, data := range requests {
		if _, _, err := ParseHandshakeRequest([]byte(data)); !errors.Is(err, ErrProtocol) {
			t.Errorf("request %s: err = %v, want ErrProtocol", name, err)
		}
	}
	responses := map[string]string{
		"no separator":          `{}`,
		"malformed":             "{\u001e",
		"hub message not reply": vecPing,
		"not an object":         "[]\u001e",
		"null":                  "null\u001e",
		"string":                "\"ok\"\u001e",
		"empty":                 "\u001e",
	}
	for name, data := range responses {
		if _, _, err := ParseHandshakeResponse([]byte(data)); !errors.Is(err, ErrProtocol) {
			t.Errorf("response %s: err = %v, want ErrProtocol", name, err)
		}
	}
}

func TestEncodeVectors(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"completion with result", AppendCompletion(nil, "0", []byte("42")), vecCompletionResult},
		{"completion with error", AppendCompletionError(nil, "1", "It didn't work!"), vecCompletionError},
		{"binding failure", AppendCompletionError(nil, "5", "Failed to invoke 'Add' due to an error on the server."), vecBindingFailure},
		{"stream item", AppendStreamItem(nil, "2", []byte("0")), vecStreamItem},
		{"stream end", AppendCompletion(nil, "2", nil), vecStreamEnd},
		{"ping", AppendPing(nil), vecPing},
		{"client close", AppendClose(nil, "", false), vecClientClose},
		{"close allowing reconnect", AppendClose(nil, "Server is shutting down", true), vecServerClose},
		{"handshake ok", AppendHandshakeResponse(nil, ""), vecHandshakeOK},
		{"handshake error", AppendHandshakeResponse(nil, "The protocol 'xml' is not supported."), vecHandshakeErr},
		{"broadcast", AppendInvocation(nil, "", "ReceiveMessage", []byte(`["hi"]`)), vecBroadcast},
		{"client result request", AppendInvocation(nil, "srv-1", "GetAnswer", nil), vecClientResultInvoke},
		{"sequence", AppendSequence(nil, 1), vecSequence},
		{"ack", AppendAck(nil, 1), vecAck},
		{"null result", AppendCompletion(nil, "7", []byte("null")), "{\"type\":3,\"invocationId\":\"7\",\"result\":null}\u001e"},
		{"stream invocation", AppendStreamInvocation(nil, "2", "Counter", []byte("[2]")), "{\"type\":4,\"invocationId\":\"2\",\"target\":\"Counter\",\"arguments\":[2]}\u001e"},
		{"cancel invocation", AppendCancelInvocation(nil, "2"), "{\"type\":5,\"invocationId\":\"2\"}\u001e"},
		{"nil stream item", AppendStreamItem(nil, "2", nil), "{\"type\":2,\"invocationId\":\"2\",\"item\":null}\u001e"},
		{"close with error only", AppendClose(nil, "bye", false), "{\"type\":7,\"error\":\"bye\"}\u001e"},
		{"close allowing reconnect only", AppendClose(nil, "", true), "{\"type\":7,\"allowReconnect\":true}\u001e"},
	}
	for _, tt := range tests {
		if string(tt.got) != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, tt.got, tt.want)
		}
	}
}

// TestEncodersAppend checks the encoders extend buf rather than overwrite it,
// so several records can be batched into one frame.
func TestEncodersAppend(t *testing.T) {
	buf := AppendPing([]byte("prefix"))
	buf = AppendCompletion(buf, "0", []byte("42"))
	if want := "prefix" + vecPing + vecCompletionResult; string(buf) != want {
		t.Errorf("got %q, want %q", buf, want)
	}
}

// TestAppendMessageCanonical checks that decoding a vector and re-encoding it
// with AppendMessage yields ASP.NET Core's field order.
func TestAppendMessageCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{vecInvocation, "{\"type\":1,\"invocationId\":\"0\",\"target\":\"Add\",\"arguments\":[40,2]}\u001e"},
		{vecNonBlocking, "{\"type\":1,\"target\":\"NonBlocking\",\"arguments\":[\"foo\"]}\u001e"},
		{vecStreamInvocation, "{\"type\":4,\"invocationId\":\"2\",\"target\":\"Counter\",\"arguments\":[2]}\u001e"},
		{vecUploadItem, "{\"type\":2,\"invocationId\":\"3\",\"item\":1}\u001e"},
		{vecUploadEnd, "{\"type\":3,\"invocationId\":\"3\"}\u001e"},
		{vecClientNoResult, "{\"type\":3,\"invocationId\":\"srv-2\",\"error\":\"Client didn't provide a result.\"}\u001e"},
		{vecClientResult, "{\"type\":3,\"invocationId\":\"srv-1\",\"result\":42}\u001e"},
		{vecServerClose, vecServerClose},
		{vecPing, vecPing},
		{vecAck, vecAck},
		{vecSequence, vecSequence},
		{vecBroadcast, vecBroadcast},
		{"{\"invocationId\":\"4\",\"type\":5}\u001e", "{\"type\":5,\"invocationId\":\"4\"}\u001e"},
		{"{\"type\":99}\u001e", "{\"type\":99}\u001e"},
	}
	for _, tt := range tests {
		m := decodeFrame(t, tt.in)[0]
		if got := string(AppendMessage(nil, &m)); got != tt.want {
			t.Errorf("AppendMessage(decode(%q)):\n got %q\nwant %q", tt.in, got, tt.want)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := map[string]string{
		"malformed json":                      `{"type":1,`,
		"not an object":                       `[1,2]`,
		"null":                                `null`,
		"empty record":                        ``,
		"trailing garbage":                    `{"type":6} x`,
		"missing type":                        `{"target":"Add","arguments":[]}`,
		"type is a string":                    `{"type":"1"}`,
		"type is fractional":                  `{"type":1.5}`,
		"invocation without target":           `{"type":1,"arguments":[]}`,
		"invocation with empty target":        `{"type":1,"target":"","arguments":[]}`,
		"invocation without arguments":        `{"type":1,"target":"Add"}`,
		"invocation with null arguments":      `{"type":1,"target":"Add","arguments":null}`,
		"invocation with object arguments":    `{"type":1,"target":"Add","arguments":{}}`,
		"stream invocation without id":        `{"type":4,"target":"Counter","arguments":[2]}`,
		"stream invocation with empty id":     `{"type":4,"invocationId":"","target":"Counter","arguments":[2]}`,
		"stream invocation without target":    `{"type":4,"invocationId":"1","arguments":[]}`,
		"stream item without id":              `{"type":2,"item":1}`,
		"stream item without item":            `{"type":2,"invocationId":"1"}`,
		"completion without id":               `{"type":3,"result":1}`,
		"completion with result and error":    `{"type":3,"invocationId":"1","result":1,"error":"x"}`,
		"completion with null result and err": `{"type":3,"invocationId":"1","result":null,"error":"x"}`,
		"completion with numeric error":       `{"type":3,"invocationId":"1","error":5}`,
		"cancel without id":                   `{"type":5}`,
		"ack without sequenceId":              `{"type":8}`,
		"sequence without sequenceId":         `{"type":9}`,
		"headers not strings":                 `{"type":6,"headers":{"a":1}}`,
		"invocation id not a string":          `{"type":3,"invocationId":1}`,
	}
	for name, rec := range tests {
		t.Run(name, func(t *testing.T) {
			m, err := DecodeMessage([]byte(rec))
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("DecodeMessage(%q) = %+v, %v; want an error wrapping ErrProtocol", rec, m, err)
			}
		})
	}
}

func TestSplitRecords(t *testing.T) {
	t.Run("trailing bytes without separator", func(t *testing.T) {
		var n int
		err := SplitRecords([]byte(vecPing+`{"type":6}`), func([]byte) error { n++; return nil })
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("err = %v, want ErrProtocol", err)
		}
		if n != 1 {
			t.Errorf("complete records before the bad tail: got %d, want 1", n)
		}
	})
	t.Run("empty frame", func(t *testing.T) {
		if err := SplitRecords(nil, func([]byte) error { t.Fatal("called"); return nil }); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("callback error stops", func(t *testing.T) {
		stop := errors.New("stop")
		var n int
		err := SplitRecords([]byte(vecBatched), func([]byte) error { n++; return stop })
		if err != stop || n != 1 {
			t.Fatalf("err = %v after %d records, want stop after 1", err, n)
		}
	})
	t.Run("records without separator", func(t *testing.T) {
		var got []string
		if err := SplitRecords([]byte(vecBatched), func(r []byte) error {
			if bytes.IndexByte(r, RecordSeparator) >= 0 {
				t.Errorf("record %q contains the separator", r)
			}
			got = append(got, string(r))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || got[1] != `{"type":6}` {
			t.Errorf("records = %q", got)
		}
	})
}

func TestMessageTypeString(t *testing.T) {
	names := []string{"", "Invocation", "StreamItem", "Completion", "StreamInvocation",
		"CancelInvocation", "Ping", "Close", "Ack", "Sequence"}
	for i := 1; i < len(names); i++ {
		if got := MessageType(i).String(); got != names[i] {
			t.Errorf("MessageType(%d) = %q, want %q", i, got, names[i])
		}
	}
	if got := MessageType(42).String(); got != "MessageType(42)" {
		t.Errorf("unknown type String = %q", got)
	}
}
