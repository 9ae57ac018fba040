package protocol

import (
	"bytes"
	"reflect"
	"testing"
)

// fuzzSeeds are malformed or borderline inputs added to the vectors.
var fuzzSeeds = []string{
	"",
	"\u001e",
	"{\"type\":6}",
	"{\"type\":99,\"x\":1}\u001e",
	"{\"type\":3,\"invocationId\":\"1\",\"result\":1,\"error\":\"x\"}\u001e",
	"{\"type\":1,\"target\":\"a\",\"arguments\":[{\"k\":[1,2,{\"z\":null}]},\"\\u001e\",1e999]}\u001e",
	"{\"type\":7,\"error\":\"\"}\u001e",
	"{\"type\":1,\"invocationId\":\"\",\"target\":\"\\u00e9\\n\",\"arguments\":[ 1 , \"x\" ]}\u001e",
	"{\"type\":2,\"invocationId\":\"1\",\"item\":null,\"headers\":{\"a\":\"b\"}}\u001e",
	"{\"TYPE\":6}\u001e",
	"null\u001e",
	"{\"protocol\":\"json\",\"version\":1}\u001e{\"type\":6}\u001e",
	"{\"error\":null}\u001e",
	"{\"type\":null}\u001e",
}

// roundTripView strips what AppendMessage legitimately drops or normalises:
// headers and streamIds are not written, and a Close with an empty error
// text is written without the error field.
func roundTripView(m Message) Message {
	m.Headers = nil
	m.StreamIDs = nil
	if m.Type == TypeClose && m.Error == "" {
		m.HasError = false
	}
	if len(m.Arguments) == 0 {
		m.Arguments = nil
	}
	return m
}

// FuzzDecode checks that no input makes the decoder panic and that every
// message that decodes survives re-encoding: AppendMessage's output decodes
// to the same message and is a fixed point of decode+encode.
func FuzzDecode(f *testing.F) {
	for _, s := range allVectors {
		f.Add([]byte(s))
	}
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		_ = SplitRecords(frame, func(rec []byte) error {
			if bytes.IndexByte(rec, RecordSeparator) >= 0 {
				t.Fatalf("record %q contains the separator", rec)
			}
			m, err := DecodeMessage(rec)
			if err != nil {
				return nil // keep going: later records must not panic either
			}
			enc := AppendMessage(nil, &m)
			if len(enc) == 0 || enc[len(enc)-1] != RecordSeparator {
				t.Fatalf("AppendMessage(%+v) = %q: no trailing separator", m, enc)
			}
			if i := bytes.IndexByte(enc, RecordSeparator); i != len(enc)-1 {
				t.Fatalf("AppendMessage(%+v) = %q: separator inside the record", m, enc)
			}
			m2, err := DecodeMessage(enc[:len(enc)-1])
			if err != nil {
				t.Fatalf("re-encoded %q (from %q) does not decode: %v", enc, rec, err)
			}
			if a, b := roundTripView(m), roundTripView(m2); !reflect.DeepEqual(a, b) {
				t.Fatalf("round trip changed the message:\n rec %q\n enc %q\n got %+v\nwant %+v", rec, enc, b, a)
			}
			if enc2 := AppendMessage(nil, &m2); !bytes.Equal(enc, enc2) {
				t.Fatalf("encoding is not canonical: %q then %q", enc, enc2)
			}
			return nil
		})
	})
}

// FuzzHandshake checks the handshake parsers never panic, that what they
// return is consistent with the input, and that accepted values re-encode to
// something that parses back to the same values.
func FuzzHandshake(f *testing.F) {
	for _, s := range allVectors {
		f.Add([]byte(s))
	}
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, rest, err := ParseHandshakeRequest(data); err == nil {
			if !bytes.HasSuffix(data, rest) || len(rest) >= len(data) {
				t.Fatalf("rest %q is not a proper suffix of %q", rest, data)
			}
			if msg := ValidateHandshake(h); msg == "" && h.Protocol != "json" {
				t.Fatalf("accepted protocol %q", h.Protocol)
			}
			if h.Protocol == "json" {
				enc := AppendHandshakeRequest(nil, h.Version)
				h2, rest2, err := ParseHandshakeRequest(enc)
				if err != nil || h2 != h || len(rest2) != 0 {
					t.Fatalf("re-encoded %q: got %+v, rest %q, err %v; want %+v", enc, h2, rest2, err, h)
				}
			}
		}
		if errText, rest, err := ParseHandshakeResponse(data); err == nil {
			if !bytes.HasSuffix(data, rest) || len(rest) >= len(data) {
				t.Fatalf("rest %q is not a proper suffix of %q", rest, data)
			}
			enc := AppendHandshakeResponse(nil, errText)
			errText2, rest2, err := ParseHandshakeResponse(enc)
			if err != nil || errText2 != errText || len(rest2) != 0 {
				t.Fatalf("re-encoded %q: got %q, rest %q, err %v; want %q", enc, errText2, rest2, err, errText)
			}
		}
	})
}
