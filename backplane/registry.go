package backplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// localConn is this node's record of one of its connections: what it wrote
// to the registry, so it can re-write it after Redis lost it and remove it
// on Shutdown.
type localConn struct {
	info       ConnInfo
	registered bool // RegisterConnection was called (info is known)
	groups     map[string]struct{}
}

// tombstone is what the retry of a failed unregistration needs.
type tombstone struct {
	user   string
	groups []string
}

// goneFor is how long an unregistered connection id is remembered, so that
// a join racing the connection's end is refused instead of leaving an entry
// behind.
const goneFor = time.Minute

func checkConnID(id string) error {
	if id == "" {
		return errors.New("empty connection id")
	}
	if strings.ContainsRune(id, ':') {
		return fmt.Errorf("connection id %q must not contain ':'", id)
	}
	return nil
}

// RegisterConnection records a local connection in the farm-wide registry
// (its hash, the node's and the user's sets) and subscribes the user's
// channel (reference-counted; confirmed by Redis before it returns), so
// user-addressed frames from any node reach it once it returns.
//
// If Redis fails, the connection stays registered locally: the error is
// returned, and the heartbeat re-writes the entry once Redis answers again.
func (b *Backplane) RegisterConnection(ctx context.Context, c ConnInfo) error {
	if err := b.usable(); err != nil {
		return fmt.Errorf("backplane: register connection: %w", err)
	}
	if err := checkConnID(c.ID); err != nil {
		return fmt.Errorf("backplane: register connection: %w", err)
	}
	b.mu.Lock()
	lc := b.local[c.ID]
	if lc == nil {
		lc = &localConn{groups: map[string]struct{}{}}
		b.local[c.ID] = lc
	}
	lc.info, lc.registered = c, true
	delete(b.tombstones, c.ID)
	delete(b.gone, c.ID)
	b.localVersion++
	b.mu.Unlock()

	var errs []error
	if c.User != "" {
		if err := b.subs.add(ctx, b.k.chUser(c.User), c.ID); err != nil {
			errs = append(errs, err)
		}
	}
	err := b.rw.write(ctx, func(p redis.Pipeliner) {
		p.HSet(ctx, b.k.conn(c.ID), "node", b.cfg.NodeID, "hub", c.Hub, "user", c.User,
			"at", ms(c.ConnectedAt), "remote", c.Remote)
		p.SAdd(ctx, b.k.nodeConns(b.cfg.NodeID), c.ID)
		if c.User != "" {
			p.SAdd(ctx, b.k.userConns(c.User), c.ID)
		}
	})
	if err != nil {
		b.dirty.Store(true)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("backplane: register connection %s: %w", c.ID, err)
	}
	return nil
}

// UnregisterConnection removes a local connection from the registry in one
// atomic round trip (a script): from every group set (groups, plus the ones
// this backplane and the registry recorded for it), its user's set and the
// node's set, deleting its hash and groups set, unless the id was meanwhile
// registered by another node. Then it releases the connection's channel
// references (unsubscribing channels nobody local needs any more). If Redis
// fails, the removal is retried by the heartbeat.
func (b *Backplane) UnregisterConnection(ctx context.Context, c ConnInfo, groups []string) error {
	if err := checkConnID(c.ID); err != nil {
		return fmt.Errorf("backplane: unregister connection: %w", err)
	}
	b.mu.Lock()
	lc := b.local[c.ID]
	delete(b.local, c.ID)
	set := map[string]struct{}{}
	for _, g := range groups {
		set[g] = struct{}{}
	}
	if lc != nil {
		for g := range lc.groups {
			set[g] = struct{}{}
		}
		if c.User == "" {
			c.User = lc.info.User
		}
	}
	all := make([]string, 0, len(set))
	for g := range set {
		all = append(all, g)
	}
	b.gone[c.ID] = time.Now()
	b.localVersion++
	b.mu.Unlock()

	var err error
	if b.state.Load() == stateRunning {
		_, err = b.removeConns(ctx, b.cfg.NodeID, 0, true, []removal{{conn: c.ID, user: c.User, groups: all}})
		if err != nil {
			b.mu.Lock()
			b.tombstones[c.ID] = tombstone{user: c.User, groups: all}
			b.mu.Unlock()
		}
	}
	for _, g := range all {
		b.subs.remove(ctx, b.k.chGroup(g), c.ID)
	}
	if c.User != "" {
		b.subs.remove(ctx, b.k.chUser(c.User), c.ID)
	}
	if err != nil {
		return fmt.Errorf("backplane: unregister connection %s: %w", c.ID, err)
	}
	return nil
}

