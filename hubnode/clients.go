package hubnode

import (
	"context"
	"errors"
	"fmt"

	"github.com/orchestratorchat/hubfarm/backplane"
)

// The Clients API: sends reach connections on any node. Each send serialises
// its frame once, writes it to the local targets directly (so local delivery
// keeps working while Redis is down) and publishes it once to the backplane
// for the other nodes. A returned error means the remote part failed; local
// targets were still served.

// SendGroup sends a callback to every member of group, farm-wide.
func (n *Node) SendGroup(ctx context.Context, group, target string, args ...any) error {
	return n.SendGroupExcept(ctx, group, "", target, args...)
}

// SendGroupExcept sends a callback to every member of group except the
// connection exclude.
func (n *Node) SendGroupExcept(ctx context.Context, group, exclude, target string, args ...any) error {
	frame, err := EncodeInvocation(target, args...)
	if err != nil {
		return err
	}
	return n.SendFrame(ctx, backplane.ScopeGroup, group, frame, exclude)
}

// PostGroupExcept is SendGroupExcept for senders that need not wait for
// the other nodes: local members are served before it returns, and the
// publication for the other nodes is queued (in order with every other
// send of this node) rather than waited for. A failure to reach them is
// counted and logged by the backplane, not returned.
func (n *Node) PostGroupExcept(ctx context.Context, group, exclude, target string, args ...any) error {
	frame, err := EncodeInvocation(target, args...)
	if err != nil {
		return err
	}
	n.deliverLocal(backplane.ScopeGroup, group, frame, exclude)
	if err := n.bp.Post(ctx, backplane.ScopeGroup, group, frame, exclude); err != nil {
		n.metrics.publishError()
		return fmt.Errorf("hubnode: send to group: %w", err)
	}
	return nil
}

// SendUser sends a callback to every connection of user, farm-wide.
func (n *Node) SendUser(ctx context.Context, user, target string, args ...any) error {
	frame, err := EncodeInvocation(target, args...)
	if err != nil {
		return err
	}
	return n.SendFrame(ctx, backplane.ScopeUser, user, frame, "")
}

// SendAll sends a callback to every connection of the farm.
func (n *Node) SendAll(ctx context.Context, target string, args ...any) error {
	frame, err := EncodeInvocation(target, args...)
	if err != nil {
		return err
	}
	return n.SendFrame(ctx, backplane.ScopeAll, "", frame, "")
}

// SendConnection sends a callback to one connection, wherever it is.
func (n *Node) SendConnection(ctx context.Context, connID, target string, args ...any) error {
	frame, err := EncodeInvocation(target, args...)
	if err != nil {
		return err
	}
	return n.SendFrame(ctx, backplane.ScopeConnection, connID, frame, "")
}

// SendFrame delivers a pre-serialised frame (complete records) to scope/key.
// The frame must not be modified afterwards.
func (n *Node) SendFrame(ctx context.Context, scope backplane.Scope, key string, frame []byte, exclude string) error {
	local := n.deliverLocal(scope, key, frame, exclude)
	var err error
	switch scope {
	case backplane.ScopeConnection:
		if local > 0 {
			return nil
		}
		err = n.bp.PublishConnection(ctx, key, frame)
	default:
		err = n.bp.Publish(ctx, scope, key, frame, exclude)
	}
	if err != nil {
		n.metrics.publishError()
		return fmt.Errorf("hubnode: send to %s: %w", scopeName(scope), err)
	}
	return nil
}

func scopeName(s backplane.Scope) string {
	switch s {
	case backplane.ScopeGroup:
		return "group"
	case backplane.ScopeUser:
		return "user"
	case backplane.ScopeAll:
		return "all"
	case backplane.ScopeConnection:
		return "connection"
	}
	return "node"
}

// AddToGroup adds a local connection to group. The group is farm-wide: a
// send from any node reaches it once this returns.
func (n *Node) AddToGroup(ctx context.Context, connID, group string) error {
	c, ok := n.LocalConnection(connID)
	if !ok {
		return fmt.Errorf("hubnode: add to group: %w", ErrUnknownConnection)
	}
	return n.joinLocal(ctx, c, group)
}

