package hubnode

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestInboundQueueBoundedInBytes: messages read but not yet decoded are
// bounded by MaxFrameSize bytes, not only by their count: the reader waits
// for the decoder rather than holding MaxQueuedInvocations messages of up
// to MaxFrameSize each; an empty queue takes any message (readFrame bounds
// its size).
func TestInboundQueueBoundedInBytes(t *testing.T) {
	n, err := New(Config{NodeID: "n", TokenSecret: []byte("s"), MaxMessageSize: 50, MaxFrameSize: 100,
		MaxQueuedInvocations: 10}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &Conn{node: n, hub: &Hub{name: "t", node: n}, ctx: ctx, cancel: cancel}
	pings := func(k int) []byte { return bytes.Repeat([]byte("{\"type\":6}\x1e"), k) } // 11 bytes each
	state := func() (queued, size int, waiting bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.inbound), c.inboundLen, c.inboundRoom != nil
	}

	c.mu.Lock()
	c.decoding = true // the decoder is busy: nothing leaves the queue
	c.mu.Unlock()
	if !c.pushInbound(pings(15)) { // 165 bytes, into an empty queue
		t.Fatal("an empty queue refused a message")
	}
	c.mu.Lock()
	c.inbound, c.inboundLen = nil, 0
	c.mu.Unlock()

	if !c.pushInbound(pings(5)) { // 55 bytes
		t.Fatal("first push refused")
	}
	pushed := make(chan bool, 1)
	go func() { pushed <- c.pushInbound(pings(5)) }() // 110 bytes would be over 100
	deadline := time.Now().Add(5 * time.Second)
	for {
		if queued, size, waiting := state(); waiting {
			if queued != 1 || size != 55 {
				t.Fatalf("while the reader waits: %d messages, %d bytes queued; want 1, 55", queued, size)
			}
			break
		}
		select {
		case ok := <-pushed:
			t.Fatalf("a push over the byte bound returned %v instead of waiting", ok)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the reader never waited for room")
		}
		time.Sleep(time.Millisecond) // poll interval
	}

	// The decoder takes the first message; the waiting one goes in.
	go c.decodeLoop()
	select {
	case ok := <-pushed:
		if !ok {
			t.Fatal("the waiting push was refused")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting push never went in")
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		c.mu.Lock()
		idle := !c.decoding && len(c.inbound) == 0 && c.inboundLen == 0
		c.mu.Unlock()
		if idle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the decoder never emptied the queue")
		}
		time.Sleep(time.Millisecond) // poll interval
	}
}
