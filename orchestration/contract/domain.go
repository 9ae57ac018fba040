package contract

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Session is a conversation between users and agents. LastActivity (the .NET
// alias of LastActivityAt) is written by MarshalJSON.
type Session struct {
	ID                  string             `json:"id"`
	Name                string             `json:"name"`
	Type                SessionType        `json:"type"`
	Status              SessionStatus      `json:"status"`
	CreatedAt           DateTime           `json:"createdAt"`
	LastActivityAt      DateTime           `json:"lastActivityAt"`
	ParticipantAgentIDs List[string]       `json:"participantAgentIds"`
	ParticipantAgents   List[AgentInfo]    `json:"participantAgents"`
	Messages            List[AgentMessage] `json:"messages"`
	Context             Map                `json:"context"`
	WorkingDirectory    string             `json:"workingDirectory"`
	ProjectID           string             `json:"projectId"`
}

// MarshalJSON writes the fields plus the lastActivity alias.
func (s Session) MarshalJSON() ([]byte, error) {
	type plain Session
	return json.Marshal(struct {
		plain
		LastActivity DateTime `json:"lastActivity"`
	}{plain(s), s.LastActivityAt})
}

// AgentMessage is one message in a session.
type AgentMessage struct {
	ID              string           `json:"id"`
	Content         string           `json:"content"`
	Role            MessageRole      `json:"role"`
	AgentID         string           `json:"agentId"`
	SessionID       string           `json:"sessionId"`
	Timestamp       DateTime         `json:"timestamp"`
	Attachments     List[Attachment] `json:"attachments"`
	Metadata        Map              `json:"metadata"`
	ParentMessageID string           `json:"parentMessageId"`
	SenderID        *string          `json:"senderId,omitempty"`
}

// NewAgentMessage returns a message with a fresh GUID id and timestamp now.
func NewAgentMessage(now time.Time) AgentMessage {
	return AgentMessage{ID: uuid.NewString(), Timestamp: DateTime(now)}
}

// Attachment is a file attached to a message; Content is base64 on the wire.
type Attachment struct {
	ID       string `json:"id"`
	FileName string `json:"fileName"`
	MimeType string `json:"mimeType"`
	Size     int64  `json:"size"`
	Content  Bytes  `json:"content"`
	URL      string `json:"url"`
}

// AgentResponse is one (possibly partial) answer of an agent. MessageID is
// the id of the answered message and is the same on every chunk; ID is per
// object. Role defaults to Assistant.
type AgentResponse struct {
	MessageID  string         `json:"messageId"`
	Content    string         `json:"content"`
	Type       ResponseType   `json:"type"`
	IsComplete bool           `json:"isComplete"`
	ToolCalls  List[ToolCall] `json:"toolCalls"`
	Metadata   Map            `json:"metadata"`
	Usage      TokenUsage     `json:"usage"`
	ID         string         `json:"id"`
	Role       MessageRole    `json:"role"`
	Timestamp  DateTime       `json:"timestamp"`
}

// NewAgentResponse returns a response with a fresh GUID id, role Assistant
// and timestamp now.
func NewAgentResponse(messageID string, now time.Time) AgentResponse {
	return AgentResponse{MessageID: messageID, ID: uuid.NewString(),
		Role: MessageRoleAssistant, Timestamp: DateTime(now)}
}

// UnmarshalJSON applies the role default (Assistant) for a missing field.
func (r *AgentResponse) UnmarshalJSON(data []byte) error {
	type plain AgentResponse
	p := plain{Role: MessageRoleAssistant}
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	*r = AgentResponse(p)
	return nil
}

// TokenUsage counts the tokens of an answer.
type TokenUsage struct {
	InputTokens   int     `json:"inputTokens"`
	OutputTokens  int     `json:"outputTokens"`
	TotalTokens   int     `json:"totalTokens"`
	EstimatedCost float64 `json:"estimatedCost"`
}

// ToolCall is a request by an agent to run a tool.
type ToolCall struct {
	ID         string   `json:"id"`
	ToolName   string   `json:"toolName"`
	Parameters Map      `json:"parameters"`
	AgentID    *string  `json:"agentId,omitempty"`
	SessionID  *string  `json:"sessionId,omitempty"`
	Timestamp  DateTime `json:"timestamp"`
}

// ToolExecutionResult is the outcome of a tool call.
type ToolExecutionResult struct {
	Success       bool     `json:"success"`
	Output        string   `json:"output"`
	Error         string   `json:"error"`
	ExecutionTime TimeSpan `json:"executionTime"`
	Metadata      Map      `json:"metadata"`
}

// AgentInfo describes an agent. Configuration holds custom settings; its
// secret-looking entries (API keys, tokens, passwords) are never written.
type AgentInfo struct {
	ID               string             `json:"id"`
	Name             string             `json:"name"`
	Type             AgentType          `json:"type"`
	Description      string             `json:"description"`
	Status           AgentStatus        `json:"status"`
	Capabilities     *AgentCapabilities `json:"capabilities,omitempty"`
	LastActive       DateTime           `json:"lastActive"`
	WorkingDirectory string             `json:"workingDirectory"`
	Configuration    Map                `json:"configuration"`
}

// MarshalJSON writes the fields with secret configuration entries removed,
// because the contract says an ApiKey must never be sent.
func (a AgentInfo) MarshalJSON() ([]byte, error) {
	type plain AgentInfo
	p := plain(a)
	for k := range a.Configuration {
		if IsSecretKey(k) {
			p.Configuration = redact(a.Configuration)
			break
		}
	}
	return json.Marshal(p)
}

func redact(m Map) Map {
	out := make(Map, len(m))
	for k, v := range m {
		if !IsSecretKey(k) {
			out[k] = v
		}
	}
	return out
}

// IsSecretKey reports whether a configuration key names a secret (API key,
// secret, password, access or refresh token, authorization), compared
// case-insensitively and ignoring '_' and '-'.
func IsSecretKey(k string) bool {
	k = strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(k))
	for _, s := range [...]string{"apikey", "secret", "password", "accesstoken", "refreshtoken", "authorization", "bearertoken"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// AgentCapabilities says what an agent can do. SupportsToolExecution (the
// .NET read-only alias of SupportsTools) is written by MarshalJSON;
// MaxConcurrentRequests defaults to 1.
type AgentCapabilities struct {
	SupportsStreaming      bool                 `json:"supportsStreaming"`
	SupportsTools          bool                 `json:"supportsTools"`
	SupportsFileOperations bool                 `json:"supportsFileOperations"`
	SupportsWebSearch      bool                 `json:"supportsWebSearch"`
	SupportedModels        List[string]         `json:"supportedModels"`
	AvailableTools         List[ToolDefinition] `json:"availableTools"`
	MaxTokens              int                  `json:"maxTokens"`
	MaxConcurrentRequests  int                  `json:"maxConcurrentRequests"`
}

// MarshalJSON writes the fields plus the supportsToolExecution alias.
func (c AgentCapabilities) MarshalJSON() ([]byte, error) {
	type plain AgentCapabilities
	return json.Marshal(struct {
		plain
		SupportsToolExecution bool `json:"supportsToolExecution"`
	}{plain(c), c.SupportsTools})
}

// UnmarshalJSON applies the maxConcurrentRequests default (1).
func (c *AgentCapabilities) UnmarshalJSON(data []byte) error {
	type plain AgentCapabilities
	p := plain{MaxConcurrentRequests: 1}
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	*c = AgentCapabilities(p)
	return nil
}

// ToolDefinition describes a tool an agent can call.
type ToolDefinition struct {
	Name             string       `json:"name"`
	Description      string       `json:"description"`
	Schema           ToolSchema   `json:"schema"`
	RequiresApproval bool         `json:"requiresApproval"`
	Categories       List[string] `json:"categories"`
	Metadata         Map          `json:"metadata"`
}

// ToolSchema is a tool's JSON-schema-like parameter description. Type
// defaults to "object" (also written when empty).
type ToolSchema struct {
	Type       string             `json:"type"`
	Properties Dict[ToolProperty] `json:"properties"`
	Required   List[string]       `json:"required"`
}

// MarshalJSON writes the schema, with type "object" when unset.
func (s ToolSchema) MarshalJSON() ([]byte, error) {
	type plain ToolSchema
	if s.Type == "" {
		s.Type = "object"
	}
	return json.Marshal(plain(s))
}

// ToolProperty describes one tool parameter.
type ToolProperty struct {
	Type        string  `json:"type"`
	Description string  `json:"description"`
	Default     any     `json:"default,omitempty"`
	Enum        []any   `json:"enum,omitempty"`
	Pattern     *string `json:"pattern,omitempty"`
}
