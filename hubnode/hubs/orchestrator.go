package hubs

import (
	"context"
	"errors"
	"fmt"

	"github.com/orchestratorchat/hubfarm/hubnode"
	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/orchestratorchat/hubfarm/orchestration/session"
)

// EngineSessions adapts the session store to what the orchestration engine
// needs: existence and working directory, emitting recorded events, and the
// membership check the engine applies to every plan method.
type EngineSessions struct {
	Store *session.Store
	// Node, when set, lets the admins among its connections use every
	// session, as they may on the session methods (the engine's callers
	// are always connections of the node they call through).
	Node *hubnode.Node
}

// Exists implements orchestration.Sessions.
func (s EngineSessions) Exists(ctx context.Context, id string) (bool, error) {
	return s.Store.Exists(ctx, id)
}

// WorkingDirectory implements orchestration.SessionDirectories: the
// session's workingDirectory as created, which agents and tools work in
// (under the sandbox root).
func (s EngineSessions) WorkingDirectory(ctx context.Context, id string) (string, bool, error) {
	sess, err := s.Store.Get(ctx, id)
	if errors.Is(err, session.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("session working directory: %w", err)
	}
	return sess.WorkingDirectory, true, nil
}

// Emit implements orchestration.Sessions.
func (s EngineSessions) Emit(ctx context.Context, id string, caller orchestration.Caller, target string, payload any) error {
	_, err := s.Store.Emit(ctx, id, caller.ConnectionID, target, payload)
	return err
}

// CanUse implements orchestration.SessionAuthorizer: members, and admins.
func (s EngineSessions) CanUse(ctx context.Context, id string, caller orchestration.Caller) (bool, error) {
	if s.Node != nil {
		if c, ok := s.Node.LocalConnection(caller.ConnectionID); ok && c.User() == caller.User && c.Identity().IsAdmin() {
			return true, nil
		}
	}
	return s.Store.IsMember(ctx, id, caller.User)
}

func callerOf(call *hubnode.Call) orchestration.Caller {
	return orchestration.Caller{ConnectionID: call.ConnectionID(), User: call.User()}
}

// engineError turns an engine error into a Completion error whose text is
// safe to show, "CODE: message".
func engineError(err error) error {
	var e *orchestration.Error
	if errors.As(err, &e) {
		return &hubnode.HubError{Message: e.Code + ": " + e.Message, Err: err}
	}
	return err
}

func (h *Hubs) registerOrchestration(hub *hubnode.Hub) {
	e := h.deps.Engine
	hub.Method("CreateOrchestrationPlan", func(call *hubnode.Call, req contract.CreatePlanRequest) (contract.OrchestrationPlan, error) {
		if err := validatePlanRequest(req); err != nil {
			return contract.OrchestrationPlan{}, engineError(err)
		}
		plan, err := e.CreatePlan(call.Context(), callerOf(call), req)
		if err != nil {
			return contract.OrchestrationPlan{}, h.planRefused(call, err, req.SessionID, "")
		}
		return plan, nil
	})
	hub.Method("ExecutePlan", func(call *hubnode.Call, planID string) error {
		err := validatePlanID(planID)
		if err == nil {
			err = e.ExecutePlan(call.Context(), callerOf(call), planID)
		}
		if err != nil {
			h.receiveError(call, orchestration.CodeOf(err), err.Error(), "", "")
			return h.planRefused(call, err, "", planID)
		}
		h.deps.Logger.Info("plan execution started", "audit", true, "user", call.User(), "plan", planID, "conn", call.ConnectionID(),
			"remote", call.Conn().RemoteAddr())
		return nil
	})
	// SendOrchestrationMessage builds and starts a plan; as in the original
	// hub, a request that cannot be planned is reported with ReceiveError
	// and the call itself still succeeds.
	hub.Method("SendOrchestrationMessage", func(call *hubnode.Call, req contract.OrchestrationMessageRequest) error {
		plan, err := contract.OrchestrationPlan{}, validateOrchestrationMessage(req)
		if err == nil {
			plan, err = e.SendOrchestrationMessage(call.Context(), callerOf(call), req)
		}
		if err != nil {
			var ee *orchestration.Error
			if !errors.As(err, &ee) {
				return fmt.Errorf("send orchestration message: %w", err)
			}
			h.receiveError(call, ee.Code, ee.Message, req.SessionID, "")
			_ = h.planRefused(call, err, req.SessionID, "") // the audit line; the call succeeds
			return nil
		}
		h.deps.Logger.Info("plan execution started", "audit", true, "user", call.User(), "plan", plan.ID, "session", req.SessionID,
			"conn", call.ConnectionID(), "remote", call.Conn().RemoteAddr())
		return nil
	})
	hub.Method("CancelExecution", func(call *hubnode.Call, planID string) error {
		err := validatePlanID(planID)
		if err == nil {
			err = e.CancelExecution(call.Context(), callerOf(call), planID)
		}
		if err != nil {
			return h.planRefused(call, err, "", planID)
		}
		h.deps.Logger.Info("plan cancelled", "audit", true, "user", call.User(), "plan", planID, "conn", call.ConnectionID(),
			"remote", call.Conn().RemoteAddr())
		return nil
	})
	hub.Method("GetPlan", func(call *hubnode.Call, planID string) (contract.PlanState, error) {
		if err := validatePlanID(planID); err != nil {
			return contract.PlanState{}, engineError(err)
		}
		st, err := e.GetPlan(call.Context(), callerOf(call), planID)
		if err != nil {
			return contract.PlanState{}, h.planRefused(call, err, "", planID)
		}
		return st, nil
	})
}

// planRefused returns a plan method's engine error for its Completion,
// after writing the audit line of a refusal when the caller may not use
// the plan's session.
func (h *Hubs) planRefused(call *hubnode.Call, err error, sessionID, planID string) error {
	if orchestration.CodeOf(err) == contract.CodeForbidden {
		h.deps.Logger.Warn("session access denied", "audit", true, "op", call.Target(), "user", call.User(),
			"session", sessionID, "plan", planID, "conn", call.ConnectionID(), "remote", call.Conn().RemoteAddr())
	}
	return engineError(err)
}
