package backplane

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchestratorchat/hubfarm/internal/backoff"
	"github.com/redis/go-redis/v9"
)

// receiver owns the node's pub/sub connections (go-redis PubSubs): one on a
// single server or Sentinel (SUBSCRIBE), one per channel bucket on Redis
// Cluster (SSUBSCRIBE; see keys). Each connection is a shard of the
// receiver with its own wanted set, receive loop and health state.
//
// Receive loops: one goroutine per shard reads its connection and, in
// arrival order, records subscription confirmations, wakes barrier and
// probe waiters, and hands deliveries to the Handler. Deliveries of all
// shards go through one mutex, so the Handler is never called concurrently
// and sees each connection's messages in arrival order. go-redis reconnects
// by itself when a read fails and re-sends (S)SUBSCRIBE for every channel;
// the loop sees the failed read, counts the outage, marks the shard's
// channels unconfirmed until their new confirmations arrive, and backs off
// while Redis is unreachable. On Cluster, go-redis connects a sharded
// PubSub to the master owning the slot of its first channel, which is the
// slot of the whole bucket.
//
// Confirmation: subscribe writes (S)SUBSCRIBE, then a PING with a unique
// token on the same connection (a barrier). Redis answers in order, so when
// the PONG for the token is read, every confirmation for commands written
// before it has been read too: the channel is subscribed if its last
// confirmation says so. This stays right across reconnects (the new
// connection's re-subscriptions are written before anything else), stale
// confirmations of abandoned earlier calls, and subscriptions Redis refused.
//
// Health check (one goroutine for all shards): every HeartbeatInterval it
// re-sends subscriptions of wanted channels that stayed unconfirmed across
// two checks (a refused or lost subscription heals when the cause goes
// away), PINGs an idle connection, and replaces a shard's PubSub if the
// connection stayed silent for silentAfter even so (a half-open TCP
// connection gives no error). On Cluster it also replaces a shard's
// connection when Redis moved its slot: Redis then sends SUNSUBSCRIBE for
// the bucket's channels (or answers MOVED), and the replacement, made after
// the client reloaded the slot map, subscribes them at the new owner.
type receiver struct {
	b           *Backplane
	inbox       string
	pongWait    time.Duration // how long a barrier waits for its PONG before re-trying
	silentAfter time.Duration // no read for this long on a pinged connection: replace it
	shards      []*shard

	wmu     sync.Mutex
	waiters map[string]chan struct{} // barrier and probe tokens; guarded by wmu
	token   atomic.Uint64

	// dmu serialises deliveries to the Handler across shards; buf is the
	// frame copy handed to it.
	dmu sync.Mutex
	buf []byte

	started bool
	quit    chan struct{}
	done    sync.WaitGroup // receive loops
	hdone   chan struct{}  // health check exited
}

// shard is one pub/sub connection and the channels it carries.
type shard struct {
	r     *receiver
	idx   int
	probe string // sharded: this node's probe channel in the bucket; "" on one server (the inbox is probed)

	// wmu orders subscription writes with changes of the wanted set, so
	// the commands on the wire follow the set's history; it also guards
	// replacing ps.
	wmu sync.Mutex

	mu       sync.Mutex
	ps       *redis.PubSub   // written under wmu and mu
	desired  map[string]bool // wanted channels → confirmed on the current connection
	unsubs   map[string]int  // our unsubscriptions whose confirmation is still due
	broken   bool            // the last read failed; reads have not resumed
	lastErr  error           // the error that broke it
	stale    int             // wanted channels unconfirmed at two consecutive health checks
	lastRead time.Time
	refused  bool // Redis refused a command (logged once per episode)
	moved    bool // sharded: Redis moved the bucket's slot; replace the connection

	// receive goroutine only (under r.dmu while dispatching)
	seen map[string]originSeq
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
		waiters:     map[string]chan struct{}{},
		quit:        make(chan struct{}),
		hdone:       make(chan struct{}),
	}
	n := 1
	if b.sharded {
		n = b.k.buckets
	}
	for i := range n {
		sh := &shard{r: r, idx: i, desired: map[string]bool{}, unsubs: map[string]int{}, seen: map[string]originSeq{}}
		if b.sharded {
			sh.probe = b.k.chProbe(i, b.cfg.NodeID)
		}
		r.shards = append(r.shards, sh)
	}
	return r
}

