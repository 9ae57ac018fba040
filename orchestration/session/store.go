// Package session keeps OrchestratorChat sessions farm-wide in Redis: the
// session record, its members (users, not connections: membership survives
// reconnects and node loss), and its capped event history, through which a
// client that was away catches up.
//
// Guarantees: an event is recorded in the history before it is sent, and it
// carries its history id ("eventId") when sent, so a client that missed live
// delivery finds it with History(afterEventID). If Redis refuses the record,
// Emit fails and nothing is sent: no event is delivered that the history does
// not hold.
package session

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// ErrNotFound is returned for an unknown session id.
var ErrNotFound = errors.New("session not found")

// ErrNotRecorded wraps an Emit failure before the event reached the
// history: nothing was sent, the caller may retry.
var ErrNotRecorded = errors.New("event not recorded")

// ErrInvalidEventID is returned for an afterEventID that is not a history id.
var ErrInvalidEventID = errors.New("invalid event id")

// Router is how the store reaches connections anywhere in the farm. The hub
// node implements it.
type Router interface {
	// SendGroupExcept sends a callback to every member connection of group
	// except exclude.
	SendGroupExcept(ctx context.Context, group, exclude, target string, args ...any) error
	// PostGroupExcept is SendGroupExcept without waiting for the other
	// nodes to be reached (order with the node's other sends is kept).
	PostGroupExcept(ctx context.Context, group, exclude, target string, args ...any) error
	// SendConnection sends a callback to one connection wherever it is.
	SendConnection(ctx context.Context, connID, target string, args ...any) error
	// AddUserToGroup puts every connection of user, on every node, in group.
	AddUserToGroup(ctx context.Context, user, group string) error
	// RemoveUserFromGroup takes every connection of user out of group.
	RemoveUserFromGroup(ctx context.Context, user, group string) error
}

