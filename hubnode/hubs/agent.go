package hubs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode"
	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/orchestratorchat/hubfarm/orchestration/session"
	"github.com/orchestratorchat/hubfarm/orchestration/tools"
)

// EngineRouter is the orchestration.Router of a node: how the engine
// streams agent answers and status updates, over the hub node's
// Clients/Groups API. Give it to the engine as part of its Sessions value
// (the engine looks for a Router there).
//
// Delivery: SendGroup and SendConnection publish through the node, whose
// backplane sends one node's publications over one ordered pipeline and
// whose peers each read one ordered subscription, so the callbacks the
// engine sends one after another reach any connection in that order,
// whichever of the two (or the session store's Emit) carried them.
type EngineRouter struct {
	Node     *hubnode.Node
	Sessions *session.Store
	// Members lists the connections of a group, farm-wide (the backplane's
	// registry).
	Members func(ctx context.Context, group string) ([]string, error)
	// ConnectionUser returns the user of a connection held by any node
	// ("" when no node holds it).
	ConnectionUser func(ctx context.Context, connID string) (string, error)
	// OpenSessions: users are not authenticated and may join any session,
	// so every agent subscriber watches every session's answers of that
	// agent (the original hub's behaviour). Otherwise a subscriber only
	// gets the answers given in sessions its user is a member of.
	OpenSessions bool
}

var _ orchestration.Router = EngineRouter{}

// SendGroup implements orchestration.Router.
func (r EngineRouter) SendGroup(ctx context.Context, group, exclude, target string, payload any) error {
	return r.Node.SendGroupExcept(ctx, group, exclude, target, payload)
}

// SendConnection implements orchestration.Router.
func (r EngineRouter) SendConnection(ctx context.Context, connID, target string, payload any) error {
	return r.Node.SendConnection(ctx, connID, target, payload)
}

// Watchers implements orchestration.Router: the agent's subscribers that
// are not in the session group and may see the session, then the caller
// if it is not in the session group. Two registry reads, plus a
// membership check per subscriber on an authenticated farm.
func (r EngineRouter) Watchers(ctx context.Context, sessionID, agentID, caller string) ([]string, error) {
	list, err := r.Members(ctx, orchestration.SessionGroup(sessionID))
	if err != nil {
		return nil, fmt.Errorf("watchers: session group: %w", err)
	}
	members := make(map[string]bool, len(list))
	for _, c := range list {
		members[c] = true
	}
	subs, err := r.Members(ctx, orchestration.AgentGroup(agentID))
	if err != nil {
		return nil, fmt.Errorf("watchers: agent group: %w", err)
	}
	var out []string
	for _, c := range subs {
		if members[c] {
			continue
		}
		ok, err := r.mayWatch(ctx, sessionID, c)
		if err != nil {
			return out, err
		}
		if ok {
			out = append(out, c)
		}
	}
	if caller != "" && !members[caller] && !slices.Contains(out, caller) {
		out = append(out, caller)
	}
	return out, nil
}

// mayWatch reports whether an agent subscriber may see a session's
// answers: always on an open farm, else when its user is a member (or, for
// a local connection, an admin).
func (r EngineRouter) mayWatch(ctx context.Context, sessionID, connID string) (bool, error) {
	if r.OpenSessions {
		return true, nil
	}
	var user string
	if c, ok := r.Node.LocalConnection(connID); ok {
		if c.Identity().IsAdmin() {
			return true, nil
		}
		user = c.User()
	} else {
		u, err := r.ConnectionUser(ctx, connID)
		if err != nil {
			return false, fmt.Errorf("watchers: connection user: %w", err)
		}
		user = u
	}
	if user == "" {
		return false, nil
	}
	return r.Sessions.IsMember(ctx, sessionID, user)
}

// registerAgentMethods adds AgentHub's agent methods (CONTRACT §4 as
// settled by DESIGN decisions 3, 4 and 10).
func (h *Hubs) registerAgentMethods(hub *hubnode.Hub) {
	hub.Method("SubscribeToAgent", h.subscribeToAgent)
	hub.Method("UnsubscribeFromAgent", h.unsubscribeFromAgent)
	hub.Method("SendAgentMessage", h.sendAgentMessage)
	hub.StreamMethod("StreamAgentMessage", h.streamAgentMessage)
}

// registerAgentList adds GetAgents (both hubs).
func (h *Hubs) registerAgentList(hub *hubnode.Hub) {
	hub.Method("GetAgents", func(call *hubnode.Call) ([]contract.AgentInfo, error) {
		return contract.List[contract.AgentInfo](h.deps.Engine.Agents(call.Context())), nil
	})
}

