package protocol

import (
	"strings"
	"testing"
)

// A chat-style invocation as the JS client sends it (type last).
var benchInvocation = []byte(`{"target":"SendMessage","arguments":["user-4711","Hello everyone, see you at the stand-up in five minutes"],"invocationId":"17","type":1}`)

func BenchmarkDecodeInvocation(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchInvocation)))
	for b.Loop() {
		m, err := DecodeMessage(benchInvocation)
		if err != nil || m.Target != "SendMessage" {
			b.Fatal(m, err)
		}
	}
}

func BenchmarkDecodeBatchedFrame(b *testing.B) {
	frame := []byte(vecBatched)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if err := SplitRecords(frame, func(rec []byte) error {
			_, err := DecodeMessage(rec)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendInvocation encodes a broadcast with one ~200-byte string
// argument into a reused buffer, the server's hot path.
func BenchmarkAppendInvocation(b *testing.B) {
	args := []byte(`["` + strings.Repeat("lorem ipsum ", 16) + `12345678"]`)
	if len(args) < 200 || len(args) > 210 {
		b.Fatalf("argument is %d bytes", len(args))
	}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(len(args)))
	for b.Loop() {
		buf = AppendInvocation(buf[:0], "", "ReceiveMessage", args)
	}
}

// BenchmarkAppendInvocationEscaped is the slow path: a target that needs
// escaping goes through encoding/json.
func BenchmarkAppendInvocationEscaped(b *testing.B) {
	args := []byte(`["` + strings.Repeat("lorem ipsum ", 16) + `12345678"]`)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendInvocation(buf[:0], "42", "Récepteur", args)
	}
}

func BenchmarkAppendCompletion(b *testing.B) {
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendCompletion(buf[:0], "17", []byte("42"))
	}
}