// shardOf returns the shard carrying channel ch.
func (r *receiver) shardOf(ch string) *shard {
	return r.shards[r.b.k.chBucket(ch)]
}

func (r *receiver) start() {
	for _, sh := range r.shards {
		sh.mu.Lock()
		sh.ps = sh.newPubSub()
		sh.lastRead = time.Now()
		sh.mu.Unlock()
	}
	r.started = true
	for _, sh := range r.shards {
		r.done.Add(1)
		go sh.run()
	}
	go r.health()
}

// newPubSub returns a new PubSub for the shard. On Cluster it is sharded
// and subscribes the shard's probe channel at once: go-redis connects a
// PubSub to the master owning the slot of its first channel (on every
// reconnect too), and one created without a channel would connect to a
// random master as soon as the receive loop reads it. (Should that first
// SSUBSCRIBE fail, the channel is still recorded for the reconnect.)
func (sh *shard) newPubSub() *redis.PubSub {
	r := sh.r
	if cc, ok := r.b.rdb.(*redis.ClusterClient); ok && r.b.sharded {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return cc.SSubscribe(ctx, sh.probe)
	}
	return r.b.rdb.Subscribe(context.Background())
}

// subscribeCmd writes the subscription command of the topology.
func (r *receiver) subscribeCmd(ctx context.Context, ps *redis.PubSub, chans ...string) error {
	if r.b.sharded {
		return ps.SSubscribe(ctx, chans...)
	}
	return ps.Subscribe(ctx, chans...)
}

// stop closes the pub/sub connections and waits for every goroutine.
func (r *receiver) stop() {
	if !r.started {
		r.closePubSub()
		return
	}
	close(r.quit)
	r.closePubSub()
	r.done.Wait()
	<-r.hdone
}

func (r *receiver) closePubSub() {
	for _, sh := range r.shards {
		sh.wmu.Lock()
		sh.mu.Lock()
		ps := sh.ps
		sh.mu.Unlock()
		sh.wmu.Unlock()
		if ps != nil {
			_ = ps.Close()
		}
	}
}

func (sh *shard) pubsub() *redis.PubSub {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.ps
}

// downErr returns why a subscription connection is down, or nil.
func (r *receiver) downErr() error {
	for _, sh := range r.shards {
		sh.mu.Lock()
		broken, err := sh.broken, sh.lastErr
		sh.mu.Unlock()
		if broken {
			return err
		}
	}
	return nil
}

// count is the number of wanted channels, probe channels excepted.
func (r *receiver) count() int {
	n := 0
	for _, sh := range r.shards {
		sh.mu.Lock()
		n += len(sh.desired)
		if _, ok := sh.desired[sh.probe]; ok && sh.probe != "" {
			n--
		}
		sh.mu.Unlock()
	}
	return n
}

// confirmed reports whether ch is wanted and confirmed on the current
// connection.
func (r *receiver) confirmed(ch string) bool {
	sh := r.shardOf(ch)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.desired[ch]
}

// subscribe adds ch to the wanted set and returns once Redis confirmed the
// subscription (see the type comment), or ctx ended. On error ch stays
// wanted: the health check keeps trying, and the caller decides whether to
// unsubscribe.
func (r *receiver) subscribe(ctx context.Context, ch string) error {
	sh := r.shardOf(ch)
	sh.wmu.Lock()
	sh.mu.Lock()
	sh.desired[ch] = false
	ps := sh.ps
	sh.mu.Unlock()
	err := r.subscribeCmd(ctx, ps, ch)
	sh.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", ch, err)
	}
	// Jittered, so that the nodes that lost Redis together do not re-send
	// in lock step.
	bo := backoff.Exp{Min: 10 * time.Millisecond, Max: r.pongWait}
	for {
		ok, err := sh.barrier(ctx, func() bool { return sh.desired[ch] })
		if err != nil {
			return fmt.Errorf("subscribe %s: waiting for confirmation: %w", ch, err)
		}
		if ok {
			return nil
		}
		// The subscription was lost with its connection, refused, or its
		// slot moved: wait a little and send it again (on a connection the
		// health check may meanwhile have replaced).
		if !sleepCtx(ctx, r.quit, bo.Next()) {
			if ctx.Err() != nil {
				return fmt.Errorf("subscribe %s: %w", ch, ctx.Err())
			}
			return fmt.Errorf("subscribe %s: %w", ch, ErrClosed)
		}
		sh.resend(ctx, []string{ch})
	}
}

