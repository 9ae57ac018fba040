package hubnode

import "sync"

// sendQueue is a connection's outgoing record queue, bounded by record count
// and by bytes. It holds references to frames, never copies: a broadcast frame
// is shared, read-only, by every member's queue.
//
// No goroutine waits on an idle queue: push reports whether the caller must
// start the writer (the queue went from idle to busy), and the writer exits
// when it finds the queue empty. An idle connection therefore costs no writer
// goroutine and no channel.
type sendQueue struct {
	mu        sync.Mutex
	frames    [][]byte
	bytes     int
	maxFrames int
	maxBytes  int
	writing   bool          // a writer goroutine owns the drain
	idle      chan struct{} // closed when the current writer exits
	closed    bool
	highWater int
}

type pushResult int

const (
	pushQueued      pushResult = iota // queued; a writer is already running
	pushStartWriter                   // queued; the caller must start the writer
	pushFull                          // refused: the queue is full (slow consumer)
	pushClosed                        // refused: the connection is closing
)

func newSendQueue(maxFrames, maxBytes int) *sendQueue {
	return &sendQueue{maxFrames: maxFrames, maxBytes: maxBytes}
}

func (q *sendQueue) push(frame []byte) pushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return pushClosed
	}
	if len(q.frames) >= q.maxFrames || (q.bytes+len(frame) > q.maxBytes && len(q.frames) > 0) {
		return pushFull
	}
	q.frames = append(q.frames, frame)
	q.bytes += len(frame)
	if q.bytes > q.highWater {
		q.highWater = q.bytes
	}
	return q.startWriterLocked()
}

func (q *sendQueue) startWriterLocked() pushResult {
	if q.writing {
		return pushQueued
	}
	q.writing = true
	q.idle = make(chan struct{})
	return pushStartWriter
}

// hold queues first and marks the queue as owned by a writer that the
// caller starts later, so records pushed meanwhile wait behind first.
func (q *sendQueue) hold(first []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.frames = append(q.frames, first)
	q.bytes += len(first)
	q.startWriterLocked()
}

// writerDone returns a channel that is closed once no writer owns the queue.
func (q *sendQueue) writerDone() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.writing {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return q.idle
}

// pushFinal queues the last record (a Close) even when the queue is full of
// ordinary records, and refuses everything after it.
func (q *sendQueue) pushFinal(frame []byte) pushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return pushClosed
	}
	q.closed = true
	if frame != nil {
		q.frames = append(q.frames, frame)
		q.bytes += len(frame)
	}
	return q.startWriterLocked()
}

// take moves up to maxBytes of queued records (at least one) into dst. When
// the queue is empty it returns ok=false and the writer must exit: the drain
// is released here unless the queue is closed, in which case the writer
// finishes the close first and then calls writerExit. closed reports that no
// record will ever follow.
func (q *sendQueue) take(dst [][]byte, maxBytes int) (out [][]byte, closed bool, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.takeLocked(dst, maxBytes)
}

func (q *sendQueue) takeLocked(dst [][]byte, maxBytes int) (out [][]byte, closed bool, ok bool) {
	if len(q.frames) == 0 {
		if !q.closed {
			q.exitLocked()
		}
		return dst, q.closed, false
	}
	n, size := 0, 0
	for n < len(q.frames) {
		l := len(q.frames[n])
		if n > 0 && size+l > maxBytes {
			break
		}
		size += l
		n++
	}
	dst = append(dst, q.frames[:n]...)
	clear(q.frames[:n])
	q.frames = q.frames[n:]
	if len(q.frames) == 0 {
		q.frames = nil // let the backing array go; idle connections keep nothing
	}
	q.bytes -= size
	return dst, q.closed && len(q.frames) == 0, true
}

// takeState is what takeOpen found.
type takeState int

const (
	takeGot     takeState = iota // records were taken
	takeEmpty                    // nothing queued: the drain is released
	takeClosing                  // the queue is closed: nothing taken, the drain kept for the writer goroutine
)

// takeOpen is take for an inline writer (startWriting): it leaves a closed
// queue alone, so the final record and the close stay with the writer
// goroutine.
func (q *sendQueue) takeOpen(dst [][]byte, maxBytes int) ([][]byte, takeState) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return dst, takeClosing
	}
	out, _, ok := q.takeLocked(dst, maxBytes)
	if !ok {
		return out, takeEmpty // takeLocked released the drain
	}
	return out, takeGot
}

// releaseIfIdle releases the drain when nothing is queued and the queue is
// open, and reports whether it did; otherwise the caller still owns it.
func (q *sendQueue) releaseIfIdle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.frames) > 0 || q.closed {
		return false
	}
	q.exitLocked()
	return true
}

// writerExit releases the drain after a writer stopped early (write error)
// or finished the final record. It is idempotent.
func (q *sendQueue) writerExit() {
	q.mu.Lock()
	q.exitLocked()
	q.mu.Unlock()
}

func (q *sendQueue) exitLocked() {
	if q.writing {
		q.writing = false
		close(q.idle)
	}
}

// discard drops everything queued and refuses further records; it
// returns how many records it dropped.
func (q *sendQueue) discard() int {
	q.mu.Lock()
	dropped := len(q.frames)
	q.closed = true
	q.frames = nil
	q.bytes = 0
	q.mu.Unlock()
	return dropped
}

func (q *sendQueue) depth() (frames, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.frames), q.bytes
}
