package agents

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestSSEReader(t *testing.T) {
	cases := []struct {
		name, in string
		want     []sseEvent
		err      error
	}{
		{"one", "data: a\n\n", []sseEvent{{Data: "a"}}, io.EOF},
		{"no space", "data:a\n\n", []sseEvent{{Data: "a"}}, io.EOF},
		{"two spaces keep one", "data:  a\n\n", []sseEvent{{Data: " a"}}, io.EOF},
		{"multi-line", "data: a\ndata: b\n\n", []sseEvent{{Data: "a\nb"}}, io.EOF},
		{"crlf", "data: a\r\n\r\ndata: b\r\n\r\n", []sseEvent{{Data: "a"}, {Data: "b"}}, io.EOF},
		{"comments and empty events", ": ping\n\n\n: x\ndata: a\n\n", []sseEvent{{Data: "a"}}, io.EOF},
		{"event and id", "event: error\nid: 7\nretry: 10\ndata: x\n\n", []sseEvent{{Event: "error", Data: "x"}}, io.EOF},
		{"event reset", "event: e\n\ndata: x\n\n", []sseEvent{{Data: "x"}}, io.EOF},
		{"unterminated last event", "data: a\n\ndata: [DONE]", []sseEvent{{Data: "a"}, {Data: "[DONE]"}}, io.EOF},
		{"field without colon", "data\n\n", []sseEvent{{Data: ""}}, io.EOF},
		{"too long", "data: " + strings.Repeat("x", 100) + "\n\n", nil, errLineTooLong},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newSSEReader(strings.NewReader(c.in), 64)
			var got []sseEvent
			for {
				ev, err := r.next()
				if err != nil {
					if !errors.Is(err, c.err) {
						t.Fatalf("error %v, want %v", err, c.err)
					}
					break
				}
				got = append(got, ev)
			}
			if len(got) != len(c.want) {
				t.Fatalf("events %v, want %v", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("event %d: %v, want %v", i, got[i], c.want[i])
				}
			}
		})
	}
}
