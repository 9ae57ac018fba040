package backplane

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// receiver owns the node's one pub/sub connection (a go-redis PubSub).
//
// Receive loop: a single goroutine reads the connection and, in arrival
// order, records subscription confirmations, wakes barrier and probe
// waiters, and hands deliveries to the Handler. go-redis reconnects by
// itself when a read fails and re-sends SUBSCRIBE for every channel; the
// loop sees the failed read, counts the outage, marks every channel
// unconfirmed until its new confirmation arrives, and backs off while
// Redis is unreachable.
//
// Confirmation: subscribe writes SUBSCRIBE, then a PING with a unique token
// on the same connection (a barrier). Redis answers in order, so when the
// PONG for the token is read, every confirmation for commands written before
// it has been read too: the channel is subscribed if its last confirmation
// says so. This stays right across reconnects (the new connection's
// re-SUBSCRIBEs are written before anything else), stale confirmations of
// abandoned earlier calls, and SUBSCRIBEs Redis refused.
//
// Health check (a second goroutine): every HeartbeatInterval it re-sends
// SUBSCRIBE for wanted channels that stayed unconfirmed across two checks
// (a refused or lost subscription heals when the cause goes away), PINGs an
// idle connection, and replaces the PubSub if the connection stayed silent
// for silentAfter even so (a half-open TCP connection gives no error).
type receiver struct {
	b           *Backplane
	inbox       string
	pongWait    time.Duration // how long a barrier waits for its PONG before re-trying
	silentAfter time.Duration // no read for this long on a pinged connection: replace it

	// wmu orders subscription writes with changes of the wanted set, so
	// the commands on the wire follow the set's history; it also guards
	// replacing ps.
	wmu sync.Mutex

	mu       sync.Mutex
	ps       *redis.PubSub            // written under wmu and mu
	desired  map[string]bool          // wanted channels → confirmed on the current connection
	waiters  map[string]chan struct{} // barrier and probe tokens
	broken   bool                     // the last read failed; reads have not resumed
	lastErr  error                    // the error that broke it
	stale    int                      // wanted channels unconfirmed at two consecutive health checks
	lastRead time.Time
	refused  bool // Redis refused a command (logged once per episode)

	token atomic.Uint64

	// receive goroutine only
	seen map[string]originSeq
	buf  []byte

	started bool
	quit    chan struct{}
	done    chan struct{} // receive loop exited
	hdone   chan struct{} // health check exited
}

// originSeq is the last sequence number delivered from one origin node.
type originSeq struct {
	instance uint64
	seq      uint64
	at       time.Time
}

func newReceiver(b *Backplane) *receiver {
	r := &receiver{
		b:           b,
		inbox:       b.k.chNode(b.cfg.NodeID),
		pongWait:    max(b.cfg.HeartbeatInterval, time.Second),
		silentAfter: max(b.cfg.deadAfter(), 5*time.Second),
		desired:     map[string]bool{},
		waiters:     map[string]chan struct{}{},
		seen:        map[string]originSeq{},
		quit:        make(chan struct{}),
		done:        make(chan struct{}),
		hdone:       make(chan struct{}),
	}
	return r
}

func (r *receiver) start() {
	r.mu.Lock()
	r.ps = r.b.rdb.Subscribe(context.Background())
	r.lastRead = time.Now()
	r.mu.Unlock()
	r.started = true
	go r.run()
	go r.health()
}

// stop closes the pub/sub connection and waits for both goroutines.
func (r *receiver) stop() {
	if !r.started {
		r.closePubSub()
		return
	}
	close(r.quit)
	r.closePubSub()
	<-r.done
	<-r.hdone
}

func (r *receiver) closePubSub() {
	r.wmu.Lock()
	r.mu.Lock()
	ps := r.ps
	r.mu.Unlock()
	r.wmu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
}

func (r *receiver) pubsub() *redis.PubSub {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ps
}

// downErr returns why the subscription connection is down, or nil.
func (r *receiver) downErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.broken {
		return nil
	}
	return r.lastErr
}

// count is the number of wanted channels.
func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.desired)
}