// Config configures the store. Zero fields take the defaults noted.
type Config struct {
	// Prefix of every key. Default "hf".
	Prefix string
	// HistoryMaxLen caps a session's event stream (approximately). Default 10000.
	HistoryMaxLen int64
	// TTL is how long an idle session (record, members and history) is
	// kept: every event renews it (at most once a renewal interval per
	// store, see needsRenewal), and so does every join or invitation. It
	// is also how long a user's list of sessions to rejoin is kept after
	// the user last connected, created or joined a session. Default 7 days.
	TTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = "hf"
	}
	if c.HistoryMaxLen <= 0 {
		c.HistoryMaxLen = 10000
	}
	if c.TTL <= 0 {
		c.TTL = 7 * 24 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Store is the farm-wide session store.
type Store struct {
	rdb    redis.UniversalClient
	router Router
	cfg    Config

	// addMember adds a member to an existing session, renewing its keys;
	// see newAddMember.
	addMember *redis.Script

	// renewed is when this store last renewed each session's TTL, so a
	// busy session costs one renewal a renewal interval instead of one per
	// event. Bounded: cleared when it reaches maxRenewed (the next
	// event of each session then simply renews again).
	renewMu sync.Mutex
	renewed map[string]time.Time
}

// maxRenewed bounds Store.renewed.
const maxRenewed = 65536

// NewStore creates a store.
func NewStore(rdb redis.UniversalClient, router Router, cfg Config) *Store {
	return &Store{rdb: rdb, router: router, cfg: cfg.withDefaults(), addMember: newAddMember(), renewed: map[string]time.Time{}}
}

// newAddMember is the script behind Join and Invite. KEYS: the session's
// record, members and history (one hash tag, so one Cluster slot); ARGV:
// the user, the TTL in milliseconds. Only when the record exists does it
// add the member and renew the three keys' TTL (a join is activity); it
// returns the record's data, or nil for a missing session, which is thus
// left without a key: adding first and checking after would leave a
// members set without a TTL behind for every unknown id.
func newAddMember() *redis.Script {
	return redis.NewScript(`
local data = redis.call('HGET', KEYS[1], 'data')
if not data then
  return false
end
redis.call('SADD', KEYS[2], ARGV[1])
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return data
`)
}

// needsRenewal reports whether sessionID's keys are due a TTL renewal from
// this store (a tenth of the TTL, at most a minute, after the last one) and
// records it as renewed now.
func (s *Store) needsRenewal(sessionID string) bool {
	now := s.cfg.Now()
	every := min(s.cfg.TTL/10, time.Minute)
	s.renewMu.Lock()
	defer s.renewMu.Unlock()
	if last, ok := s.renewed[sessionID]; ok && now.Sub(last) < every {
		return false
	}
	if len(s.renewed) >= maxRenewed {
		clear(s.renewed)
	}
	s.renewed[sessionID] = now
	return true
}

// forgetRenewal makes the next event of sessionID renew its TTL (after a
// failed write the renewal may not have happened).
func (s *Store) forgetRenewal(sessionID string) {
	s.renewMu.Lock()
	delete(s.renewed, sessionID)
	s.renewMu.Unlock()
}

// GroupName is the hub group of a session (shared by both hubs).
func GroupName(sessionID string) string { return "session-" + sessionID }

// A session's keys share its hash tag ({id}): the MULTI of Create, the
// script of Join and Invite and every history write stay within one Redis
// Cluster slot. A user's session set has its own slot, so it is written by
// separate commands (plain pipelines), never inside a transaction or script
// with the session's keys.
func (s *Store) keySession(id string) string     { return s.cfg.Prefix + ":session:{" + id + "}" }
func (s *Store) keyMembers(id string) string     { return s.cfg.Prefix + ":session:{" + id + "}:members" }
func (s *Store) keyEvents(id string) string      { return s.cfg.Prefix + ":session:{" + id + "}:events" }
func (s *Store) keyUserSessions(u string) string { return s.cfg.Prefix + ":user:" + u + ":sessions" }

// Create stores a new session owned by owner, makes owner a member, and puts
// the owner's connections in the session group.
func (s *Store) Create(ctx context.Context, owner string, req contract.CreateSessionRequest) (contract.Session, error) {
	now := contract.DateTime(s.cfg.Now().UTC())
	sess := contract.Session{
		ID:                  uuid.NewString(),
		Name:                req.Name,
		Type:                req.Type,
		Status:              contract.SessionStatusActive,
		CreatedAt:           now,
		LastActivityAt:      now,
		ParticipantAgentIDs: append(contract.List[string]{}, req.AgentIDs...),
		WorkingDirectory:    req.WorkingDirectory,
	}
	data, err := json.Marshal(sess)
	if err != nil {
		return contract.Session{}, fmt.Errorf("session: create: %w", err)
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.keySession(sess.ID), "data", data, "owner", owner)
		p.PExpire(ctx, s.keySession(sess.ID), s.cfg.TTL)
		p.SAdd(ctx, s.keyMembers(sess.ID), owner)
		p.PExpire(ctx, s.keyMembers(sess.ID), s.cfg.TTL)
		return nil
	})
	if err != nil {
		return contract.Session{}, fmt.Errorf("session: create: %w", err)
	}
	if err := s.addUserSession(ctx, owner, sess.ID); err != nil {
		return contract.Session{}, err
	}
	if err := s.router.AddUserToGroup(ctx, owner, GroupName(sess.ID)); err != nil {
		return contract.Session{}, fmt.Errorf("session: create: join group: %w", err)
	}
	return sess, nil
}

func (s *Store) addUserSession(ctx context.Context, user, id string) error {
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, s.keyUserSessions(user), id)
		p.PExpire(ctx, s.keyUserSessions(user), s.cfg.TTL)
		return nil
	})
	if err != nil {
		return fmt.Errorf("session: record membership: %w", err)
	}
	return nil
}

// Get loads a session.
func (s *Store) Get(ctx context.Context, id string) (contract.Session, error) {
	return decodeSession(s.rdb.HGet(ctx, s.keySession(id), "data"))
}

// Exists reports whether the session is stored.
func (s *Store) Exists(ctx context.Context, id string) (bool, error) {
	n, err := s.rdb.Exists(ctx, s.keySession(id)).Result()
	if err != nil {
		return false, fmt.Errorf("session: exists: %w", err)
	}
	return n == 1, nil
}

// Owner returns the user who created the session.
func (s *Store) Owner(ctx context.Context, id string) (string, error) {
	o, err := s.rdb.HGet(ctx, s.keySession(id), "owner").Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("session: owner: %w", err)
	}
	return o, nil
}

