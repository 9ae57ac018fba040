// Package hubs defines OrchestratorChat's two hubs, OrchestratorHub and
// AgentHub: thin handlers that decode requests, check who may do what, call
// the session store and the orchestration engine, and answer.
//
// Both hubs share the farm-wide groups (DESIGN decision 5): a session's group
// holds every connection of every member user, on either hub.
package hubs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode"
	"github.com/orchestratorchat/hubfarm/internal/backoff"
	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/orchestratorchat/hubfarm/orchestration/session"
	"github.com/orchestratorchat/hubfarm/orchestration/tools"
)

// Paths and names of the hubs.
const (
	OrchestratorPath = "/hubs/orchestrator"
	AgentPath        = "/hubs/agent"
	OrchestratorName = "OrchestratorHub"
	AgentName        = "AgentHub"
)

// TargetReceiveSessionMessage is the callback carrying a user's chat message.
const TargetReceiveSessionMessage = "ReceiveSessionMessage"

// Limits on hub method input (more arrive with the security work).
const (
	maxContentBytes = 64 << 10
	maxIDLength     = 128
	maxNameLength   = 256
	maxHistoryLimit = 1000
)

// Deps are what the hubs need.
type Deps struct {
	Sessions *session.Store
	// Engine runs plans and answers agent messages; nil leaves the
	// orchestration and agent methods out.
	Engine *orchestration.Engine
	Logger *slog.Logger
	// OpenSessions lets any user join any session by id (development and
	// insecure farms, where users are not authenticated). Otherwise only the
	// owner, invited members and admins may join or use a session.
	OpenSessions bool
	// Dev enables diagnostics meant for development and tests only
	// (DebugClose).
	Dev bool
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Tools runs ExecuteTool's tool calls and Approvals authorises them
	// farm-wide; ExecuteTool and ApproveTool are offered when both are set
	// (and Engine is).
	Tools     *tools.Executor
	Approvals *tools.Approvals
}

// Hubs holds the registered hubs.
type Hubs struct {
	Orchestrator *hubnode.Hub
	Agent        *hubnode.Hub
	deps         Deps
	node         *hubnode.Node
}

// Register adds both hubs and their methods to node.
func Register(node *hubnode.Node, deps Deps) *Hubs {
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	h := &Hubs{deps: deps, node: node}
	h.Orchestrator = node.AddHub(OrchestratorName, OrchestratorPath)
	h.Agent = node.AddHub(AgentName, AgentPath)
	for _, hub := range []*hubnode.Hub{h.Orchestrator, h.Agent} {
		hub.OnConnected(h.rejoinSessions)
		h.registerSessionMethods(hub)
		h.registerDiagnostics(hub)
	}
	if deps.Engine != nil {
		h.registerOrchestration(h.Orchestrator)
		h.registerAgentMethods(h.Agent)
		h.registerAgentList(h.Agent)
		h.registerAgentList(h.Orchestrator)
		if deps.Tools != nil && deps.Approvals != nil {
			h.registerToolMethods(h.Agent, true)
			h.registerToolMethods(h.Orchestrator, false)
		}
	}
	h.Orchestrator.OnConnected(func(c *hubnode.Conn) {
		_ = sendTo(c, contract.TargetConnected, contract.ConnectionInfo{
			ConnectionID: c.ID(), ConnectedAt: contract.DateTime(c.ConnectedAt().UTC()),
		})
	})
	return h
}

func sendTo(c *hubnode.Conn, target string, args ...any) error {
	ctx, cancel := context.WithTimeout(c.Context(), 5*time.Second)
	defer cancel()
	return c.Hub().Node().SendConnection(ctx, c.ID(), target, args...)
}

// rejoinBudget bounds how long a new connection's rejoin keeps retrying
// to read its user's sessions. Right after Redis comes back, the Redis
// client's pool may fail new connections fast for up to a second while the
// node already reports ready; a reconnect storm lands exactly then.
const rejoinBudget = 3 * time.Second