// confirmed reports whether ch is wanted and confirmed on the current
// connection.
func (r *receiver) confirmed(ch string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.desired[ch]
}

// subscribe adds ch to the wanted set and returns once Redis confirmed the
// subscription (see the type comment), or ctx ended. On error ch stays
// wanted: the health check keeps trying, and the caller decides whether to
// unsubscribe.
func (r *receiver) subscribe(ctx context.Context, ch string) error {
	r.wmu.Lock()
	r.mu.Lock()
	r.desired[ch] = false
	ps := r.ps
	r.mu.Unlock()
	err := ps.Subscribe(ctx, ch)
	r.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", ch, err)
	}
	backoff := time.Duration(0)
	for {
		ok, err := r.barrier(ctx, func() bool { return r.desired[ch] })
		if err != nil {
			return fmt.Errorf("subscribe %s: waiting for confirmation: %w", ch, err)
		}
		if ok {
			return nil
		}
		// The SUBSCRIBE was lost with its connection or refused: wait a
		// little and send it again.
		backoff = nextBackoff(backoff, 10*time.Millisecond, r.pongWait)
		if !sleepCtx(ctx, r.quit, backoff) {
			if ctx.Err() != nil {
				return fmt.Errorf("subscribe %s: %w", ch, ctx.Err())
			}
			return fmt.Errorf("subscribe %s: %w", ch, ErrClosed)
		}
		r.resend(ctx, []string{ch})
	}
}

// unsubscribe removes ch from the wanted set and writes UNSUBSCRIBE. It
// does not wait for the confirmation: once ch is no longer wanted, no
// reconnect re-subscribes it, and a later subscribe of ch is ordered after
// this UNSUBSCRIBE on the wire.
func (r *receiver) unsubscribe(ctx context.Context, ch string) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.Lock()
	delete(r.desired, ch)
	ps := r.ps
	r.mu.Unlock()
	if err := ps.Unsubscribe(ctx, ch); err != nil {
		r.b.log.Debug("unsubscribe failed; the channel is dropped on reconnect", "channel", ch, "err", err)
	}
}

// resend writes SUBSCRIBE again for those of chans that are still wanted
// and unconfirmed.
func (r *receiver) resend(ctx context.Context, chans []string) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.Lock()
	todo := chans[:0:0]
	for _, ch := range chans {
		if ok, wanted := r.desired[ch]; wanted && !ok {
			todo = append(todo, ch)
		}
	}
	ps := r.ps
	r.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	if err := ps.Subscribe(ctx, todo...); err != nil {
		r.b.log.Debug("re-subscribe failed", "channels", len(todo), "err", err)
	}
}

// barrier writes a PING with a fresh token and waits for its PONG. It then
// reports check() (evaluated under mu). It returns false without error if
// no PONG came within pongWait (the PING was lost with its connection).
func (r *receiver) barrier(ctx context.Context, check func() bool) (bool, error) {
	token, c := r.newWaiter("b")
	defer r.dropWaiter(token)
	if err := r.pubsub().Ping(ctx, token); err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, nil
	}
	t := time.NewTimer(r.pongWait)
	defer t.Stop()
	select {
	case <-c:
		r.mu.Lock()
		defer r.mu.Unlock()
		return check(), nil
	case <-t.C:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	case <-r.quit:
		return false, ErrClosed
	}
}

func (r *receiver) newWaiter(kind string) (string, chan struct{}) {
	token := kind + strconv.FormatUint(r.b.instance, 36) + "." + strconv.FormatUint(r.token.Add(1), 36)
	c := make(chan struct{})
	r.mu.Lock()
	r.waiters[token] = c
	r.mu.Unlock()
	return token, c
}

func (r *receiver) dropWaiter(token string) {
	r.mu.Lock()
	delete(r.waiters, token)
	r.mu.Unlock()
}

// wake closes the waiter of token, if any.
func (r *receiver) wake(token string) {
	r.mu.Lock()
	if c, ok := r.waiters[token]; ok {
		close(c)
		delete(r.waiters, token)
	}
	r.mu.Unlock()
}