// registerToolMethods adds ExecuteTool (AgentHub) and ApproveTool (the hub
// given; both hubs, since session members may hold either).
func (h *Hubs) registerToolMethods(hub *hubnode.Hub, execute bool) {
	if execute {
		// Concurrent: it may wait minutes for an approval that this very
		// connection may give.
		hub.ConcurrentMethod("ExecuteTool", h.executeTool)
	}
	// The contract's form is ApproveTool(approvalId, approved); DESIGN
	// decision 10 adds a reason, which clients may leave out.
	hub.Method("ApproveTool", h.approveTool, hubnode.OptionalArgs(1))
}

// subscribeToAgent joins the caller to agent-{agentId} (per connection:
// left on UnsubscribeFromAgent or disconnect) and sends it the agent's
// current status when the catalogue knows the agent. Unknown ids are
// joined too — a client may subscribe before the agent is configured —
// and, as in the original hub, a status that cannot be read is not an
// error.
func (h *Hubs) subscribeToAgent(call *hubnode.Call, agentID string) error {
	if err := validID("agentId", agentID); err != nil {
		return err
	}
	ctx := call.Context()
	if err := call.Node().AddToGroup(ctx, call.ConnectionID(), orchestration.AgentGroup(agentID)); err != nil {
		var he *hubnode.HubError
		if errors.As(err, &he) {
			return err
		}
		// Local membership stays: sends from this node still reach it.
		h.deps.Logger.Warn("subscribe to agent: farm-wide membership failed", "conn", call.ConnectionID(), "agent", agentID, "err", err)
	}
	dto, known, err := h.deps.Engine.AgentStatus(ctx, agentID)
	switch {
	case err != nil:
		h.deps.Logger.Warn("subscribe to agent: status unavailable", "agent", agentID, "err", err)
	case known:
		return call.SendCaller(contract.TargetAgentStatusUpdate, dto)
	}
	return nil
}

func (h *Hubs) unsubscribeFromAgent(call *hubnode.Call, agentID string) error {
	if err := validID("agentId", agentID); err != nil {
		return err
	}
	if err := call.Node().RemoveFromGroup(call.Context(), call.ConnectionID(), orchestration.AgentGroup(agentID)); err != nil {
		h.deps.Logger.Warn("unsubscribe from agent failed", "conn", call.ConnectionID(), "agent", agentID, "err", err)
	}
	return nil
}

// sendAgentMessage completes once the answer's job is durably accepted
// (DESIGN decision 4); the answer arrives as callbacks (see
// orchestration.Engine.SendAgentMessage). A request that cannot be
// accepted is answered with ReceiveError to the caller, as in the original
// hub; the call itself fails too when the caller may not use the session
// or the farm could not take the job.
func (h *Hubs) sendAgentMessage(call *hubnode.Call, req contract.AgentMessageRequest) error {
	err := validateAgentMessage(req)
	if err == nil {
		_, err = h.deps.Engine.SendAgentMessage(call.Context(), callerOf(call), req)
	}
	if err == nil {
		return nil
	}
	var ee *orchestration.Error
	if !errors.As(err, &ee) {
		return fmt.Errorf("send agent message: %w", err)
	}
	h.receiveError(call, ee.Code, ee.Message, req.SessionID, req.AgentID)
	switch ee.Code {
	case contract.CodeForbidden:
		h.forbidden(call, "SendAgentMessage", req.SessionID)
		return engineError(err)
	case contract.CodeProcessingError:
		return engineError(err)
	}
	return nil
}

// streamAgentMessage streams the answer to the caller as AgentResponse
// items (every chunk, then the complete answer with isComplete true) and
// ends with a Completion; cancelling the stream cancels the agent. The
// answer runs on this node, inside the call (see
// orchestration.Engine.StreamAgentMessage for why and for what the
// session sees). A failure ends the stream with an error Completion
// "CODE: message".
func (h *Hubs) streamAgentMessage(call *hubnode.Call, s *hubnode.Stream, req contract.AgentMessageRequest) error {
	if err := validateAgentMessage(req); err != nil {
		return engineError(err)
	}
	ctx := call.Context()
	err := h.deps.Engine.StreamAgentMessage(ctx, callerOf(call), req, func(r contract.AgentResponse) error {
		return s.Send(ctx, r)
	})
	if err != nil && orchestration.CodeOf(err) == contract.CodeForbidden {
		h.forbidden(call, "StreamAgentMessage", req.SessionID)
	}
	return engineError(err)
}