// unsubscribe removes ch from the wanted set and writes (S)UNSUBSCRIBE. It
// does not wait for the confirmation: once ch is no longer wanted, no
// reconnect re-subscribes it, and a later subscribe of ch is ordered after
// this unsubscription on the wire.
func (r *receiver) unsubscribe(ctx context.Context, ch string) {
	sh := r.shardOf(ch)
	sh.wmu.Lock()
	defer sh.wmu.Unlock()
	sh.mu.Lock()
	delete(sh.desired, ch)
	sh.unsubs[ch]++
	ps := sh.ps
	sh.mu.Unlock()
	var err error
	if r.b.sharded {
		err = ps.SUnsubscribe(ctx, ch)
	} else {
		err = ps.Unsubscribe(ctx, ch)
	}
	if err != nil {
		r.b.log.Debug("unsubscribe failed; the channel is dropped on reconnect", "channel", ch, "err", err)
	}
}

// resend writes the subscription again for those of chans that are still
// wanted and unconfirmed.
func (sh *shard) resend(ctx context.Context, chans []string) {
	sh.wmu.Lock()
	defer sh.wmu.Unlock()
	sh.mu.Lock()
	todo := chans[:0:0]
	for _, ch := range chans {
		if ok, wanted := sh.desired[ch]; wanted && !ok {
			todo = append(todo, ch)
		}
	}
	ps := sh.ps
	sh.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	if err := sh.r.subscribeCmd(ctx, ps, todo...); err != nil {
		sh.r.b.log.Debug("re-subscribe failed", "channels", len(todo), "err", err)
	}
}

// barrier writes a PING with a fresh token and waits for its PONG. It then
// reports check() (evaluated under sh.mu). It returns false without error
// if no PONG came within pongWait (the PING was lost with its connection).
func (sh *shard) barrier(ctx context.Context, check func() bool) (bool, error) {
	r := sh.r
	token, c := r.newWaiter("b")
	defer r.dropWaiter(token)
	if err := sh.pubsub().Ping(ctx, token); err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, nil
	}
	t := time.NewTimer(r.pongWait)
	defer t.Stop()
	select {
	case <-c:
		sh.mu.Lock()
		defer sh.mu.Unlock()
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
	r.wmu.Lock()
	r.waiters[token] = c
	r.wmu.Unlock()
	return token, c
}

func (r *receiver) dropWaiter(token string) {
	r.wmu.Lock()
	delete(r.waiters, token)
	r.wmu.Unlock()
}

// wake closes the waiter of token, if any.
func (r *receiver) wake(token string) {
	r.wmu.Lock()
	if c, ok := r.waiters[token]; ok {
		close(c)
		delete(r.waiters, token)
	}
	r.wmu.Unlock()
}

// ready is Backplane.Ready without the state check: every shard must be
// connected, carry a probe published through the publisher back to this
// node within ctx, and have no channel unconfirmed across a health check.
func (r *receiver) ready(ctx context.Context) error {
	type probe struct {
		sh    *shard
		token string
		c     chan struct{}
		stale int
		n     int
	}
	probes := make([]probe, 0, len(r.shards))
	defer func() {
		for _, p := range probes {
			r.dropWaiter(p.token)
		}
	}()
	for _, sh := range r.shards {
		sh.mu.Lock()
		broken, lastErr, stale, n := sh.broken, sh.lastErr, sh.stale, len(sh.desired)
		sh.mu.Unlock()
		if broken {
			return fmt.Errorf("%s is down: %v", sh.name(), lastErr)
		}
		token, c := r.newWaiter("p")
		probes = append(probes, probe{sh: sh, token: token, c: c, stale: stale, n: n})
		ch := sh.probe
		if ch == "" {
			ch = r.inbox
		}
		e := envelope{kind: kindProbe, scope: ScopeNode, origin: r.b.cfg.NodeID, key: r.b.cfg.NodeID, arg: token}
		if err := r.b.pub.publish(ctx, ch, &e, nil, true); err != nil {
			return fmt.Errorf("probe of %s: publish: %w", sh.name(), err)
		}
	}
	for _, p := range probes {
		select {
		case <-p.c:
		case <-ctx.Done():
			return fmt.Errorf("probe did not come back through %s: %w", p.sh.name(), ctx.Err())
		case <-r.quit:
			return ErrClosed
		}
		if p.stale > 0 {
			return fmt.Errorf("%s: %d of %d channels unconfirmed since the last health check", p.sh.name(), p.stale, p.n)
		}
	}
	return nil
}