// ready is Backplane.Ready without the state check.
func (r *receiver) ready(ctx context.Context) error {
	r.mu.Lock()
	broken, stale, n := r.broken, r.stale, len(r.desired)
	r.mu.Unlock()
	if broken {
		return fmt.Errorf("subscription connection is down: %v", r.downErr())
	}
	token, c := r.newWaiter("p")
	defer r.dropWaiter(token)
	e := envelope{kind: kindProbe, scope: ScopeNode, origin: r.b.cfg.NodeID, key: r.b.cfg.NodeID, arg: token}
	if err := r.b.pub.publish(ctx, r.inbox, &e, nil, true); err != nil {
		return fmt.Errorf("probe: publish: %w", err)
	}
	select {
	case <-c:
	case <-ctx.Done():
		return fmt.Errorf("probe did not come back through the subscription: %w", ctx.Err())
	case <-r.quit:
		return ErrClosed
	}
	if stale > 0 {
		return fmt.Errorf("%d of %d channels unconfirmed since the last health check", stale, n)
	}
	return nil
}

// run is the receive loop.
func (r *receiver) run() {
	defer close(r.done)
	var backoff time.Duration
	ctx := context.Background()
	for {
		ps := r.pubsub()
		msg, err := ps.Receive(ctx)
		if err != nil {
			select {
			case <-r.quit:
				return
			default:
			}
			if errors.Is(err, redis.ErrClosed) {
				// Replaced by the health check: read the new one. (Closed
				// without replacement happens only with quit closed.)
				if r.pubsub() == ps && !sleepCtx(ctx, r.quit, 10*time.Millisecond) {
					return
				}
				continue
			}
			var rerr redis.Error
			if errors.As(err, &rerr) {
				// The connection is fine but Redis refused a command (e.g. a
				// SUBSCRIBE the ACL forbids): nothing is known to be
				// subscribed any more; the health check re-sends.
				r.onRefused(err)
				continue
			}
			r.onBroken(err)
			backoff = nextBackoff(backoff, 10*time.Millisecond, min(time.Second, r.b.cfg.HeartbeatInterval))
			if !sleepCtx(ctx, r.quit, backoff) {
				return
			}
			continue
		}
		backoff = 0
		r.onRead()
		switch m := msg.(type) {
		case *redis.Subscription:
			r.onConfirmation(m)
		case *redis.Pong:
			r.wake(m.Payload)
		case *redis.Message:
			r.dispatch(m)
		}
	}
}

func (r *receiver) onRead() {
	r.mu.Lock()
	r.lastRead = time.Now()
	wasBroken := r.broken
	r.broken = false
	r.mu.Unlock()
	if wasBroken {
		r.b.stats.reconnects.Add(1)
		r.b.log.Info("subscription connection restored")
	}
}

func (r *receiver) onBroken(err error) {
	r.mu.Lock()
	wasBroken := r.broken
	r.broken, r.lastErr = true, err
	for ch := range r.desired {
		r.desired[ch] = false
	}
	r.mu.Unlock()
	if !wasBroken {
		r.b.log.Warn("subscription connection lost; reconnecting", "err", err)
	} else {
		r.b.log.Debug("subscription connection still down", "err", err)
	}
}

func (r *receiver) onRefused(err error) {
	r.mu.Lock()
	for ch := range r.desired {
		r.desired[ch] = false
	}
	first := !r.refused
	r.refused = true
	r.mu.Unlock()
	if first {
		r.b.log.Warn("Redis refused a subscription command; retrying", "err", err)
	}
}

func (r *receiver) onConfirmation(m *redis.Subscription) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, wanted := r.desired[m.Channel]; !wanted {
		return
	}
	switch m.Kind {
	case "subscribe":
		r.desired[m.Channel] = true
		if r.refused {
			r.refused = false
			r.b.log.Info("Redis accepts subscriptions again")
		}
	case "unsubscribe":
		r.desired[m.Channel] = false
	}
}