// executeTool runs a tool for an agent of a session the caller belongs to
// (DESIGN decision 10): ToolExecutionStarted to the caller; the approval
// policy, which may ask the people of the session (ToolApprovalRequired to
// the caller and the session group, recorded in the history) and wait for
// ApproveTool on any node, a timeout or the caller's disconnect, after
// which ToolApprovalResolved (approval id and outcome) goes to the caller
// and the session group, recorded, so every member clears the prompt;
// then the tool, in the session's working directory under the sandbox
// root, on this node; ToolExecutionCompleted to the caller; and the
// response.
// Nothing runs unless the policy or a person approved it.
func (h *Hubs) executeTool(call *hubnode.Call, req contract.ToolExecutionRequest) (contract.ToolExecutionResponse, error) {
	if err := h.requireMember(call, req.SessionID); err != nil {
		return contract.ToolExecutionResponse{}, err
	}
	if err := validID("agentId", req.AgentID); err != nil {
		return contract.ToolExecutionResponse{}, err
	}
	if req.ToolName == "" || len(req.ToolName) > maxNameLength {
		return contract.ToolExecutionResponse{}, hubnode.Errorf("VALIDATION_FAILED: toolName is required.")
	}
	if err := validateToolRequest(req); err != nil {
		return contract.ToolExecutionResponse{}, engineError(err)
	}
	ctx := call.Context()
	started := contract.ToolExecutionUpdate{ToolName: req.ToolName, Status: "Starting", AgentID: req.AgentID}
	if err := call.SendCaller(contract.TargetToolExecutionStarted, started); err != nil {
		return contract.ToolExecutionResponse{}, fmt.Errorf("execute tool: %w", err)
	}
	var result contract.ToolExecutionResult
	switch sess, err := h.deps.Sessions.Get(ctx, req.SessionID); {
	case errors.Is(err, session.ErrNotFound):
		result = contract.ToolExecutionResult{Error: fmt.Sprintf("Session %s not found", req.SessionID)}
	case err != nil:
		return contract.ToolExecutionResponse{}, fmt.Errorf("execute tool: load session: %w", err)
	default:
		if _, known := h.deps.Engine.Agent(req.AgentID); !known {
			result = contract.ToolExecutionResult{Error: fmt.Sprintf("Agent %s not found", req.AgentID)}
			break
		}
		result = h.runTool(call, tools.Call{ToolName: req.ToolName, Parameters: req.Parameters,
			AgentID: req.AgentID, SessionID: req.SessionID, WorkingDirectory: sess.WorkingDirectory})
	}
	if result.Metadata == nil {
		result.Metadata = contract.Map{}
	}
	h.deps.Logger.Info("tool executed", "audit", true, "user", call.User(), "session", req.SessionID, "agent", req.AgentID,
		"tool", req.ToolName, "success", result.Success, "conn", call.ConnectionID(), "remote", call.Conn().RemoteAddr())
	if err := call.SendCaller(contract.TargetToolExecutionCompleted, result); err != nil {
		h.deps.Logger.Warn("ToolExecutionCompleted not delivered", "conn", call.ConnectionID(), "err", err)
	}
	resp := contract.ToolExecutionResponse{Success: result.Success, ExecutionTime: result.ExecutionTime}
	if result.Output != "" || result.Success {
		resp.Output = contract.Ptr(result.Output)
	}
	if result.Error != "" {
		resp.Error = contract.Ptr(result.Error)
	}
	return resp, nil
}

// runTool authorises a known tool call and runs it if approved. An
// unknown tool is not put to the policy (nobody should be asked about a
// call that cannot run): the executor refuses it.
func (h *Hubs) runTool(call *hubnode.Call, tc tools.Call) contract.ToolExecutionResult {
	ctx := call.Context()
	if _, known := tools.CanonicalName(tc.ToolName); !known {
		return h.deps.Tools.Execute(ctx, tc)
	}
	asked := false
	notify := func(r contract.ToolApprovalRequest) {
		asked = true
		if _, err := h.deps.Sessions.Emit(ctx, tc.SessionID, call.ConnectionID(), contract.TargetToolApprovalRequired, r); err != nil {
			h.deps.Logger.Warn("ToolApprovalRequired delivery incomplete", "session", tc.SessionID, "approval", r.ID, "err", err)
		}
	}
	decision, err := h.deps.Approvals.Authorize(ctx, tools.ApprovalRequest{Context: tools.ContextFor(tc), RequesterUser: call.User()}, notify)
	if err != nil {
		h.deps.Logger.Warn("tool approval failed closed", "session", tc.SessionID, "tool", tc.ToolName, "err", err)
	}
	if asked {
		h.resolved(call, tc, decision)
	}
	meta := contract.Map{"decidedBy": decision.DecidedBy}
	if decision.ApprovalID != "" {
		meta["approvalId"] = decision.ApprovalID
	}
	if !decision.Approved {
		return contract.ToolExecutionResult{Error: "Tool call not approved: " + decision.Reason, Metadata: meta}
	}
	res := h.deps.Tools.Execute(ctx, tc)
	if res.Metadata == nil {
		res.Metadata = contract.Map{}
	}
	for k, v := range meta {
		res.Metadata[k] = v
	}
	return res
}

