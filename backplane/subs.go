package backplane

import (
	"context"
	"sync"
)

// subscriptions reference-counts the group and user channels of local
// connections: a channel is subscribed while at least one local member
// needs it. The operations of one channel are serialised (chanRef.mu held
// across the Redis round trip), so a Leave racing a Join of the same
// channel resolves in one order or the other, never to "member without a
// subscription"; different channels proceed in parallel.
type subscriptions struct {
	rx *receiver

	mu    sync.Mutex
	chans map[string]*chanRef
}

// chanRef is the state of one refcounted channel.
type chanRef struct {
	users int // goroutines holding the ref; guarded by subscriptions.mu

	mu         sync.Mutex
	members    map[string]struct{} // local connection ids needing the channel
	subscribed bool                // wanted from the receiver: true iff members is non-empty
}

func newSubscriptions(rx *receiver) *subscriptions {
	return &subscriptions{rx: rx, chans: map[string]*chanRef{}}
}

func (s *subscriptions) acquire(ch string) *chanRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.chans[ch]
	if r == nil {
		r = &chanRef{members: map[string]struct{}{}}
		s.chans[ch] = r
	}
	r.users++
	return r
}

func (s *subscriptions) release(ch string, r *chanRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.users--
	// With no other holder, r's fields are stable: the last holder's writes
	// happened before its release, under s.mu.
	if r.users == 0 && len(r.members) == 0 && !r.subscribed {
		delete(s.chans, ch)
	}
}

// add makes member need ch and returns once ch is subscribed and confirmed
// by Redis. On error the membership stays (the subscription stays wanted and
// the receiver's health check keeps restoring it): the caller still holds
// the member locally, and remove undoes it.
func (s *subscriptions) add(ctx context.Context, ch, member string) error {
	r := s.acquire(ch)
	defer s.release(ch, r)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.members[member] = struct{}{}
	if r.subscribed && s.rx.confirmed(ch) {
		return nil
	}
	r.subscribed = true
	return s.rx.subscribe(ctx, ch)
}

// remove drops member from ch and unsubscribes ch when it was the last.
func (s *subscriptions) remove(ctx context.Context, ch, member string) {
	r := s.acquire(ch)
	defer s.release(ch, r)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.members[member]; !ok {
		return
	}
	delete(r.members, member)
	if len(r.members) == 0 && r.subscribed {
		r.subscribed = false
		s.rx.unsubscribe(ctx, ch)
	}
}

// refs returns the number of local members of ch (for tests).
func (s *subscriptions) refs(ch string) int {
	r := s.acquire(ch)
	defer s.release(ch, r)
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.members)
}
