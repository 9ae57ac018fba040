package contract

import "encoding/json"

// DefaultMaxSteps is the default of CreatePlanRequest.MaxSteps and
// OrchestrationRequest.MaxSteps.
const DefaultMaxSteps = 10

// CreateSessionRequest is the argument of OrchestratorHub.CreateSession.
type CreateSessionRequest struct {
	Name             string       `json:"name"`
	Type             SessionType  `json:"type"`
	AgentIDs         List[string] `json:"agentIds"`
	WorkingDirectory string       `json:"workingDirectory"`
}

// AgentMessageRequest is the argument of AgentHub.SendAgentMessage.
type AgentMessageRequest struct {
	AgentID     string           `json:"agentId"`
	SessionID   string           `json:"sessionId"`
	Content     string           `json:"content"`
	Attachments List[Attachment] `json:"attachments"`
	CommandID   *string          `json:"commandId,omitempty"`
}

// OrchestrationMessageRequest is the argument of
// OrchestratorHub.SendOrchestrationMessage; Message is the goal.
type OrchestrationMessageRequest struct {
	SessionID string                `json:"sessionId"`
	Message   string                `json:"message"`
	AgentIDs  List[string]          `json:"agentIds"`
	Strategy  OrchestrationStrategy `json:"strategy"`
}

// ToolExecutionRequest is the argument of AgentHub.ExecuteTool.
type ToolExecutionRequest struct {
	AgentID    string `json:"agentId"`
	SessionID  string `json:"sessionId"`
	ToolName   string `json:"toolName"`
	Parameters Map    `json:"parameters"`
}

// CreatePlanRequest is the argument of OrchestratorHub.CreateOrchestrationPlan.
// MaxSteps defaults to [DefaultMaxSteps] when missing on input (use
// [NewCreatePlanRequest] in Go code for the same default).
type CreatePlanRequest struct {
	SessionID         string                `json:"sessionId"`
	Goal              string                `json:"goal"`
	Strategy          OrchestrationStrategy `json:"strategy"`
	AvailableAgentIDs List[string]          `json:"availableAgentIds"`
	MaxSteps          int                   `json:"maxSteps"`
	Constraints       Map                   `json:"constraints"`
}

// NewCreatePlanRequest returns a request with the contract's defaults.
func NewCreatePlanRequest(sessionID, goal string, strategy OrchestrationStrategy, agentIDs []string) CreatePlanRequest {
	return CreatePlanRequest{SessionID: sessionID, Goal: goal, Strategy: strategy,
		AvailableAgentIDs: agentIDs, MaxSteps: DefaultMaxSteps, Constraints: Map{}}
}

// UnmarshalJSON applies the maxSteps default for a missing field.
func (r *CreatePlanRequest) UnmarshalJSON(data []byte) error {
	type plain CreatePlanRequest
	p := plain{MaxSteps: DefaultMaxSteps}
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	*r = CreatePlanRequest(p)
	return nil
}

// ConnectionInfo is the payload of the Connected callback.
type ConnectionInfo struct {
	ConnectionID string   `json:"connectionId"`
	ConnectedAt  DateTime `json:"connectedAt"`
}

// SessionCreatedResponse is the result of OrchestratorHub.CreateSession.
type SessionCreatedResponse struct {
	Success   bool     `json:"success"`
	SessionID string   `json:"sessionId"`
	Session   *Session `json:"session,omitempty"`
	Error     *string  `json:"error,omitempty"`
}

// AgentResponseDto is the payload of ReceiveAgentResponse and
// ReceiveStreamingUpdate.
type AgentResponseDto struct {
	AgentID   string        `json:"agentId"`
	SessionID string        `json:"sessionId"`
	Response  AgentResponse `json:"response"`
	Timestamp DateTime      `json:"timestamp"`
}

// AgentStatusDto is the payload of AgentStatusUpdate.
type AgentStatusDto struct {
	AgentID      string             `json:"agentId"`
	Status       AgentStatus        `json:"status"`
	Capabilities *AgentCapabilities `json:"capabilities,omitempty"`
	Timestamp    DateTime           `json:"timestamp"`
}

// Error codes carried in ErrorResponse.Code (DESIGN decision 2) and by the
// engine's errors.
const (
	CodeAgentNotFound    = "AGENT_NOT_FOUND"
	CodeSessionNotFound  = "SESSION_NOT_FOUND"
	CodeForbidden        = "FORBIDDEN"
	CodeValidationFailed = "VALIDATION_FAILED"
	CodeRateLimited      = "RATE_LIMITED"
	CodeProcessingError  = "PROCESSING_ERROR"
	CodeTimeout          = "TIMEOUT"
	CodePlanNotFound     = "PLAN_NOT_FOUND"
	CodeConflict         = "CONFLICT"
)

// ErrorResponse is the payload of ReceiveError. Code is the farm's addition
// (one of the Code* constants).
type ErrorResponse struct {
	Error     string   `json:"error"`
	AgentID   *string  `json:"agentId,omitempty"`
	SessionID *string  `json:"sessionId,omitempty"`
	Timestamp DateTime `json:"timestamp"`
	Code      string   `json:"code"`
}

// ToolExecutionResponse is the result of AgentHub.ExecuteTool.
type ToolExecutionResponse struct {
	Success       bool     `json:"success"`
	Output        *string  `json:"output,omitempty"`
	Error         *string  `json:"error,omitempty"`
	ExecutionTime TimeSpan `json:"executionTime"`
}

// ToolExecutionUpdate is the payload of ToolExecutionStarted and
// ToolExecutionUpdate; Status is free text.
type ToolExecutionUpdate struct {
	ToolName string  `json:"toolName"`
	Status   string  `json:"status"`
	Progress float64 `json:"progress"`
	Message  string  `json:"message"`
	AgentID  string  `json:"agentId"`
}

// ToolApprovalRequest is the payload of ToolApprovalRequired; ID is the
// approval id answered by ApproveTool.
type ToolApprovalRequest struct {
	ID          string `json:"id"`
	ToolName    string `json:"toolName"`
	Parameters  Map    `json:"parameters"`
	AgentID     string `json:"agentId"`
	SessionID   string `json:"sessionId"`
	IsDangerous bool   `json:"isDangerous"`
}

// ToolApprovalResolution is the payload of ToolApprovalResolved (a farm
// addition): the approval ToolApprovalRequired asked for under the same id
// is over. Outcome is approved, denied (by a member), timed_out (nobody
// decided in time), cancelled (the waiting call ended: its caller left)
// or policy_denied (the farm could not wait for a decision); Approved is
// true only for approved. DecidedBy is the deciding user, or "timeout",
// "cancelled" or "policy".
type ToolApprovalResolution struct {
	ID        string   `json:"id"`
	ToolName  string   `json:"toolName"`
	AgentID   string   `json:"agentId"`
	SessionID string   `json:"sessionId"`
	Approved  bool     `json:"approved"`
	Outcome   string   `json:"outcome"`
	Reason    string   `json:"reason"`
	DecidedBy string   `json:"decidedBy"`
	Timestamp DateTime `json:"timestamp"`
}