// resolved tells the session that an approval it was asked for is over
// (ToolApprovalResolved, recorded in the history like the request, so a
// member catching up clears the prompt too). The waiting call sends it,
// whoever decided and on whichever node: it alone sees every ending —
// a member's decision, the timeout, its own caller leaving. It is sent
// even when the call's context is gone (the caller left).
func (h *Hubs) resolved(call *hubnode.Call, tc tools.Call, d tools.ApprovalResult) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(call.Context()), resolutionTimeout)
	defer cancel()
	r := contract.ToolApprovalResolution{ID: d.ApprovalID, ToolName: tc.ToolName, AgentID: tc.AgentID,
		SessionID: tc.SessionID, Approved: d.Approved, Outcome: d.Outcome(), Reason: d.Reason,
		DecidedBy: d.DecidedBy, Timestamp: contract.DateTime(d.Timestamp.UTC())}
	if _, err := h.deps.Sessions.Emit(ctx, tc.SessionID, call.ConnectionID(), contract.TargetToolApprovalResolved, r); err != nil {
		h.deps.Logger.Warn("ToolApprovalResolved delivery incomplete", "session", tc.SessionID, "approval", d.ApprovalID, "err", err)
	}
}

// resolutionTimeout bounds sending ToolApprovalResolved.
const resolutionTimeout = 5 * time.Second

// approveTool records a decision on a pending tool approval; any node may
// take it. The requester, a member of the approval's session and admins
// may decide; anyone else gets FORBIDDEN (audit-logged). Only the first
// decision counts: a later one, or one after the timeout, gets CONFLICT.
// Every decision is audit-logged (here and by the approvals store). The
// reason is optional: nil when the client sent null or only the contract's
// two arguments.
func (h *Hubs) approveTool(call *hubnode.Call, approvalID string, approved bool, reason *string) error {
	if err := validID("approvalId", approvalID); err != nil {
		return err
	}
	ctx := call.Context()
	rec, err := h.deps.Approvals.Get(ctx, approvalID)
	if errors.Is(err, tools.ErrApprovalNotFound) {
		return hubnode.Errorf("NOT_FOUND: approval %s not found (unknown or expired).", approvalID)
	}
	if err != nil {
		return fmt.Errorf("approve tool: %w", err)
	}
	user := call.User()
	allowed := rec.RequesterUser == user || call.Conn().Identity().IsAdmin()
	if !allowed {
		if allowed, err = h.deps.Sessions.IsMember(ctx, rec.SessionID, user); err != nil {
			return fmt.Errorf("approve tool: membership check: %w", err)
		}
	}
	if !allowed {
		h.deps.Logger.Warn("tool approval refused", "audit", true, "approval", approvalID, "user", user,
			"session", rec.SessionID, "conn", call.ConnectionID(), "remote", call.Conn().RemoteAddr())
		return hubnode.Errorf("FORBIDDEN: you may not decide approval %s.", approvalID)
	}
	why := ""
	if reason != nil {
		why = *reason
		if len(why) > maxNameLength*4 {
			why = why[:maxNameLength*4]
		}
	}
	err = h.deps.Approvals.Decide(ctx, approvalID, approved, why, user)
	h.deps.Logger.Info("tool approval decision", "audit", true, "approval", approvalID, "approved", approved,
		"user", user, "session", rec.SessionID, "tool", rec.ToolName, "conn", call.ConnectionID(),
		"remote", call.Conn().RemoteAddr(), "err", err)
	switch {
	case errors.Is(err, tools.ErrAlreadyDecided):
		return hubnode.Errorf("CONFLICT: approval %s was already decided.", approvalID)
	case errors.Is(err, tools.ErrApprovalNotFound):
		return hubnode.Errorf("NOT_FOUND: approval %s not found (unknown or expired).", approvalID)
	case err != nil:
		return fmt.Errorf("approve tool: %w", err)
	}
	return nil
}