// Join makes user a member of the session, records it in the user's
// sessions (rejoined on reconnect), renews the session's TTL and puts all
// of the user's connections (any node, either hub) in the session group. It
// returns ErrNotFound when no session record exists, leaving no key behind;
// like the original hub, the user's current connections still join the
// group of the unknown id (a membership of those connections only: it ends
// with them, and reconnects do not rejoin it).
func (s *Store) Join(ctx context.Context, user, id string) (contract.Session, error) {
	keys := s.sessionKeys(id)
	ttl := s.cfg.TTL.Milliseconds()
	userKey := s.keyUserSessions(user)
	// One round trip when the session exists, the common case: the
	// script and the user's set (another Cluster slot, so outside the
	// script) in one pipeline; an unknown id costs a second one to take
	// the id out of the user's set again.
	var add *redis.Cmd
	var sadd *redis.IntCmd
	var expire *redis.BoolCmd
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		add = s.addMember.EvalSha(ctx, p, keys, user, ttl)
		sadd = p.SAdd(ctx, userKey, id)
		expire = p.PExpire(ctx, userKey, s.cfg.TTL)
		return nil
	})
	if isNoScript(add.Err()) {
		add = s.addMember.Run(ctx, s.rdb, keys, user, ttl)
	}
	data, err := add.Text()
	if errors.Is(err, redis.Nil) {
		// Should this fail, the id stays in the user's list only until
		// UserSessions next finds it gone.
		if err := s.rdb.SRem(ctx, userKey, id).Err(); err != nil {
			return contract.Session{}, fmt.Errorf("session: join: undo: %w", err)
		}
		if err := s.router.AddUserToGroup(ctx, user, GroupName(id)); err != nil {
			return contract.Session{}, fmt.Errorf("session: join group: %w", err)
		}
		return contract.Session{}, ErrNotFound
	}
	if err != nil {
		return contract.Session{}, fmt.Errorf("session: join: %w", err)
	}
	if err := errors.Join(sadd.Err(), expire.Err()); err != nil {
		return contract.Session{}, fmt.Errorf("session: join: record membership: %w", err)
	}
	sess, err := decodeData([]byte(data))
	if err != nil {
		return contract.Session{}, err
	}
	if err := s.router.AddUserToGroup(ctx, user, GroupName(id)); err != nil {
		return contract.Session{}, fmt.Errorf("session: join group: %w", err)
	}
	return sess, nil
}

// sessionKeys are the keys of newAddMember.
func (s *Store) sessionKeys(id string) []string {
	return []string{s.keySession(id), s.keyMembers(id), s.keyEvents(id)}
}

// isNoScript reports whether err says Redis does not have the script
// cached (first use on a server, or after SCRIPT FLUSH or a failover).
func isNoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT"))
}

// decodeSession turns the reply of HGET key data into a Session.
func decodeSession(cmd *redis.StringCmd) (contract.Session, error) {
	raw, err := cmd.Bytes()
	if errors.Is(err, redis.Nil) {
		return contract.Session{}, ErrNotFound
	}
	if err != nil {
		return contract.Session{}, fmt.Errorf("session: get: %w", err)
	}
	return decodeData(raw)
}

// decodeData decodes a session record's data field.
func decodeData(raw []byte) (contract.Session, error) {
	var sess contract.Session
	if err := json.Unmarshal(raw, &sess); err != nil {
		return contract.Session{}, fmt.Errorf("session: get: decode: %w", err)
	}
	return sess, nil
}

// Leave takes the user's connections out of the session group and stops
// rejoining them on reconnect. The user stays a member (invited), so they
// may join again; RemoveFromSession ends membership.
func (s *Store) Leave(ctx context.Context, user, id string) error {
	_, err := s.rdb.SRem(ctx, s.keyUserSessions(user), id).Result()
	if err != nil {
		return fmt.Errorf("session: leave: %w", err)
	}
	if err := s.router.RemoveUserFromGroup(ctx, user, GroupName(id)); err != nil {
		return fmt.Errorf("session: leave group: %w", err)
	}
	return nil
}

