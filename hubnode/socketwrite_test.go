package hubnode_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode"
)

// TestStalledClientGetsWholeFramesInOrder: records written to a client that
// stops reading fill its socket buffer (the non-blocking write comes back
// short and the writer goroutine finishes the frame); once the client reads
// again every record arrives, whole and in order.
func TestStalledClientGetsWholeFramesInOrder(t *testing.T) {
	node, url := startLoneNode(t, hubnode.Config{SendQueueBytes: 256 << 20, SendQueueFrames: 100000, WriteTimeout: 30 * time.Second},
		joinGroupMethod)
	ws, pending := dialJoined(t, url) // pending: records read but not yet checked
	_ = ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	next := func() []byte {
		t.Helper()
		for {
			if i := bytes.IndexByte(pending, 0x1e); i >= 0 {
				rec := pending[:i]
				pending = pending[i+1:]
				return rec
			}
			_, msg, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			pending = append(pending, msg...)
		}
	}

	// The client reads nothing now. 300 records of 32 KiB, paced so that
	// many find the connection idle and are written inline, are far more
	// than the socket buffers hold.
	const n = 300
	filler := strings.Repeat("x", 32<<10)
	ctx := context.Background()
	for i := range n {
		if err := node.SendGroup(ctx, "g", "Item", i, filler); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	for i := 0; i < n; {
		rec := next()
		var m struct {
			Type      int               `json:"type"`
			Target    string            `json:"target"`
			Arguments []json.RawMessage `json:"arguments"`
		}
		if err := json.Unmarshal(rec, &m); err != nil {
			t.Fatalf("record %d is not whole JSON (%d bytes): %v", i, len(rec), err)
		}
		if m.Type != 1 || m.Target != "Item" {
			continue // pings
		}
		if got := string(m.Arguments[0]); got != fmt.Sprint(i) {
			t.Fatalf("record %d carries %s: out of order", i, got)
		}
		if len(m.Arguments[1]) != len(filler)+2 {
			t.Fatalf("record %d payload is %d bytes, want %d", i, len(m.Arguments[1]), len(filler)+2)
		}
		i++
	}
}
