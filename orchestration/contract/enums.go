package contract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// parseEnum decodes an enum given as a JSON integer or as a case-insensitive
// name. count is the number of named values; name gives the name of each.
// Integers outside the named range are accepted, as System.Text.Json does.
func parseEnum[E ~int](data []byte, typ string, count int, name func(E) string) (E, error) {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return 0, fmt.Errorf("contract: %s: %w", typ, err)
		}
		for i := 0; i < count; i++ {
			if strings.EqualFold(s, name(E(i))) {
				return E(i), nil
			}
		}
		return 0, fmt.Errorf("contract: %s: unknown name %q", typ, s)
	}
	var n int32
	if err := json.Unmarshal(data, &n); err != nil {
		return 0, fmt.Errorf("contract: %s must be an integer or a name: %w", typ, err)
	}
	return E(n), nil
}

// enumString names v, or gives its number when it has no name.
func enumString[E ~int](v E, count int, names string) string {
	if v >= 0 && int(v) < count {
		return strings.Fields(names)[v]
	}
	return fmt.Sprintf("%d", int(v))
}

// isNull reports whether data is the JSON literal null.
func isNull(data []byte) bool { return string(bytes.TrimSpace(data)) == "null" }

// AgentStatus is an agent's lifecycle state.
type AgentStatus int

// AgentStatus values.
const (
	AgentStatusUninitialized AgentStatus = iota
	AgentStatusInitializing
	AgentStatusReady
	AgentStatusBusy
	AgentStatusProcessing
	AgentStatusError
	AgentStatusShutdown
	AgentStatusUnknown
	agentStatusCount = iota
)

// String returns the .NET name of the value.
func (v AgentStatus) String() string {
	return enumString(v, agentStatusCount, "Uninitialized Initializing Ready Busy Processing Error Shutdown Unknown")
}

// UnmarshalJSON accepts an integer or a case-insensitive name; null is ignored.
func (v *AgentStatus) UnmarshalJSON(data []byte) error {
	if isNull(data) {
		return nil
	}
	e, err := parseEnum(data, "AgentStatus", agentStatusCount, AgentStatus.String)
	if err == nil {
		*v = e
	}
	return err
}

// AgentType is the kind of an agent (only Claude and Saturn can run in the
// original).
type AgentType int

// AgentType values.
const (
	AgentTypeClaude AgentType = iota
	AgentTypeSaturn
	AgentTypeGPT4
	AgentTypeCustom
	AgentTypeOrchestrator
	agentTypeCount = iota
)

// String returns the .NET name of the value.
func (v AgentType) String() string {
	return enumString(v, agentTypeCount, "Claude Saturn GPT4 Custom Orchestrator")
}

// UnmarshalJSON accepts an integer or a case-insensitive name; null is ignored.
func (v *AgentType) UnmarshalJSON(data []byte) error {
	if isNull(data) {
		return nil
	}
	e, err := parseEnum(data, "AgentType", agentTypeCount, AgentType.String)
	if err == nil {
		*v = e
	}
	return err
}

// MessageRole is the author role of a message.
type MessageRole int

// MessageRole values.
const (
	MessageRoleUser MessageRole = iota
	MessageRoleAssistant
	MessageRoleSystem
	MessageRoleTool
	messageRoleCount = iota
)

// String returns the .NET name of the value.
func (v MessageRole) String() string {
	return enumString(v, messageRoleCount, "User Assistant System Tool")
}

// UnmarshalJSON accepts an integer or a case-insensitive name; null is ignored.
func (v *MessageRole) UnmarshalJSON(data []byte) error {
	if isNull(data) {
		return nil
	}
	e, err := parseEnum(data, "MessageRole", messageRoleCount, MessageRole.String)
	if err == nil {
		*v = e
	}
	return err
}

// ResponseType is the kind of an agent response chunk.
type ResponseType int

// ResponseType values.
const (
	ResponseTypeText ResponseType = iota
	ResponseTypeToolCall
	ResponseTypeError
	ResponseTypeStatus
	ResponseTypeThinking
	ResponseTypeSuccess
	responseTypeCount = iota
)

// String returns the .NET name of the value.
func (v ResponseType) String() string {
	return enumString(v, responseTypeCount, "Text ToolCall Error Status Thinking Success")
}

// UnmarshalJSON accepts an integer or a case-insensitive name; null is ignored.
func (v *ResponseType) UnmarshalJSON(data []byte) error {
	if isNull(data) {
		return nil
	}
	e, err := parseEnum(data, "ResponseType", responseTypeCount, ResponseType.String)
	if err == nil {
		*v = e
	}
	return err
}

// SessionType is the kind of a session.
type SessionType int

// SessionType values.
const (
	SessionTypeSingleAgent SessionType = iota
	SessionTypeMultiAgent
	SessionTypeOrchestrated
	sessionTypeCount = iota
)

// String returns the .NET name of the value.
func (v SessionType) String() string {
	return enumString(v, sessionTypeCount, "SingleAgent MultiAgent Orchestrated")
}

// UnmarshalJSON accepts an integer or a case-insensitive name; null is ignored.
func (v *SessionType) UnmarshalJSON(data []byte) error {
	if isNull(data) {
		return nil
	}
	e, err := parseEnum(data, "SessionType", sessionTypeCount, SessionType.String)
	if err == nil {
		*v = e
	}
	return err
}

// SessionStatus is a session's lifecycle state.
type SessionStatus int

// SessionStatus values.
const (
	SessionStatusActive SessionStatus = iota
	SessionStatusPaused
	SessionStatusCompleted
	SessionStatusFailed
	SessionStatusCancelled
	sessionStatusCount = iota
)

// String returns the .NET name of the value.
func (v SessionStatus) String() string {
	return enumString(v, sessionStatusCount, "Active Paused Completed Failed Cancelled")
}

// UnmarshalJSON accepts an integer or a case-insensitive name; null is ignored.
func (v *SessionStatus) UnmarshalJSON(data []byte) error {
	if isNull(data) {
		return nil
	}
	e, err := parseEnum(data, "SessionStatus", sessionStatusCount, SessionStatus.String)
	if err == nil {
		*v = e
	}
	return err
}

// OrchestrationStrategy says how a plan's steps are laid out and run.
type OrchestrationStrategy int

// OrchestrationStrategy values.
const (
	StrategySequential OrchestrationStrategy = iota
	StrategyParallel
	StrategyAdaptive
	StrategyRoundRobin
	strategyCount = iota
)

// String returns the .NET name of the value.
func (v OrchestrationStrategy) String() string {
	return enumString(v, strategyCount, "Sequential Parallel Adaptive RoundRobin")
}

// Valid reports whether v is one of the four named strategies.
func (v OrchestrationStrategy) Valid() bool { return v >= 0 && v < strategyCount }

// UnmarshalJSON accepts an integer or a case-insensitive name; null is ignored.
func (v *OrchestrationStrategy) UnmarshalJSON(data []byte) error {
	if isNull(data) {
		return nil
	}
	e, err := parseEnum(data, "OrchestrationStrategy", strategyCount, OrchestrationStrategy.String)
	if err == nil {
		*v = e
	}
	return err
}
