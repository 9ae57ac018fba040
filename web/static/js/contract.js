// Names and enums of the OrchestratorChat contract that the console uses.

export const SessionType = ['Single agent', 'Multi-agent', 'Orchestrated'];
export const SessionStatus = ['Active', 'Paused', 'Completed', 'Failed', 'Cancelled'];
export const MessageRole = { User: 0, Assistant: 1, System: 2, Tool: 3 };
export const ResponseType = { Text: 0, ToolCall: 1, Error: 2, Status: 3, Thinking: 4, Success: 5 };
export const AgentStatus = ['Uninitialized', 'Initializing', 'Ready', 'Busy', 'Processing', 'Error', 'Shutdown', 'Unknown'];
export const Strategy = ['Sequential', 'Parallel', 'Adaptive', 'RoundRobin'];

/** Agent statuses that mean "working on something". */
export const BusyStatuses = new Set([3, 4]);

/** Tools of the farm (canonical names), for the tool form's suggestions. */
export const ToolNames = ['read_file', 'write_file', 'list_files', 'grep', 'bash'];

/** Callbacks that belong to the agent hub; the rest come from the orchestrator hub. */
export const AgentTargets = new Set([
  'ReceiveStreamingUpdate',
  'ReceiveAgentResponse',
  'AgentStatusUpdate',
  'ToolExecutionStarted',
  'ToolExecutionUpdate',
  'ToolExecutionCompleted',
  'ToolApprovalRequired',
  'ToolApprovalResolved',
  'AgentMessage',
]);

/** Every callback the console handles. */
export const Targets = [
  'Connected',
  'SessionCreated',
  'SessionJoined',
  'ReceiveSessionMessage',
  'ReceiveError',
  'OrchestrationPlanCreated',
  'OrchestrationPlanUpdated',
  'OrchestrationProgress',
  'StepCompleted',
  'OrchestrationCompleted',
  ...AgentTargets,
];