// dispatch decodes one message and hands it to the Handler.
func (r *receiver) dispatch(m *redis.Message) {
	e, err := decodeEnvelope(m.Payload)
	if err != nil {
		r.b.stats.dropped.Add(1)
		r.b.log.Debug("dropped an undecodable message", "channel", m.Channel, "err", err)
		return
	}
	self := r.b.cfg.NodeID
	if e.kind == kindProbe {
		if e.origin == self && e.instance == r.b.instance {
			r.wake(e.arg)
		}
		return
	}
	// The publisher delivered its fan-out to its local members itself;
	// messages it addressed to its own inbox are delivered like any other.
	if e.origin == self && m.Channel != r.inbox {
		return
	}
	if !r.fresh(&e) {
		r.b.stats.duplicates.Add(1)
		return
	}
	if r.b.h == nil {
		return
	}
	r.buf = append(r.buf[:0], e.frame...)
	d := Delivery{
		Scope: e.scope, Kind: e.kind, Key: e.key, Arg: e.arg,
		Exclude: e.exclude, Origin: e.origin, Frame: r.buf,
	}
	if r.handle(d) {
		r.b.stats.received.Add(1)
	} else {
		r.b.stats.dropped.Add(1)
	}
	if cap(r.buf) > 1<<20 {
		r.buf = nil // do not pin one huge frame's buffer forever
	}
}

// handle calls the Handler; a panic is logged and counted instead of
// killing the receive loop (and with it every delivery of the node).
func (r *receiver) handle(d Delivery) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			r.b.log.Error("handler panicked; delivery dropped", "panic", p, "kind", d.Kind, "scope", d.Scope)
			ok = false
		}
	}()
	r.b.h(d)
	return true
}

// fresh reports whether e is newer than the last message delivered from its
// origin (see the envelope format), and records it.
func (r *receiver) fresh(e *envelope) bool {
	last, ok := r.seen[e.origin]
	if ok && last.instance == e.instance && e.seq <= last.seq {
		return false
	}
	now := time.Now()
	r.seen[e.origin] = originSeq{instance: e.instance, seq: e.seq, at: now}
	if len(r.seen) > 4096 {
		for k, v := range r.seen {
			if now.Sub(v.at) > 10*time.Minute {
				delete(r.seen, k)
			}
		}
	}
	return true
}

// health is the health-check loop (see the type comment).
func (r *receiver) health() {
	defer close(r.hdone)
	interval := r.b.cfg.HeartbeatInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	prev := map[string]bool{}
	for {
		select {
		case <-r.quit:
			return
		case <-t.C:
		}
		r.mu.Lock()
		broken, idle := r.broken, time.Since(r.lastRead)
		var unconfirmed, stale []string
		for ch, ok := range r.desired {
			if !ok {
				unconfirmed = append(unconfirmed, ch)
				if prev[ch] {
					stale = append(stale, ch)
				}
			}
		}
		r.stale = len(stale)
		r.mu.Unlock()
		clear(prev)
		for _, ch := range unconfirmed {
			prev[ch] = true
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(interval, time.Second))
		if !broken {
			switch {
			case idle > r.silentAfter:
				r.b.log.Warn("subscription connection silent; replacing it", "idle", idle)
				r.replace(ctx)
			case idle > interval/2:
				_ = r.pubsub().Ping(ctx, "keepalive")
			}
		}
		if len(stale) > 0 {
			r.resend(ctx, stale)
		}
		cancel()
	}
}

// replace swaps the PubSub for a new one subscribed to every wanted
// channel and closes the old one (its blocked read returns ErrClosed and the
// receive loop moves to the new one).
func (r *receiver) replace(ctx context.Context) {
	r.wmu.Lock()
	r.mu.Lock()
	old := r.ps
	ps := r.b.rdb.Subscribe(context.Background())
	r.ps = ps
	chans := make([]string, 0, len(r.desired))
	for ch := range r.desired {
		r.desired[ch] = false
		chans = append(chans, ch)
	}
	r.broken = true // counted as a reconnect when reads resume
	r.lastErr = errors.New("subscription connection went silent and was replaced")
	r.lastRead = time.Now()
	r.mu.Unlock()
	if len(chans) > 0 {
		if err := ps.Subscribe(ctx, chans...); err != nil {
			r.b.log.Debug("subscribing the new connection failed; retried on the next read", "err", err)
		}
	}
	r.wmu.Unlock()
	_ = old.Close()
}