// Invite makes user a member (allowed to join) without joining them, and
// renews the session's TTL. It returns ErrNotFound, changing nothing, when
// no session record exists.
func (s *Store) Invite(ctx context.Context, id, user string) error {
	err := s.addMember.Run(ctx, s.rdb, s.sessionKeys(id), user, s.cfg.TTL.Milliseconds()).Err()
	if errors.Is(err, redis.Nil) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("session: invite: %w", err)
	}
	return nil
}

// Remove ends user's membership: the invitation, the joined session and the
// group membership of all the user's connections.
func (s *Store) Remove(ctx context.Context, id, user string) error {
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SRem(ctx, s.keyMembers(id), user)
		p.SRem(ctx, s.keyUserSessions(user), id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("session: remove: %w", err)
	}
	if err := s.router.RemoveUserFromGroup(ctx, user, GroupName(id)); err != nil {
		return fmt.Errorf("session: remove from group: %w", err)
	}
	return nil
}

// IsMember reports whether user is a member of the session.
func (s *Store) IsMember(ctx context.Context, id, user string) (bool, error) {
	ok, err := s.rdb.SIsMember(ctx, s.keyMembers(id), user).Result()
	if err != nil {
		return false, fmt.Errorf("session: is member: %w", err)
	}
	return ok, nil
}

// UserSessions lists the sessions user belongs to (used to rejoin a new
// connection to its sessions). Reading the list is a use of it: its TTL is
// renewed, so it lasts as long as its user keeps coming back. Ids whose
// session is gone (expired) are left out and dropped from the list, so it
// holds no dangling ids for longer than until its user's next connection.
func (s *Store) UserSessions(ctx context.Context, user string) ([]string, error) {
	key := s.keyUserSessions(user)
	var members *redis.StringSliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		members = p.SMembers(ctx, key)
		p.PExpire(ctx, key, s.cfg.TTL)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("session: user sessions: %w", err)
	}
	ids := members.Val()
	if len(ids) == 0 {
		return ids, nil
	}
	// The records live in other Cluster slots than the list: one pipeline
	// (one round trip per Redis node) checks them all.
	exists := make([]*redis.IntCmd, len(ids))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			exists[i] = p.Exists(ctx, s.keySession(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("session: user sessions: check: %w", err)
	}
	live := make([]string, 0, len(ids))
	var gone []any
	for i, id := range ids {
		if exists[i].Val() == 1 {
			live = append(live, id)
		} else {
			gone = append(gone, id)
		}
	}
	if len(gone) > 0 {
		// A failure here only delays the clean-up to the next call: the
		// answer is right either way, and failing it would make the
		// caller refuse a connection over housekeeping.
		_ = s.rdb.SRem(ctx, key, gone...).Err()
	}
	return live, nil
}

// RenewUsers renews the TTL of the given users' session indexes (the sets
// a reconnect rejoins from), so that a user who stays connected longer
// than the TTL without creating or joining a session is still rejoined
// after a reconnect. A user without an index is left alone. The node calls
// it for its connected users (see internal/farm).
func (s *Store) RenewUsers(ctx context.Context, users []string) error {
	const batch = 500
	for len(users) > 0 {
		n := min(batch, len(users))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, u := range users[:n] {
				p.PExpire(ctx, s.keyUserSessions(u), s.cfg.TTL)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("session: renew users' session indexes: %w", err)
		}
		users = users[n:]
	}
	return nil
}

// Emit records an event in the session's history and sends it, with its
// eventId added to the payload, to the session group and — when callerConn is
// set — to the caller once (the caller is excluded from the group send, so a
// caller that is a member does not get it twice). It returns the event id.
func (s *Store) Emit(ctx context.Context, sessionID, callerConn, target string, payload any) (string, error) {
	return s.emit(ctx, sessionID, callerConn, target, payload, true)
}

// Post is Emit for a sender that does not wait for other nodes: it returns
// once the event is recorded and queued for them (members on this node are
// served before it returns). Order with this node's other sends is kept,
// and members that miss it live find it in the history like any event.
func (s *Store) Post(ctx context.Context, sessionID, callerConn, target string, payload any) (string, error) {
	return s.emit(ctx, sessionID, callerConn, target, payload, false)
}