// rejoinSessions puts a new connection into the groups of its user's
// sessions, so membership survives reconnects (on any node). When the
// user's sessions cannot be read (Redis unreachable) it retries with
// jittered back-off for rejoinBudget, then closes the connection with
// allowReconnect: a client that believed it was back in its sessions
// without being in them would silently miss their events.
func (h *Hubs) rejoinSessions(c *hubnode.Conn) {
	if c.Identity().Anonymous {
		return // a new identity, in no session yet
	}
	ctx, cancel := context.WithTimeout(c.Context(), 5*time.Second)
	defer cancel()
	ids, err := h.userSessions(ctx, c.User())
	if err != nil {
		h.deps.Logger.Warn("rejoining sessions failed; asking the client to reconnect", "conn", c.ID(), "err", err)
		c.Close(hubnode.ReasonInternal)
		return
	}
	for _, id := range ids {
		if err := h.node.AddToGroup(ctx, c.ID(), session.GroupName(id)); err != nil {
			h.deps.Logger.Warn("rejoining session failed", "conn", c.ID(), "session", id, "err", err)
		}
	}
}

// userSessions reads user's sessions, retrying with jittered back-off for
// rejoinBudget (within ctx).
func (h *Hubs) userSessions(ctx context.Context, user string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, rejoinBudget)
	defer cancel()
	bo := backoff.Exp{Min: 50 * time.Millisecond, Max: time.Second}
	for {
		ids, err := h.deps.Sessions.UserSessions(ctx, user)
		if err == nil {
			return ids, nil
		}
		t := time.NewTimer(bo.Next())
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, err
		}
	}
}

// receiveError sends ReceiveError to the caller.
func (h *Hubs) receiveError(call *hubnode.Call, code, msg, sessionID, agentID string) {
	e := contract.ErrorResponse{Error: msg, Code: code, Timestamp: contract.DateTime(h.deps.Now().UTC())}
	if sessionID != "" {
		e.SessionID = &sessionID
	}
	if agentID != "" {
		e.AgentID = &agentID
	}
	_ = call.SendCaller(contract.TargetReceiveError, e)
}

func validID(kind, id string) error {
	if id == "" {
		return hubnode.Errorf("VALIDATION_FAILED: %s is required.", kind)
	}
	if p := idProblem(id); p != "" {
		return hubnode.Errorf("VALIDATION_FAILED: %s %s.", kind, p)
	}
	return nil
}

func (h *Hubs) registerSessionMethods(hub *hubnode.Hub) {
	hub.Method("CreateSession", h.createSession)
	hub.Method("JoinSession", h.joinSession)
	hub.Method("LeaveSession", h.leaveSession)
	// afterEventId and limit may be left out (from the start, the most).
	hub.Method("GetSessionHistory", h.getSessionHistory, hubnode.OptionalArgs(2))
	hub.Method("SendSessionMessage", h.sendSessionMessage)
	hub.Method("InviteToSession", h.inviteToSession)
	hub.Method("RemoveFromSession", h.removeFromSession)
}

func (h *Hubs) createSession(call *hubnode.Call, req contract.CreateSessionRequest) (contract.SessionCreatedResponse, error) {
	fail := func(msg string) (contract.SessionCreatedResponse, error) {
		return contract.SessionCreatedResponse{Success: false, SessionID: "", Error: &msg}, nil
	}
	if err := validateCreateSession(req); err != nil {
		return fail("Invalid session request: " + err.Error() + ".")
	}
	ctx := call.Context()
	sess, err := h.deps.Sessions.Create(ctx, call.User(), req)
	if err != nil {
		h.deps.Logger.Error("create session failed", "conn", call.ConnectionID(), "err", err)
		return fail("Failed to create session.")
	}
	// The caller's own connection joined synchronously in Create; the
	// SessionCreated event reaches it (once) before the Completion.
	if _, err := h.deps.Sessions.Emit(ctx, sess.ID, call.ConnectionID(), contract.TargetSessionCreated, sess); err != nil {
		h.deps.Logger.Warn("SessionCreated delivery incomplete", "session", sess.ID, "err", err)
	}
	h.deps.Logger.Info("session created", "audit", true, "user", call.User(), "session", sess.ID, "conn", call.ConnectionID(), "remote", call.Conn().RemoteAddr())
	return contract.SessionCreatedResponse{Success: true, SessionID: sess.ID, Session: &sess}, nil
}