// ClaimConnection claims the connection id connID for this node, farm-wide,
// for ttl, and reports whether it got it: true when no node held a claim on
// it (the claim is now this node's), false when one did (this node's
// included). A node claims the id of a negotiated connection before
// accepting its WebSocket, so that a connection token presented twice, on
// any nodes, opens one connection (SignalR answers a second one with 409).
//
// A claim is never released: it expires by itself after ttl, so a node that
// dies leaves nothing behind, and an id used once cannot be used again while
// its token is valid (choose ttl past the token's expiry, with a margin for
// the nodes' clocks). The claim goes out with the node's concurrent registry
// updates (one round trip for all of them).
func (b *Backplane) ClaimConnection(ctx context.Context, connID string, ttl time.Duration) (bool, error) {
	if err := b.usable(); err != nil {
		return false, fmt.Errorf("backplane: claim connection: %w", err)
	}
	if err := checkConnID(connID); err != nil {
		return false, fmt.Errorf("backplane: claim connection: %w", err)
	}
	if ttl <= 0 {
		return false, fmt.Errorf("backplane: claim connection %s: ttl %v must be positive", connID, ttl)
	}
	var set *redis.BoolCmd
	if err := b.rw.write(ctx, func(p redis.Pipeliner) {
		set = p.SetNX(ctx, b.k.connClaim(connID), b.cfg.NodeID, ttl)
	}); err != nil {
		return false, fmt.Errorf("backplane: claim connection %s: %w", connID, err)
	}
	if set == nil { // not written (cannot happen without an error; never read as a claim)
		return false, fmt.Errorf("backplane: claim connection %s: not written", connID)
	}
	return set.Val(), nil
}

// JoinGroup adds a local connection to group: it takes a reference on the
// group channel (the first one subscribes it) and returns only after Redis
// confirmed that subscription, so any publication to the group made after
// JoinGroup returns reaches the connection. It also adds the connection to
// the group's registry set and the group to the connection's set.
//
// Joins and leaves of one group are serialised. On error the membership is
// still recorded locally (the hub keeps delivering locally, and the
// subscription and registry entries are restored when Redis answers again);
// LeaveGroup or UnregisterConnection undo it.
//
// JoinGroup must not be called from the Handler: the confirmation is read
// by the goroutine that runs the Handler.
func (b *Backplane) JoinGroup(ctx context.Context, connID, group string) error {
	if err := b.usable(); err != nil {
		return fmt.Errorf("backplane: join group: %w", err)
	}
	if err := checkConnID(connID); err != nil {
		return fmt.Errorf("backplane: join group: %w", err)
	}
	b.mu.Lock()
	if _, gone := b.gone[connID]; gone {
		b.mu.Unlock()
		return fmt.Errorf("backplane: join group %q: connection %s ended: %w", group, connID, ErrUnknownConnection)
	}
	lc := b.local[connID]
	if lc == nil {
		// Joined before RegisterConnection finished: keep the membership;
		// RegisterConnection fills in the rest.
		lc = &localConn{info: ConnInfo{ID: connID}, groups: map[string]struct{}{}}
		b.local[connID] = lc
	}
	lc.groups[group] = struct{}{}
	b.localVersion++
	b.mu.Unlock()

	var errs []error
	if err := b.subs.add(ctx, b.k.chGroup(group), connID); err != nil {
		errs = append(errs, err)
	}
	err := b.rw.write(ctx, func(p redis.Pipeliner) {
		p.SAdd(ctx, b.k.group(group), connID)
		p.SAdd(ctx, b.k.connGroups(connID), group)
	})
	if err != nil {
		b.dirty.Store(true)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("backplane: join group %q: %w", group, err)
	}
	return nil
}

