package client

import (
	"context"
	"strings"
	"testing"
)

// BenchmarkSend measures the client's write path: a non-blocking invocation
// with a ~200-byte string argument, encoded into the reused buffer. The
// server discards frames unread so only the client's work is counted.
func BenchmarkSend(b *testing.B) {
	s := newFakeServer(b)
	s.sink = true
	c, err := Dial(context.Background(), s.url, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	msg := strings.Repeat("lorem ipsum ", 16) + "12345678"
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Send(ctx, "SendMessage", msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInvoke measures a full round trip against the in-process fake
// server; it is dominated by loopback latency and its allocations include
// the fake server's.
func BenchmarkInvoke(b *testing.B) {
	s := newFakeServer(b)
	s.quiet = true
	c, err := Dial(context.Background(), s.url, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Invoke(ctx, "Add", 40, 2); err != nil {
			b.Fatal(err)
		}
	}
}
