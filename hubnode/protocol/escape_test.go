package protocol

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// escapeCases are strings whose JSON form needs escaping or non-ASCII care.
var escapeCases = []string{
	"",
	"plain",
	`quote " inside`,
	`back\slash`,
	"new\nline\r\ttab",
	"\x00\x01\x1e\x1f control",
	"\x7f delete",
	"héllo wörld",
	"日本語",
	"emoji 😀",
	"line sep \u2028 para sep \u2029",
	"<script>&</script>",
	"It didn't work!",
	strings.Repeat("a\"", 100),
}

// TestStringEscapingRoundTrip writes strings through every encoder that
// takes free text and reads them back with encoding/json.
func TestStringEscapingRoundTrip(t *testing.T) {
	for _, s := range escapeCases {
		records := map[string][]byte{
			"invocation id":     AppendInvocation(nil, s+"x", "T", nil), // non-empty: "" means non-blocking
			"invocation target": AppendInvocation(nil, "", s+"x", nil),
			"stream invocation": AppendStreamInvocation(nil, s+"x", s+"y", nil),
			"stream item":       AppendStreamItem(nil, s+"x", nil),
			"completion":        AppendCompletion(nil, s+"x", nil),
			"completion error":  AppendCompletionError(nil, s+"x", s),
			"cancel":            AppendCancelInvocation(nil, s+"x"),
			"close":             AppendClose(nil, s, true),
			"handshake error":   AppendHandshakeResponse(nil, s+"x"),
		}
		for name, rec := range records {
			if rec[len(rec)-1] != RecordSeparator {
				t.Fatalf("%s: record does not end with the separator: %q", name, rec)
			}
			body := rec[:len(rec)-1]
			if strings.IndexByte(string(body), RecordSeparator) >= 0 {
				t.Errorf("%s(%q): separator byte inside the record: %q", name, s, rec)
			}
			if !json.Valid(body) {
				t.Errorf("%s(%q): invalid JSON %q", name, s, body)
				continue
			}
			var v struct {
				InvocationID string `json:"invocationId"`
				Target       string `json:"target"`
				Error        string `json:"error"`
			}
			if err := json.Unmarshal(body, &v); err != nil {
				t.Errorf("%s(%q): %v", name, s, err)
				continue
			}
			var got, want string
			switch name {
			case "invocation target":
				got, want = v.Target, s+"x"
			case "stream invocation":
				if v.Target != s+"y" {
					t.Errorf("%s target: got %q, want %q", name, v.Target, s+"y")
				}
				got, want = v.InvocationID, s+"x"
			case "completion error":
				got, want = v.Error, s
				if v.InvocationID != s+"x" {
					t.Errorf("%s id: got %q, want %q", name, v.InvocationID, s+"x")
				}
			case "close":
				got, want = v.Error, s
			case "handshake error":
				got, want = v.Error, s+"x"
			default:
				got, want = v.InvocationID, s+"x"
			}
			if got != want {
				t.Errorf("%s: round trip got %q, want %q", name, got, want)
			}
		}

		// And through our own decoder.
		rec := AppendCompletionError(nil, "1", s)
		m, err := DecodeMessage(rec[:len(rec)-1])
		if err != nil || m.Error != s || !m.HasError {
			t.Errorf("DecodeMessage(completion error %q) = %+v, %v", s, m, err)
		}
	}
}

// TestInvalidUTF8 checks invalid UTF-8 never yields invalid JSON; like
// encoding/json the encoder substitutes U+FFFD.
func TestInvalidUTF8(t *testing.T) {
	for _, s := range []string{"\xff", "a\xc3", "\xed\xa0\x80 surrogate"} {
		rec := AppendCompletionError(nil, "1", s)
		body := rec[:len(rec)-1]
		if !json.Valid(body) {
			t.Fatalf("invalid JSON for %q: %q", s, body)
		}
		m, err := DecodeMessage(body)
		if err != nil {
			t.Fatalf("DecodeMessage: %v", err)
		}
		if !utf8.ValidString(m.Error) || !strings.ContainsRune(m.Error, utf8.RuneError) {
			t.Errorf("decoded %q, want valid UTF-8 with U+FFFD", m.Error)
		}
	}
}

// TestPlainStringsNotEscaped checks the fast path writes printable ASCII
// verbatim (the encoders promise no work beyond appending for them).
func TestPlainStringsNotEscaped(t *testing.T) {
	got := string(AppendInvocation(nil, "", "Send/Message-1_ok.~", nil))
	if want := "{\"type\":1,\"target\":\"Send/Message-1_ok.~\",\"arguments\":[]}\u001e"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