// LeaveGroup removes a local connection from group: from the registry sets,
// and from the group channel's references (the last one unsubscribes). If
// Redis fails the local membership is gone anyway and the heartbeat
// re-writes the registry.
func (b *Backplane) LeaveGroup(ctx context.Context, connID, group string) error {
	if err := b.usable(); err != nil {
		return fmt.Errorf("backplane: leave group: %w", err)
	}
	if err := checkConnID(connID); err != nil {
		return fmt.Errorf("backplane: leave group: %w", err)
	}
	b.mu.Lock()
	if lc := b.local[connID]; lc != nil {
		delete(lc.groups, group)
	}
	b.localVersion++
	b.mu.Unlock()

	b.subs.remove(ctx, b.k.chGroup(group), connID)
	err := b.rw.write(ctx, func(p redis.Pipeliner) {
		p.SRem(ctx, b.k.group(group), connID)
		p.SRem(ctx, b.k.connGroups(connID), group)
	})
	if err != nil {
		b.dirty.Store(true)
		return fmt.Errorf("backplane: leave group %q: %w", group, err)
	}
	return nil
}

// GroupMembers lists the connection ids in group, farm-wide, sorted.
func (b *Backplane) GroupMembers(ctx context.Context, group string) ([]string, error) {
	return b.members(ctx, "group members", b.k.group(group))
}

// UserConnections lists user's connection ids, farm-wide, sorted.
func (b *Backplane) UserConnections(ctx context.Context, user string) ([]string, error) {
	return b.members(ctx, "user connections", b.k.userConns(user))
}

// ConnectionGroups lists the groups of a connection (on any node), sorted.
func (b *Backplane) ConnectionGroups(ctx context.Context, connID string) ([]string, error) {
	return b.members(ctx, "connection groups", b.k.connGroups(connID))
}

func (b *Backplane) members(ctx context.Context, op, key string) ([]string, error) {
	m, err := b.rdb.SMembers(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("backplane: %s: %w", op, err)
	}
	slices.Sort(m)
	return m, nil
}

// Connection returns the registry entry of a connection on any node; ok is
// false if no node holds it.
func (b *Backplane) Connection(ctx context.Context, connID string) (ConnInfo, bool, error) {
	h, err := b.rdb.HGetAll(ctx, b.k.conn(connID)).Result()
	if err != nil {
		return ConnInfo{}, false, fmt.Errorf("backplane: connection: %w", err)
	}
	if len(h) == 0 {
		return ConnInfo{}, false, nil
	}
	return ConnInfo{
		ID: connID, Hub: h["hub"], User: h["user"], Remote: h["remote"],
		ConnectedAt: parseMs(h["at"]),
	}, true, nil
}

// connectionNode returns the node holding connID, or ErrUnknownConnection.
func (b *Backplane) connectionNode(ctx context.Context, connID string) (string, error) {
	node, err := b.rdb.HGet(ctx, b.k.conn(connID), "node").Result()
	if errors.Is(err, redis.Nil) || (err == nil && node == "") {
		return "", fmt.Errorf("connection %s: %w", connID, ErrUnknownConnection)
	}
	return node, err
}

