package hubnode_test

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode"
)

// BenchmarkFanOut measures the node's local fan-out path: one SendGroup to
// a group of 20 WebSocket members (serialised once, queued to each
// member, written by the members' writers) until every member's client has
// read it. The clients are bare WebSockets that count records without
// decoding them, so the figure is the node's work plus the loopback
// socket writes and reads. ns/op is per send; ns/delivery divides it by 20;
// cpu-ns/delivery is the process's CPU time (node and clients) per delivery.
//
//	go test -run '^$' -bench BenchmarkFanOut -benchmem ./hubnode/
func BenchmarkFanOut(b *testing.B) {
	const members = 20
	node, url := startLoneNode(b, hubnode.Config{}, joinGroupMethod)

	// received counts records read by all members; reached is signalled
	// when it gets to target, so waiting costs no CPU.
	var received, target atomic.Int64
	reached := make(chan struct{}, 1)
	count := func(n int) {
		if received.Add(int64(n)) >= target.Load() {
			select {
			case reached <- struct{}{}:
			default:
			}
		}
	}
	for range members {
		ws, _ := dialJoined(b, url)
		go func() {
			buf := make([]byte, 4096)
			for {
				_, rd, err := ws.NextReader()
				if err != nil {
					return
				}
				for {
					n, err := rd.Read(buf)
					count(bytes.Count(buf[:n], []byte{0x1e}))
					if err != nil {
						break
					}
				}
			}
		}()
	}
	payload := map[string]any{"content": strings.Repeat("x", 100), "sessionId": "s"}
	ctx := context.Background()
	await := func(want int64) {
		target.Store(want)
		timeout := time.NewTimer(30 * time.Second)
		defer timeout.Stop()
		for received.Load() < want {
			select {
			case <-reached:
			case <-timeout.C:
				b.Fatalf("received %d of %d records", received.Load(), want)
			}
		}
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	run := func(b *testing.B, window int64, pause time.Duration) {
		start := received.Load()
		b.ReportAllocs()
		cpu0 := cpu()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := node.SendGroup(ctx, "g", "ReceiveSessionMessage", payload); err != nil {
				b.Fatal(err)
			}
			// Stay within the members' send queues (a member that falls
			// too far behind is closed as a slow consumer).
			await(start + (int64(i)+1-window)*members)
			if pause > 0 {
				time.Sleep(pause)
			}
		}
		await(start + int64(b.N)*members)
		b.StopTimer()
		deliveries := float64(int64(b.N) * members)
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
		// CPU of the whole process (node and clients) per delivery: the
		// one-at-a-time wall time is mostly waiting.
		b.ReportMetric(float64((cpu()-cpu0).Nanoseconds())/deliveries, "cpu-ns/delivery")
	}
	// One send at a time: every record is its own socket write, as at
	// 20 messages/s per member.
	b.Run("one-at-a-time", func(b *testing.B) { run(b, 1, 0) })
	// One send every 2 ms, each after the last was read: a busy session
	// (the fan-out benchmark's members get one every 50 ms). Read
	// cpu-ns/delivery; the wall time is mostly the pause.
	b.Run("paced", func(b *testing.B) { run(b, 1, 2*time.Millisecond) })
	// Up to 256 sends in flight: the writers batch queued records.
	b.Run("burst", func(b *testing.B) { run(b, 256, 0) })
}