func (h *Hubs) joinSession(call *hubnode.Call, sessionID string) error {
	if err := validID("sessionId", sessionID); err != nil {
		return err
	}
	if !h.deps.OpenSessions && !call.Conn().Identity().IsAdmin() {
		ok, err := h.deps.Sessions.IsMember(call.Context(), sessionID, call.User())
		if err != nil {
			return fmt.Errorf("join session: %w", err)
		}
		if !ok {
			if exists, _ := h.deps.Sessions.Exists(call.Context(), sessionID); !exists {
				h.receiveError(call, contract.CodeSessionNotFound, fmt.Sprintf("Session %s not found", sessionID), sessionID, "")
				return nil
			}
			h.forbidden(call, "join", sessionID)
			h.receiveError(call, contract.CodeForbidden, fmt.Sprintf("You are not a member of session %s", sessionID), sessionID, "")
			return hubnode.Errorf("FORBIDDEN: you are not a member of session %s.", sessionID)
		}
	}
	sess, err := h.deps.Sessions.Join(call.Context(), call.User(), sessionID)
	switch {
	case errors.Is(err, session.ErrNotFound):
		h.receiveError(call, contract.CodeSessionNotFound, fmt.Sprintf("Session %s not found", sessionID), sessionID, "")
		return nil
	case err != nil:
		return fmt.Errorf("join session: %w", err)
	}
	h.deps.Logger.Info("session joined", "audit", true, "user", call.User(), "session", sessionID, "conn", call.ConnectionID(), "remote", call.Conn().RemoteAddr())
	return call.SendCaller(contract.TargetSessionJoined, sess)
}

func (h *Hubs) leaveSession(call *hubnode.Call, sessionID string) error {
	if err := validID("sessionId", sessionID); err != nil {
		return err
	}
	if err := h.deps.Sessions.Leave(call.Context(), call.User(), sessionID); err != nil {
		// As in the original hub, leaving never fails the caller.
		h.deps.Logger.Warn("leave session failed", "conn", call.ConnectionID(), "session", sessionID, "err", err)
	}
	h.deps.Logger.Info("session left", "audit", true, "user", call.User(), "session", sessionID, "conn", call.ConnectionID(), "remote", call.Conn().RemoteAddr())
	return nil
}

// inSession reports whether the caller may use the session: its connection
// is in the session group on this node (no Redis round trip), or its user is
// a member.
func (h *Hubs) inSession(call *hubnode.Call, sessionID string) (bool, error) {
	// On an open farm sessions are open: anyone may join any session by its
	// id, so a membership check would protect nothing and cost a Redis
	// round trip per message. Otherwise the member set in Redis is the
	// authority: a removal reaches other nodes' group tables only
	// asynchronously.
	if h.deps.OpenSessions {
		return true, nil
	}
	return h.deps.Sessions.IsMember(call.Context(), sessionID, call.User())
}

// forbidden writes the audit line of a refused session operation.
func (h *Hubs) forbidden(call *hubnode.Call, op, sessionID string) {
	h.deps.Logger.Warn("session access denied", "audit", true, "op", op, "user", call.User(), "session", sessionID,
		"conn", call.ConnectionID(), "remote", call.Conn().RemoteAddr())
}

func (h *Hubs) requireMember(call *hubnode.Call, sessionID string) error {
	if err := validID("sessionId", sessionID); err != nil {
		return err
	}
	if call.Conn().Identity().IsAdmin() {
		return nil
	}
	ok, err := h.inSession(call, sessionID)
	if err != nil {
		return fmt.Errorf("membership check: %w", err)
	}
	if !ok {
		h.forbidden(call, call.Target(), sessionID)
		return hubnode.Errorf("FORBIDDEN: you are not a member of session %s.", sessionID)
	}
	return nil
}

// requireOwner allows the session's owner and admins.
func (h *Hubs) requireOwner(call *hubnode.Call, sessionID string) error {
	if err := validID("sessionId", sessionID); err != nil {
		return err
	}
	if call.Conn().Identity().IsAdmin() {
		return nil
	}
	owner, err := h.deps.Sessions.Owner(call.Context(), sessionID)
	if errors.Is(err, session.ErrNotFound) {
		return hubnode.Errorf("SESSION_NOT_FOUND: session %s not found.", sessionID)
	}
	if err != nil {
		return fmt.Errorf("owner check: %w", err)
	}
	if owner != call.User() {
		h.forbidden(call, call.Target(), sessionID)
		return hubnode.Errorf("FORBIDDEN: only the owner of session %s may do that.", sessionID)
	}
	return nil
}