// Nodes lists the live nodes (heartbeat within DeadAfterMissed intervals),
// sorted by id.
func (b *Backplane) Nodes(ctx context.Context) ([]NodeInfo, error) {
	cutoff := b.cfg.Now().Add(-b.cfg.deadAfter()).UnixMilli()
	zs, err := b.rdb.ZRangeByScoreWithScores(ctx, b.k.nodes(), &redis.ZRangeBy{
		Min: strconv.FormatInt(cutoff, 10), Max: "+inf",
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("backplane: nodes: %w", err)
	}
	cmds := make([]*redis.MapStringStringCmd, len(zs))
	if len(zs) > 0 {
		_, err = b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, z := range zs {
				cmds[i] = p.HGetAll(ctx, b.k.node(z.Member.(string)))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("backplane: nodes: %w", err)
		}
	}
	out := make([]NodeInfo, 0, len(zs))
	for i, z := range zs {
		h := cmds[i].Val()
		n, _ := strconv.Atoi(h["conns"])
		// Counts from a node of an older version are absent: zero.
		in, _ := strconv.ParseUint(h["msgs_in"], 10, 64)
		outMsgs, _ := strconv.ParseUint(h["msgs_out"], 10, 64)
		out = append(out, NodeInfo{
			ID:            z.Member.(string),
			Address:       h["address"],
			Started:       parseMs(h["started"]),
			LastHeartbeat: time.UnixMilli(int64(z.Score)),
			Connections:   n,
			MessagesIn:    in,
			MessagesOut:   outMsgs,
		})
	}
	slices.SortFunc(out, func(a, b NodeInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// resync re-writes every local connection's registry entry (scriptReconcileConn),
// after Redis lost data or a registry write failed. If the local registry
// changed meanwhile, the next heartbeat runs it again.
func (b *Backplane) resync(ctx context.Context) error {
	b.mu.Lock()
	version := b.localVersion
	entries := make([]connEntry, 0, len(b.local))
	for id, lc := range b.local {
		e := connEntry{info: lc.info, groups: make([]string, 0, len(lc.groups))}
		e.info.ID = id
		for g := range lc.groups {
			e.groups = append(e.groups, g)
		}
		entries = append(entries, e)
	}
	b.mu.Unlock()
	for chunk := range slices.Chunk(entries, b.cfg.PublishBatch) {
		if err := b.reconcileConns(ctx, chunk); err != nil {
			b.dirty.Store(true)
			return fmt.Errorf("backplane: resync: %w", err)
		}
	}
	b.mu.Lock()
	if b.localVersion != version {
		b.dirty.Store(true)
	}
	b.mu.Unlock()
	return nil
}

// retryTombstones retries the Redis cleanup of unregistered connections
// whose UnregisterConnection failed, and forgets old gone ids.
func (b *Backplane) retryTombstones(ctx context.Context) error {
	b.mu.Lock()
	for id, at := range b.gone {
		if time.Since(at) > goneFor {
			delete(b.gone, id)
		}
	}
	ids := make([]string, 0, len(b.tombstones))
	rs := make([]removal, 0, len(b.tombstones))
	for id, ts := range b.tombstones {
		ids = append(ids, id)
		rs = append(rs, removal{conn: id, user: ts.user, groups: ts.groups})
	}
	b.mu.Unlock()
	if len(rs) == 0 {
		return nil
	}
	if _, err := b.removeConns(ctx, b.cfg.NodeID, 0, true, rs); err != nil {
		return fmt.Errorf("backplane: retry unregister: %w", err)
	}
	b.mu.Lock()
	for _, id := range ids {
		if _, live := b.local[id]; !live {
			delete(b.tombstones, id)
		}
	}
	b.mu.Unlock()
	return nil
}

// purgeLeftovers removes connections a previous process with this node id
// left in the registry (it crashed and this one started before a survivor
// reaped it).
func (b *Backplane) purgeLeftovers(ctx context.Context) error {
	ids, err := b.rdb.SMembers(ctx, b.k.nodeConns(b.cfg.NodeID)).Result()
	if err != nil {
		return fmt.Errorf("read leftovers: %w", err)
	}
	if len(ids) == 0 {
		return nil
	}
	rs := make([]removal, len(ids))
	for i, id := range ids {
		rs[i] = removal{conn: id}
	}
	for chunk := range slices.Chunk(rs, b.cfg.PublishBatch) {
		if _, err := b.removeConns(ctx, b.cfg.NodeID, 0, true, chunk); err != nil {
			return fmt.Errorf("remove leftovers: %w", err)
		}
	}
	b.log.Info("removed connections left by an earlier process with this node id", "count", len(ids))
	return nil
}

// deregister removes every local connection (and those whose earlier
// removal failed) with scriptRemoveConn, then the node's own keys. If the
// connections could not all be removed, the node entry stays so that a
// survivor's reaper finishes the job.
func (b *Backplane) deregister(ctx context.Context) error {
	b.mu.Lock()
	rs := make([]removal, 0, len(b.local)+len(b.tombstones))
	for id, lc := range b.local {
		groups := make([]string, 0, len(lc.groups))
		for g := range lc.groups {
			groups = append(groups, g)
		}
		rs = append(rs, removal{conn: id, user: lc.info.User, groups: groups})
	}
	for id, ts := range b.tombstones {
		if _, live := b.local[id]; !live {
			rs = append(rs, removal{conn: id, user: ts.user, groups: ts.groups})
		}
	}
	b.local = map[string]*localConn{}
	clear(b.tombstones)
	b.mu.Unlock()

	for chunk := range slices.Chunk(rs, b.cfg.PublishBatch) {
		if _, err := b.removeConns(ctx, b.cfg.NodeID, 0, true, chunk); err != nil {
			return fmt.Errorf("remove connections (the reaper will): %w", err)
		}
	}
	err := b.multi(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, b.k.node(b.cfg.NodeID))
		p.Del(ctx, b.k.nodeConns(b.cfg.NodeID))
		p.ZRem(ctx, b.k.nodes(), b.cfg.NodeID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove node: %w", err)
	}
	return nil
}
