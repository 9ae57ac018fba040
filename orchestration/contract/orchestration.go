package contract

import (
	"encoding/json"
	"time"
)

// DefaultPlanTimeout is the default OrchestrationRequest.Timeout.
const DefaultPlanTimeout = TimeSpan(30 * time.Minute)

// OrchestrationRequest is what a plan is built from; it is kept in the
// plan's sharedContext["originalRequest"]. TimeoutMinutes (the .NET alias of
// Timeout in minutes) is written by MarshalJSON and read only when timeout is
// missing.
type OrchestrationRequest struct {
	Goal              string                `json:"goal"`
	AvailableAgentIDs List[string]          `json:"availableAgentIds"`
	Strategy          OrchestrationStrategy `json:"strategy"`
	Constraints       Map                   `json:"constraints"`
	MaxSteps          int                   `json:"maxSteps"`
	Timeout           TimeSpan              `json:"timeout"`
}

// MarshalJSON writes the fields plus the timeoutMinutes alias.
func (r OrchestrationRequest) MarshalJSON() ([]byte, error) {
	type plain OrchestrationRequest
	return json.Marshal(struct {
		plain
		TimeoutMinutes float64 `json:"timeoutMinutes"`
	}{plain(r), time.Duration(r.Timeout).Minutes()})
}

// UnmarshalJSON applies the defaults (maxSteps 10, timeout 30 min) and takes
// timeoutMinutes when timeout is missing.
func (r *OrchestrationRequest) UnmarshalJSON(data []byte) error {
	type plain OrchestrationRequest
	var p struct {
		plain
		TimeoutMinutes *float64 `json:"timeoutMinutes"`
	}
	p.MaxSteps = DefaultMaxSteps
	p.Timeout = -1
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	if p.Timeout == -1 {
		p.Timeout = DefaultPlanTimeout
		if p.TimeoutMinutes != nil {
			p.Timeout = TimeSpan(*p.TimeoutMinutes * float64(time.Minute))
		}
	}
	*r = OrchestrationRequest(p.plain)
	return nil
}

// OrchestrationPlan is a built plan: its steps and how they are run.
type OrchestrationPlan struct {
	ID             string                  `json:"id"`
	Steps          List[OrchestrationStep] `json:"steps"`
	SharedContext  Map                     `json:"sharedContext"`
	RequiredAgents List[string]            `json:"requiredAgents"`
	Goal           string                  `json:"goal"`
	Strategy       OrchestrationStrategy   `json:"strategy"`
	Name           string                  `json:"name"`
}

// OrchestrationStep is one step of a plan. Order counts from 1; DependsOn
// holds the orders of the steps it waits for, as strings ("1").
type OrchestrationStep struct {
	Order            int          `json:"order"`
	Name             string       `json:"name"`
	AgentID          string       `json:"agentId"`
	Task             string       `json:"task"`
	DependsOn        List[string] `json:"dependsOn"`
	Input            Map          `json:"input"`
	Timeout          TimeSpan     `json:"timeout"`
	CanRunInParallel bool         `json:"canRunInParallel"`
	Description      string       `json:"description"`
	AssignedAgentID  string       `json:"assignedAgentId"`
	ExpectedDuration TimeSpan     `json:"expectedDuration"`
}

// OrchestrationProgress is the payload of OrchestrationProgress. PlanID is
// the farm's addition, so a client running several plans can tell them
// apart.
type OrchestrationProgress struct {
	CurrentStep     int      `json:"currentStep"`
	TotalSteps      int      `json:"totalSteps"`
	CurrentAgent    string   `json:"currentAgent"`
	CurrentTask     string   `json:"currentTask"`
	PercentComplete float64  `json:"percentComplete"`
	ElapsedTime     TimeSpan `json:"elapsedTime"`
	PlanID          string   `json:"planId"`
}

// OrchestrationResult is the payload of OrchestrationCompleted. PlanID is the
// farm's addition.
type OrchestrationResult struct {
	Success       bool             `json:"success"`
	StepResults   List[StepResult] `json:"stepResults"`
	FinalOutput   string           `json:"finalOutput"`
	TotalDuration TimeSpan         `json:"totalDuration"`
	FinalContext  Map              `json:"finalContext"`
	PlanID        string           `json:"planId"`
}

// StepResult is the outcome of one step. Duration (the .NET alias of
// ExecutionTime) is written by MarshalJSON.
type StepResult struct {
	StepOrder     int      `json:"stepOrder"`
	StepName      string   `json:"stepName"`
	AgentID       string   `json:"agentId"`
	Success       bool     `json:"success"`
	Output        string   `json:"output"`
	Error         string   `json:"error"`
	ExecutionTime TimeSpan `json:"executionTime"`
	StartTime     DateTime `json:"startTime"`
	OutputData    Map      `json:"outputData"`
}

// MarshalJSON writes the fields plus the duration alias.
func (r StepResult) MarshalJSON() ([]byte, error) {
	type plain StepResult
	return json.Marshal(struct {
		plain
		Duration TimeSpan `json:"duration"`
	}{plain(r), r.ExecutionTime})
}

// StepCompletedEvent is the payload of StepCompleted (DESIGN decision 6): the
// OrchestrationStep fields plus the step's result. PlanID is the farm's
// addition.
type StepCompletedEvent struct {
	OrchestrationStep
	Result StepResult `json:"result"`
	PlanID string     `json:"planId"`
}

// HistoryEvent is one entry of a session's event history: the callback
// target and its payload as sent, under its history event id.
type HistoryEvent struct {
	EventID   string          `json:"eventId"`
	Target    string          `json:"target"`
	Payload   json.RawMessage `json:"payload"`
	Timestamp DateTime        `json:"timestamp"`
}

// Plan statuses of PlanState.Status (a farm addition, so strings).
const (
	PlanStatusCreated   = "created"
	PlanStatusRunning   = "running"
	PlanStatusCompleted = "completed"
	PlanStatusFailed    = "failed"
	PlanStatusCancelled = "cancelled"
	PlanStatusTimedOut  = "timedOut"
)

// Step states of StepState.State.
const (
	StepStatePending   = "pending"
	StepStateQueued    = "queued"
	StepStateRunning   = "running"
	StepStateRetrying  = "retrying"
	StepStateDone      = "done"
	StepStateFailed    = "failed"
	StepStateSkipped   = "skipped"
	StepStateCancelled = "cancelled"
)

// PlanState is the result of the farm's GetPlan: a stored plan with its
// live execution state. It is a farm addition (no .NET counterpart), so its
// status fields are strings (the PlanStatus* and StepState* constants).
type PlanState struct {
	Plan            OrchestrationPlan    `json:"plan"`
	SessionID       string               `json:"sessionId"`
	Status          string               `json:"status"`
	Reason          string               `json:"reason"`
	CreatedAt       DateTime             `json:"createdAt"`
	StartedAt       DateTime             `json:"startedAt"`
	FinishedAt      DateTime             `json:"finishedAt"`
	PercentComplete float64              `json:"percentComplete"`
	Steps           List[StepState]      `json:"steps"`
	Result          *OrchestrationResult `json:"result,omitempty"`
}

// StepState is one step's live state within a PlanState.
type StepState struct {
	Order    int         `json:"order"`
	AgentID  string      `json:"agentId"`
	State    string      `json:"state"`
	Attempts int         `json:"attempts"`
	Result   *StepResult `json:"result,omitempty"`
}