func (h *Hubs) inviteToSession(call *hubnode.Call, sessionID, userID string) error {
	if err := validID("userId", userID); err != nil {
		return err
	}
	if err := h.requireOwner(call, sessionID); err != nil {
		return err
	}
	if err := h.deps.Sessions.Invite(call.Context(), sessionID, userID); err != nil {
		return fmt.Errorf("invite: %w", err)
	}
	h.deps.Logger.Info("session invite", "audit", true, "user", call.User(), "invited", userID, "session", sessionID,
		"conn", call.ConnectionID(), "remote", call.Conn().RemoteAddr())
	return nil
}

func (h *Hubs) removeFromSession(call *hubnode.Call, sessionID, userID string) error {
	if err := validID("userId", userID); err != nil {
		return err
	}
	if err := h.requireOwner(call, sessionID); err != nil {
		return err
	}
	if err := h.deps.Sessions.Remove(call.Context(), sessionID, userID); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	h.deps.Logger.Info("session member removed", "audit", true, "user", call.User(), "removed", userID, "session", sessionID,
		"conn", call.ConnectionID(), "remote", call.Conn().RemoteAddr())
	return nil
}

func (h *Hubs) getSessionHistory(call *hubnode.Call, sessionID string, afterEventID *string, limit *int) ([]contract.HistoryEvent, error) {
	if err := h.requireMember(call, sessionID); err != nil {
		return nil, err
	}
	after, n := "", maxHistoryLimit
	if afterEventID != nil {
		after = *afterEventID
		if idProblem(after) != "" {
			return nil, hubnode.Errorf("VALIDATION_FAILED: afterEventId is not an event id.")
		}
	}
	if limit != nil && *limit > 0 && *limit < maxHistoryLimit {
		n = *limit
	}
	events, err := h.deps.Sessions.History(call.Context(), sessionID, after, n)
	if errors.Is(err, session.ErrInvalidEventID) {
		return nil, hubnode.Errorf("VALIDATION_FAILED: afterEventId is not an event id.")
	}
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	return events, nil
}

func (h *Hubs) sendSessionMessage(call *hubnode.Call, sessionID, content string) error {
	if err := h.requireMember(call, sessionID); err != nil {
		return err
	}
	if len(content) > maxContentBytes {
		return hubnode.Errorf("VALIDATION_FAILED: message content exceeds %d bytes.", maxContentBytes)
	}
	user := call.User()
	msg := contract.NewAgentMessage(h.deps.Now().UTC())
	msg.Content = content
	msg.Role = contract.MessageRoleUser
	msg.SessionID = sessionID
	msg.SenderID = &user
	// A sender in the session gets its own message once, with its eventId;
	// one that is not (an admin, or anyone on an open farm) only sends.
	echo := ""
	if call.Conn().InGroup(session.GroupName(sessionID)) {
		echo = call.ConnectionID()
	}
	// Post: the sender's answer depends on the event being recorded, not
	// on other nodes having been reached.
	if _, err := h.deps.Sessions.Post(call.Context(), sessionID, echo, TargetReceiveSessionMessage, msg); err != nil {
		if errors.Is(err, session.ErrNotRecorded) {
			h.deps.Logger.Warn("session message refused: history unavailable", "session", sessionID, "conn", call.ConnectionID(), "err", err)
			return &hubnode.HubError{Message: "PROCESSING_ERROR: the message was not recorded (session storage unavailable); please retry.", Err: err}
		}
		// Recorded but not delivered everywhere: members catch up from the
		// history, so the send counts as done.
		h.deps.Logger.Warn("session message recorded but not delivered everywhere", "session", sessionID, "err", err)
	}
	return nil
}

func (h *Hubs) registerDiagnostics(hub *hubnode.Hub) {
	// Counter streams 0..count-1: a diagnostic for server-to-client streams.
	hub.StreamMethod("Counter", func(call *hubnode.Call, s *hubnode.Stream, count int) error {
		if count < 0 || count > 10000 {
			return hubnode.Errorf("count must be between 0 and 10000")
		}
		for i := 0; i < count; i++ {
			if err := s.Send(call.Context(), i); err != nil {
				return err
			}
		}
		return nil
	})
	if !h.deps.Dev {
		return
	}
	// DebugClose makes the node close the caller with allowReconnect, as a
	// draining node would. Development only.
	hub.Method("DebugClose", func(call *hubnode.Call) error {
		c := call.Conn()
		time.AfterFunc(50*time.Millisecond, func() { c.Close(hubnode.ReasonServerRequest) })
		return nil
	})
}
