package hubnode

import "testing"

func TestSendQueueBoundsAndBatching(t *testing.T) {
	q := newSendQueue(4, 100)
	if r := q.push(make([]byte, 30)); r != pushStartWriter {
		t.Fatalf("first push = %v, want the caller to start the writer", r)
	}
	if r := q.push(make([]byte, 30)); r != pushQueued {
		t.Fatalf("second push = %v, want queued behind the running writer", r)
	}
	q.push(make([]byte, 30))
	if r := q.push(make([]byte, 30)); r != pushFull {
		t.Fatalf("push over the byte bound = %v, want full", r)
	}
	batch, closed, ok := q.take(nil, 64)
	if !ok || closed || len(batch) != 2 {
		t.Fatalf("take(64) = %d records, closed=%v ok=%v; want 2 records", len(batch), closed, ok)
	}
	batch, _, ok = q.take(batch[:0], 64)
	if !ok || len(batch) != 1 {
		t.Fatalf("second take = %d records", len(batch))
	}
	if _, _, ok = q.take(batch[:0], 64); ok {
		t.Fatal("take on an empty queue must end the writer")
	}
	select {
	case <-q.writerDone():
	default:
		t.Fatal("writerDone not closed after the writer exited")
	}
	// A record larger than the batch limit still goes out whole.
	q.push(make([]byte, 90))
	if batch, _, ok = q.take(nil, 10); !ok || len(batch) != 1 {
		t.Fatalf("oversized record: %d records ok=%v", len(batch), ok)
	}
}

func TestSendQueueFrameBound(t *testing.T) {
	q := newSendQueue(2, 1<<20)
	q.push([]byte("a"))
	q.push([]byte("b"))
	if r := q.push([]byte("c")); r != pushFull {
		t.Fatalf("push over the record bound = %v, want full", r)
	}
}

func TestSendQueueFinalRecord(t *testing.T) {
	q := newSendQueue(1, 10)
	q.push([]byte("0123456789"))
	// The Close record goes in even though the queue is full...
	if r := q.pushFinal([]byte("close")); r != pushQueued {
		t.Fatalf("pushFinal = %v", r)
	}
	// ...and nothing after it.
	if r := q.push([]byte("x")); r != pushClosed {
		t.Fatalf("push after final = %v, want closed", r)
	}
	batch, closed, ok := q.take(nil, 100)
	if !ok || !closed || len(batch) != 2 || string(batch[1]) != "close" {
		t.Fatalf("take = %q closed=%v ok=%v", batch, closed, ok)
	}
	select {
	case <-q.writerDone():
		t.Fatal("the writer still owns the drain until it has closed the socket")
	default:
	}
	q.writerExit()
	<-q.writerDone()
}