// name names the shard's connection in errors and logs.
func (sh *shard) name() string {
	if sh.probe == "" {
		return "the subscription connection"
	}
	return "sharded subscription connection of bucket " + strconv.Itoa(sh.idx)
}

// run is the receive loop of one shard.
func (sh *shard) run() {
	r := sh.r
	defer r.done.Done()
	// Each failed read redials (go-redis reconnects on the next Receive):
	// back off exponentially, with jitter so that every node of the farm
	// does not redial in lock step after a Redis restart.
	bo := backoff.Exp{Min: 10 * time.Millisecond, Max: min(time.Second, r.b.cfg.HeartbeatInterval)}
	ctx := context.Background()
	for {
		ps := sh.pubsub()
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
				if sh.pubsub() == ps && !sleepCtx(ctx, r.quit, 10*time.Millisecond) {
					return
				}
				continue
			}
			var rerr redis.Error
			if errors.As(err, &rerr) {
				// The connection is fine but Redis refused a command (e.g. a
				// SUBSCRIBE the ACL forbids, or MOVED after a slot move):
				// nothing is known to be subscribed any more; the health
				// check re-sends, or replaces the connection.
				sh.onRefused(err)
				continue
			}
			sh.onBroken(err)
			if !sleepCtx(ctx, r.quit, bo.Next()) {
				return
			}
			continue
		}
		bo.Reset()
		sh.onRead()
		switch m := msg.(type) {
		case *redis.Subscription:
			sh.onConfirmation(m)
		case *redis.Pong:
			r.wake(m.Payload)
		case *redis.Message:
			sh.dispatch(m)
		}
	}
}

func (sh *shard) onRead() {
	sh.mu.Lock()
	sh.lastRead = time.Now()
	wasBroken := sh.broken
	sh.broken = false
	sh.mu.Unlock()
	if wasBroken {
		sh.r.b.stats.reconnects.Add(1)
		sh.r.b.log.Info("subscription connection restored", "connection", sh.name())
	}
}

func (sh *shard) onBroken(err error) {
	sh.mu.Lock()
	wasBroken := sh.broken
	sh.broken, sh.lastErr = true, err
	for ch := range sh.desired {
		sh.desired[ch] = false
	}
	clear(sh.unsubs)
	sh.mu.Unlock()
	if sh.probe != "" {
		// The master may be gone (failover): let go-redis reload the slot
		// map so its reconnect dials the slot's new owner.
		if cc, ok := sh.r.b.rdb.(*redis.ClusterClient); ok {
			cc.ReloadState(context.Background())
		}
	}
	if !wasBroken {
		sh.r.b.log.Warn("subscription connection lost; reconnecting", "connection", sh.name(), "err", err)
	} else {
		sh.r.b.log.Debug("subscription connection still down", "connection", sh.name(), "err", err)
	}
}

func (sh *shard) onRefused(err error) {
	sh.mu.Lock()
	for ch := range sh.desired {
		sh.desired[ch] = false
	}
	first := !sh.refused
	sh.refused = true
	if sh.probe != "" && isMoved(err) {
		sh.moved = true
	}
	sh.mu.Unlock()
	if first {
		sh.r.b.log.Warn("Redis refused a subscription command; retrying", "connection", sh.name(), "err", err)
	}
}

// isMoved reports a cluster redirection: the slot lives elsewhere now.
func isMoved(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "MOVED ") || strings.HasPrefix(s, "ASK ")
}