// RemoveFromGroup removes a local connection from group.
func (n *Node) RemoveFromGroup(ctx context.Context, connID, group string) error {
	c, ok := n.LocalConnection(connID)
	if !ok {
		return fmt.Errorf("hubnode: remove from group: %w", ErrUnknownConnection)
	}
	return n.leaveLocal(ctx, c, group)
}

// AddUserToGroup puts every connection of user, on every node and hub, into
// group: the local ones before it returns, the remote ones as their nodes
// receive the membership message. Group membership that belongs to a user
// (sessions) is re-applied by the application when a new connection of that
// user arrives.
func (n *Node) AddUserToGroup(ctx context.Context, user, group string) error {
	return n.userMembership(ctx, user, group, true)
}

// RemoveUserFromGroup takes every connection of user out of group.
func (n *Node) RemoveUserFromGroup(ctx context.Context, user, group string) error {
	return n.userMembership(ctx, user, group, false)
}

func (n *Node) userMembership(ctx context.Context, user, group string, join bool) error {
	localErr := n.userMembershipLocal(ctx, user, group, join)
	if err := n.bp.PublishUserMembership(ctx, user, group, join); err != nil {
		return errors.Join(localErr, fmt.Errorf("hubnode: user membership: %w", err))
	}
	return localErr
}

func (n *Node) userMembershipLocal(ctx context.Context, user, group string, join bool) error {
	n.mu.RLock()
	var conns []*Conn
	for c := range n.users[user] {
		conns = append(conns, c)
	}
	n.mu.RUnlock()
	var errs []error
	for _, c := range conns {
		var err error
		if join {
			err = n.joinLocal(ctx, c, group)
		} else {
			err = n.leaveLocal(ctx, c, group)
		}
		if err != nil && !errors.Is(err, errConnClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

var errConnClosed = errors.New("hubnode: connection closed")

func (n *Node) joinLocal(ctx context.Context, c *Conn, group string) error {
	c.memberMu.Lock()
	defer c.memberMu.Unlock()
	n.mu.Lock()
	if n.conns[c.id] != c {
		n.mu.Unlock()
		return errConnClosed
	}
	c.mu.Lock()
	if _, in := c.groups[group]; in {
		c.mu.Unlock()
		n.mu.Unlock()
		return nil
	}
	if len(c.groups) >= n.cfg.MaxGroupsPerConnection {
		c.mu.Unlock()
		n.mu.Unlock()
		return &HubError{Message: fmt.Sprintf("a connection may be in at most %d groups", n.cfg.MaxGroupsPerConnection)}
	}
	if c.groups == nil {
		c.groups = map[string]struct{}{}
	}
	c.groups[group] = struct{}{}
	c.mu.Unlock()
	addMember(n.groups, group, c)
	count := len(n.groups)
	n.mu.Unlock()
	n.metrics.localGroups(count)
	if err := n.bp.JoinGroup(ctx, c.id, group); err != nil {
		// Local membership stays: local sends still reach the connection.
		return fmt.Errorf("hubnode: join group: %w", err)
	}
	return nil
}

func (n *Node) leaveLocal(ctx context.Context, c *Conn, group string) error {
	c.memberMu.Lock()
	defer c.memberMu.Unlock()
	n.mu.Lock()
	c.mu.Lock()
	_, in := c.groups[group]
	delete(c.groups, group)
	c.mu.Unlock()
	if in {
		removeMember(n.groups, group, c)
	}
	count := len(n.groups)
	n.mu.Unlock()
	if !in {
		return nil
	}
	n.metrics.localGroups(count)
	if err := n.bp.LeaveGroup(ctx, c.id, group); err != nil {
		return fmt.Errorf("hubnode: leave group: %w", err)
	}
	return nil
}

// CloseConnection closes a connection wherever it is, with a Close that lets
// the client reconnect.
func (n *Node) CloseConnection(ctx context.Context, connID string) error {
	if c, ok := n.LocalConnection(connID); ok {
		c.closeWith(ReasonServerRequest)
		return nil
	}
	return n.bp.CloseConnection(ctx, connID, string(ReasonServerRequest))
}