func (s *Store) emit(ctx context.Context, sessionID, callerConn, target string, payload any, wait bool) (string, error) {
	body, err := json.Marshal(payload)
	if err != nil {
		return "", fmt.Errorf("session: emit %s: encode: %w", target, err)
	}
	id, err := s.record(ctx, sessionID, target, body)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotRecorded, err)
	}
	// Once recorded, the event is sent even if the caller goes away
	// meanwhile (its connection closing cancels ctx): members would
	// otherwise miss live what the history already holds.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	withID := json.RawMessage(injectEventID(body, id))
	group := GroupName(sessionID)
	var errs []error
	send := s.router.SendGroupExcept
	if !wait {
		send = s.router.PostGroupExcept
	}
	if err := send(ctx, group, callerConn, target, withID); err != nil {
		errs = append(errs, err)
	}
	if callerConn != "" {
		if err := s.router.SendConnection(ctx, callerConn, target, withID); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		// The event is in the history: members that missed it live
		// recover it from there.
		return id, fmt.Errorf("session: emit %s: %w", target, errors.Join(errs...))
	}
	return id, nil
}

// record appends an event to the history and, when due, renews the TTL of
// the history, the session record and its members in the same round trip
// (one slot: the keys share the session's hash tag). An event not due a
// renewal costs its XADD alone.
func (s *Store) record(ctx context.Context, sessionID, target string, body []byte) (string, error) {
	ts := s.cfg.Now().UnixMilli()
	add := &redis.XAddArgs{
		Stream: s.keyEvents(sessionID),
		MaxLen: s.cfg.HistoryMaxLen,
		Approx: true,
		Values: []any{"t", target, "p", body, "ts", ts},
	}
	if !s.needsRenewal(sessionID) {
		id, err := s.rdb.XAdd(ctx, add).Result()
		if err != nil {
			return "", fmt.Errorf("session: record %s: %w", target, err)
		}
		return id, nil
	}
	var cmd *redis.StringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		cmd = p.XAdd(ctx, add)
		for _, k := range s.sessionKeys(sessionID) {
			p.PExpire(ctx, k, s.cfg.TTL)
		}
		return nil
	})
	if err != nil {
		s.forgetRenewal(sessionID)
		return "", fmt.Errorf("session: record %s: %w", target, err)
	}
	return cmd.Val(), nil
}

// injectEventID adds "eventId" as the first field of a JSON object.
func injectEventID(body []byte, id string) []byte {
	b := bytes.TrimLeft(body, " \t\r\n")
	if len(b) < 2 || b[0] != '{' {
		return body
	}
	out := make([]byte, 0, len(b)+len(id)+16)
	out = append(out, `{"eventId":"`...)
	out = append(out, id...)
	out = append(out, '"')
	rest := bytes.TrimLeft(b[1:], " \t\r\n")
	if len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, rest...)
}

var eventIDPattern = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// History returns up to limit events recorded after afterEventID (all from
// the start when it is empty), oldest first.
func (s *Store) History(ctx context.Context, sessionID, afterEventID string, limit int) ([]contract.HistoryEvent, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	start := "-"
	if afterEventID != "" {
		if !eventIDPattern.MatchString(afterEventID) {
			return nil, ErrInvalidEventID
		}
		start = "(" + afterEventID
	}
	msgs, err := s.rdb.XRangeN(ctx, s.keyEvents(sessionID), start, "+", int64(limit)).Result()
	if err != nil {
		return nil, fmt.Errorf("session: history: %w", err)
	}
	out := make([]contract.HistoryEvent, 0, len(msgs))
	for _, m := range msgs {
		target, _ := m.Values["t"].(string)
		body, _ := m.Values["p"].(string)
		ev := contract.HistoryEvent{EventID: m.ID, Target: target, Payload: injectEventID([]byte(body), m.ID)}
		if ts, ok := m.Values["ts"].(string); ok {
			var ms int64
			_, _ = fmt.Sscan(ts, &ms)
			ev.Timestamp = contract.DateTime(time.UnixMilli(ms).UTC())
		}
		if !json.Valid(ev.Payload) {
			ev.Payload = json.RawMessage("null")
		}
		out = append(out, ev)
	}
	return out, nil
}