func (sh *shard) onConfirmation(m *redis.Subscription) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ours := false
	if m.Kind == "unsubscribe" || m.Kind == "sunsubscribe" {
		if n := sh.unsubs[m.Channel]; n > 0 {
			ours = true
			if n == 1 {
				delete(sh.unsubs, m.Channel)
			} else {
				sh.unsubs[m.Channel] = n - 1
			}
		}
	}
	if _, wanted := sh.desired[m.Channel]; !wanted {
		return
	}
	switch m.Kind {
	case "subscribe", "ssubscribe":
		sh.desired[m.Channel] = true
		if sh.refused {
			sh.refused = false
			sh.r.b.log.Info("Redis accepts subscriptions again", "connection", sh.name())
		}
	case "unsubscribe", "sunsubscribe":
		sh.desired[m.Channel] = false
		if !ours && m.Kind == "sunsubscribe" {
			// Redis dropped a wanted channel by itself: its slot moved to
			// another master. The health check reconnects the bucket there.
			sh.moved = true
		}
	}
}

// dispatch decodes one message and hands it to the Handler.
func (sh *shard) dispatch(m *redis.Message) {
	r := sh.r
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
	r.dmu.Lock()
	defer r.dmu.Unlock()
	if !sh.fresh(&e) {
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
// killing the receive loop (and with it every delivery of the shard).
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
// origin on this shard (see the envelope format), and records it. One
// publisher's messages reach one connection in publish order, so the check
// is per shard: the shards' connections are not ordered with each other.
func (sh *shard) fresh(e *envelope) bool {
	last, ok := sh.seen[e.origin]
	if ok && last.instance == e.instance && e.seq <= last.seq {
		return false
	}
	now := time.Now()
	sh.seen[e.origin] = originSeq{instance: e.instance, seq: e.seq, at: now}
	if len(sh.seen) > 4096 {
		for k, v := range sh.seen {
			if now.Sub(v.at) > 10*time.Minute {
				delete(sh.seen, k)
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
	prev := make([]map[string]bool, len(r.shards))
	for i := range prev {
		prev[i] = map[string]bool{}
	}
	for {
		select {
		case <-r.quit:
			return
		case <-t.C:
		}
		for i, sh := range r.shards {
			sh.check(prev[i], interval)
		}
	}
}

// check is one health check of the shard; prev holds the channels that
// were unconfirmed at the previous check.
func (sh *shard) check(prev map[string]bool, interval time.Duration) {
	r := sh.r
	sh.mu.Lock()
	broken, idle, moved := sh.broken, time.Since(sh.lastRead), sh.moved
	sh.moved = false
	var unconfirmed, stale []string
	for ch, ok := range sh.desired {
		if !ok {
			unconfirmed = append(unconfirmed, ch)
			if prev[ch] {
				stale = append(stale, ch)
			}
		}
	}
	sh.stale = len(stale)
	sh.mu.Unlock()
	clear(prev)
	for _, ch := range unconfirmed {
		prev[ch] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(interval, time.Second))
	defer cancel()
	switch {
	case moved:
		r.b.log.Warn("the bucket's slot moved; subscribing at its new owner", "connection", sh.name())
		if cc, ok := r.b.rdb.(*redis.ClusterClient); ok {
			cc.ReloadState(ctx)
		}
		sh.replace(ctx, "its slot moved to another master")
		return
	case !broken && idle > r.silentAfter:
		r.b.log.Warn("subscription connection silent; replacing it", "connection", sh.name(), "idle", idle)
		sh.replace(ctx, "subscription connection went silent and was replaced")
		return
	case !broken && idle > interval/2:
		_ = sh.pubsub().Ping(ctx, "keepalive")
	}
	if len(stale) > 0 {
		sh.resend(ctx, stale)
	}
}

// replace swaps the shard's PubSub for a new one subscribed to every wanted
// channel and closes the old one (its blocked read returns ErrClosed and the
// receive loop moves to the new one).
func (sh *shard) replace(ctx context.Context, why string) {
	sh.wmu.Lock()
	sh.mu.Lock()
	old := sh.ps
	ps := sh.newPubSub()
	sh.ps = ps
	chans := make([]string, 0, len(sh.desired))
	for ch := range sh.desired {
		sh.desired[ch] = false
		chans = append(chans, ch)
	}
	clear(sh.unsubs)
	sh.broken = true // counted as a reconnect when reads resume
	sh.lastErr = errors.New(why)
	sh.lastRead = time.Now()
	sh.mu.Unlock()
	if len(chans) > 0 {
		if err := sh.r.subscribeCmd(ctx, ps, chans...); err != nil {
			sh.r.b.log.Debug("subscribing the new connection failed; retried on the next read", "err", err)
		}
	}
	sh.wmu.Unlock()
	_ = old.Close()
}
