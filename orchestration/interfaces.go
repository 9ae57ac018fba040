package orchestration

import (
	"context"
	"errors"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// Caller identifies who invoked a hub method.
type Caller struct {
	ConnectionID string
	User         string
}

// Sessions is what the engine needs from the session store (implemented
// elsewhere).
//
// The engine calls Emit for every plan event: OrchestrationPlanCreated,
// OrchestrationProgress, StepCompleted, OrchestrationCompleted and
// ReceiveError, with the payload types of package contract. Emit may be
// called concurrently, from any worker goroutine of any node. The engine
// retries a failing Emit a few times and then logs and drops the event (the
// plan state in Redis stays authoritative and GetPlan reads it).
type Sessions interface {
	// Exists reports whether the session exists.
	Exists(ctx context.Context, sessionID string) (bool, error)
	// Emit appends a session event (target + payload) to the session's
	// history and sends it, carrying its history eventId as an added
	// "eventId" field, to the session group and, when the caller connection
	// is not a member, to the caller once.
	Emit(ctx context.Context, sessionID string, caller Caller, target string, payload any) error
}

// SessionAuthorizer is optionally implemented by a Sessions value. When it
// is, every hub-facing engine method asks it whether the caller may use the
// session of the plan (or request) and answers FORBIDDEN if not.
type SessionAuthorizer interface {
	CanUse(ctx context.Context, sessionID string, caller Caller) (bool, error)
}

// AgentRequest is one call of an agent for one attempt of one plan step.
type AgentRequest struct {
	AgentID   string
	SessionID string
	PlanID    string
	Strategy  contract.OrchestrationStrategy
	StepOrder int
	// Attempt counts from 1 for each step; together with PlanID and
	// StepOrder it seeds deterministic behaviour (see Scripted).
	Attempt int
	Task    string
	Goal    string
	// PreviousOutputs holds the outputs of the steps this step depends on,
	// keyed by their order as a string ("1").
	PreviousOutputs map[string]string
	// Input is the step's input map with "goal" and "previousOutputs" set.
	Input contract.Map
	// AvailableAgents lists the plan's agent ids (Adaptive's analysis step
	// plans with them).
	AvailableAgents []string
}

// AgentResult is an agent's answer to a step.
type AgentResult struct {
	// Output is the step's text output; it feeds the dependants.
	Output string
	// OutputData is merged into the step result's outputData.
	OutputData contract.Map
}

// Agent runs plan steps. Implementations must be safe for concurrent use,
// must return promptly when ctx is done (cancellation, timeouts and
// shutdown cancel it) and may call emit with chunks of their output as it
// is produced (emit is not safe to call after Run returns).
type Agent interface {
	Run(ctx context.Context, req AgentRequest, emit func(chunk string)) (AgentResult, error)
}

// AgentCatalog resolves agent ids. It must be safe for concurrent use.
type AgentCatalog interface {
	// Lookup returns the agent with the given id and its description.
	Lookup(id string) (Agent, contract.AgentInfo, bool)
	// List describes every agent.
	List() []contract.AgentInfo
}

// permanentError marks an agent error that retrying cannot fix.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent wraps err so the engine fails the step at once instead of
// retrying it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}
