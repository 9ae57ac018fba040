package contract

// Callback targets (CONTRACT.md §3, §4 and DESIGN decisions 3 and 6).
const (
	TargetConnected                = "Connected"
	TargetSessionCreated           = "SessionCreated"
	TargetSessionJoined            = "SessionJoined"
	TargetOrchestrationPlanCreated = "OrchestrationPlanCreated"
	TargetOrchestrationProgress    = "OrchestrationProgress"
	TargetOrchestrationCompleted   = "OrchestrationCompleted"
	TargetStepCompleted            = "StepCompleted"
	TargetReceiveError             = "ReceiveError"
	TargetReceiveAgentResponse     = "ReceiveAgentResponse"
	TargetReceiveStreamingUpdate   = "ReceiveStreamingUpdate"
	TargetAgentStatusUpdate        = "AgentStatusUpdate"
	TargetToolExecutionStarted     = "ToolExecutionStarted"
	TargetToolExecutionUpdate      = "ToolExecutionUpdate"
	TargetToolExecutionCompleted   = "ToolExecutionCompleted"
	TargetToolApprovalRequired     = "ToolApprovalRequired"
	TargetAgentMessage             = "AgentMessage"
	// TargetOrchestrationPlanUpdated (a farm addition) carries the plan after
	// Adaptive's analysis step replaced its template steps.
	TargetOrchestrationPlanUpdated = "OrchestrationPlanUpdated"
	// TargetToolApprovalResolved (a farm addition) tells the session that
	// the approval a ToolApprovalRequired asked for was decided (approved,
	// denied, timed out or cancelled): members clear its prompt.
	TargetToolApprovalResolved = "ToolApprovalResolved"
)
