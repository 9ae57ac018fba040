package backplane

import (
	"context"
	"fmt"
)

// Publish fans frame out to the other nodes' local members of a group
// (ScopeGroup, key = group), a user (ScopeUser, key = user id) or everyone
// (ScopeAll, key ignored). exclude is a connection id that must not receive
// it. The caller delivers to its own local members itself; this node never
// gets its own publication back.
//
// frame is opaque (an already serialised hub frame) and is copied before
// Publish returns. Publish blocks until the pipeline holding the publication
// ran and returns its error, or ctx's error if ctx ends first (the
// publication may still go out if it already left the queue). Publications
// from one node reach every subscriber in call order. Errors wrap the cause
// (errors.Is works with ErrClosed, context errors and Redis errors).
func (b *Backplane) Publish(ctx context.Context, scope Scope, key string, frame []byte, exclude string) error {
	ch, e, err := b.fanOut(scope, key, exclude)
	if err != nil {
		return fmt.Errorf("backplane: publish: %w", err)
	}
	if err := b.pub.publish(ctx, ch, &e, frame, false); err != nil {
		return fmt.Errorf("backplane: publish: %w", err)
	}
	return nil
}

// Post is Publish without waiting for the round trip to Redis: it returns
// once the publication is queued behind this node's earlier ones, waiting
// only while the queue is full (until ctx ends). Order with every other
// publication of this node is kept exactly as with Publish. It fails at
// once when Redis is known to be unreachable; a later failure is counted
// in Stats and logged, not returned. For senders whose answer does not
// depend on other nodes having been reached (the event is already durable
// elsewhere).
func (b *Backplane) Post(ctx context.Context, scope Scope, key string, frame []byte, exclude string) error {
	ch, e, err := b.fanOut(scope, key, exclude)
	if err == nil {
		err = b.pub.post(ctx, ch, &e, frame)
	}
	if err != nil {
		return fmt.Errorf("backplane: post: %w", err)
	}
	return nil
}

// fanOut is the channel and envelope of a frame for the other nodes'
// members of a group, a user or everyone.
func (b *Backplane) fanOut(scope Scope, key, exclude string) (string, envelope, error) {
	var ch string
	switch scope {
	case ScopeGroup:
		ch = b.k.chGroup(key)
	case ScopeUser:
		ch = b.k.chUser(key)
	case ScopeAll:
		ch, key = b.k.chAll(), ""
	default:
		return "", envelope{}, fmt.Errorf("%w %d", ErrInvalidScope, scope)
	}
	return ch, envelope{kind: KindFrame, scope: scope, origin: b.cfg.NodeID, key: key, exclude: exclude}, nil
}

// PublishConnection sends frame to one connection on another node: it looks
// up the node holding connID in the registry and sends to that node's
// inbox. An id no node holds gives ErrUnknownConnection; a holding node that
// is gone (not yet reaped) gives ErrNoReceiver. The caller short-circuits
// its own local connections; if connID is on this node anyway, the message
// comes back through this node's inbox.
func (b *Backplane) PublishConnection(ctx context.Context, connID string, frame []byte) error {
	if err := b.toConnection(ctx, KindFrame, connID, "", frame); err != nil {
		return fmt.Errorf("backplane: publish to connection: %w", err)
	}
	return nil
}

// CloseConnection asks the node holding connID to close it; reason travels
// in Delivery.Arg. Errors as PublishConnection.
func (b *Backplane) CloseConnection(ctx context.Context, connID, reason string) error {
	if err := b.toConnection(ctx, KindClose, connID, reason, nil); err != nil {
		return fmt.Errorf("backplane: close connection: %w", err)
	}
	return nil
}

func (b *Backplane) toConnection(ctx context.Context, kind Kind, connID, arg string, frame []byte) error {
	if err := b.usable(); err != nil {
		return err
	}
	node, err := b.connectionNode(ctx, connID)
	if err != nil {
		return err
	}
	e := envelope{kind: kind, scope: ScopeConnection, origin: b.cfg.NodeID, key: connID, arg: arg}
	return b.pub.publish(ctx, b.k.chNode(node), &e, frame, true)
}

// PublishUserMembership tells every node to put its local connections of
// user into group (join) or take them out (leave): KindJoinGroup or
// KindLeaveGroup on the user's channel, Key = user, Arg = group. The
// receiving nodes apply it with JoinGroup/LeaveGroup; the caller applies it
// to its own local connections itself.
//
// Like Post, it returns once the message is queued (in order with this
// node's other publications), not after the round trip: the other nodes
// apply it as they receive it whatever the caller waits for, so waiting
// would only slow every session join down.
func (b *Backplane) PublishUserMembership(ctx context.Context, user, group string, join bool) error {
	kind := KindLeaveGroup
	if join {
		kind = KindJoinGroup
	}
	e := envelope{kind: kind, scope: ScopeUser, origin: b.cfg.NodeID, key: user, arg: group}
	if err := b.pub.post(ctx, b.k.chUser(user), &e, nil); err != nil {
		return fmt.Errorf("backplane: publish user membership: %w", err)
	}
	return nil
}

// PublishNodeControl sends an application control message to one node's
// inbox (KindControl, ScopeNode, Key = nodeID, Arg = name, Frame = body):
// the transport for cross-node features such as approvals and client
// results. A message to this node's own id is delivered back to it. A node
// that is not subscribed (gone) gives ErrNoReceiver, so callers can fail
// fast instead of waiting for an answer that cannot come.
func (b *Backplane) PublishNodeControl(ctx context.Context, nodeID, name string, body []byte) error {
	e := envelope{kind: KindControl, scope: ScopeNode, origin: b.cfg.NodeID, key: nodeID, arg: name}
	if err := b.pub.publish(ctx, b.k.chNode(nodeID), &e, body, true); err != nil {
		return fmt.Errorf("backplane: publish node control %q to %s: %w", name, nodeID, err)
	}
	return nil
}
