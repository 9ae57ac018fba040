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

// Router is how the engine reaches connections outside the session history:
// the streamed chunks of an agent's answer (never recorded: only the final
// answer is) and agent status updates. A Sessions value that also
// implements Router enables agent messages (SendAgentMessage,
// StreamAgentMessage); without it they answer PROCESSING_ERROR. The hub
// layer implements it over the node's Clients/Groups API.
//
// Ordering: the engine sends all callbacks of one answer from one
// goroutine, each call returning before the next is made; the
// implementation must deliver the callbacks of such a sequence to any one
// connection in call order, whichever of SendGroup, SendConnection and
// Sessions.Emit carried them (the hub node does: it publishes over one
// ordered pipeline and each node reads one ordered subscription).
type Router interface {
	// SendGroup sends a callback to every member of group, farm-wide,
	// except the connection exclude ("" = none). payload may be a
	// json.RawMessage holding the encoded argument.
	SendGroup(ctx context.Context, group, exclude, target string, payload any) error
	// SendConnection sends a callback to one connection wherever it is.
	SendConnection(ctx context.Context, connID, target string, payload any) error
	// Watchers lists the connections, farm-wide, that receive the answers
	// of agentID in sessionID without being members of the session's
	// group: the subscribers of AgentGroup(agentID) that may see the
	// session, and caller (when not "") if it is not in the session group.
	// Each connection appears once.
	Watchers(ctx context.Context, sessionID, agentID, caller string) ([]string, error)
}

// SessionGroup is the group of a session's members (shared by both hubs).
func SessionGroup(sessionID string) string { return "session-" + sessionID }

// AgentGroup is the group of an agent's subscribers (SubscribeToAgent).
func AgentGroup(agentID string) string { return "agent-" + agentID }

// SessionDirectories is optionally implemented by a Sessions value: a
// session's existence and its working directory (relative to the sandbox
// root, "" for the root itself) in one look-up. When it is, the engine uses
// it instead of Exists wherever a request needs its session to exist
// (CreatePlan, SendAgentMessage, StreamAgentMessage) and hands the
// directory to every agent call of the plan or message in
// AgentRequest.WorkingDirectory; without it that field stays "". The
// directory is read when the plan is created or the message accepted (a
// session's directory is fixed at its creation).
type SessionDirectories interface {
	WorkingDirectory(ctx context.Context, sessionID string) (dir string, exists bool, err error)
}

// SessionAuthorizer is optionally implemented by a Sessions value. When it
// is, every hub-facing engine method asks it whether the caller may use the
// session of the plan (or request) and answers FORBIDDEN if not.
type SessionAuthorizer interface {
	CanUse(ctx context.Context, sessionID string, caller Caller) (bool, error)
}

// AgentRequest is one call of an agent: one attempt of one plan step, or
// one attempt at answering a message of a session (a conversation turn,
// MessageID set).
type AgentRequest struct {
	AgentID   string
	SessionID string
	PlanID    string
	Strategy  contract.OrchestrationStrategy
	StepOrder int
	// Attempt counts from 1 for each step (or message); together with
	// PlanID and StepOrder (or MessageID) it seeds deterministic behaviour
	// (see Scripted).
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
	// WorkingDirectory is the session's working directory, relative to the
	// sandbox root (see SessionDirectories). Agents that touch files
	// (command agents, tools) must work in it and refuse it when it
	// escapes the root; the engine does not check it, as it does not know
	// the root.
	WorkingDirectory string

	// MessageID is set for a conversation turn: the id of the user message
	// being answered (the answer's messageId). Task then holds that
	// message's content, and PlanID and StepOrder are empty.
	MessageID string
	// Messages is, for a conversation turn, the recent conversation of the
	// session, oldest first, ending with the message being answered (the
	// only one that keeps its attachments). Agents are stateless between
	// calls: this is all the context they get (DESIGN decision 9).
	Messages []contract.AgentMessage
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
