package hubs

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// Bounds on the request DTOs beyond the node's message size and nesting
// depth. Ids are Redis key parts, group names and log fields; counts keep
// one request from fanning out into thousands of lookups. Texts the engine
// bounds itself (goals, message content) are left to it.
const (
	maxListedAgents = 64   // agentIds of a session, a plan or an orchestration message
	maxAttachments  = 16   // attachments of one agent message
	maxURLLength    = 2048 // an attachment's url
	maxParameters   = 64   // parameters of one tool call, constraints of one plan
)

// idProblem says what makes id unusable ("" when nothing): longer than
// maxIDLength, not UTF-8, or with control characters, which would forge
// lines of a text log. An empty id is not judged here: each method says
// which ids it requires.
func idProblem(id string) string {
	switch {
	case len(id) > maxIDLength:
		return fmt.Sprintf("is too long (at most %d bytes)", maxIDLength)
	case !utf8.ValidString(id):
		return "is not valid UTF-8"
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return "contains control characters"
		}
	}
	return ""
}

// textProblem is idProblem for a free text of at most limit bytes.
func textProblem(s string, limit int) string {
	switch {
	case len(s) > limit:
		return fmt.Sprintf("is too long (at most %d bytes)", limit)
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	}
	return ""
}

// invalid is a VALIDATION_FAILED refusal in the engine's error type, so a
// method reports it exactly as it reports the engine's own validation
// errors (a Completion error "VALIDATION_FAILED: …", and ReceiveError
// where the method sends one).
func invalid(format string, args ...any) error {
	return &orchestration.Error{Code: contract.CodeValidationFailed, Message: fmt.Sprintf(format, args...)}
}

// checkID refuses a malformed id; name is its field name.
func checkID(name, id string) error {
	if p := idProblem(id); p != "" {
		return invalid("%s %s", name, p)
	}
	return nil
}

// checkIDs refuses a list of more than maxListedAgents ids or with a
// malformed one.
func checkIDs(name string, ids []string) error {
	if len(ids) > maxListedAgents {
		return invalid("%s has more than %d entries", name, maxListedAgents)
	}
	for _, id := range ids {
		if err := checkID(name+" entry", id); err != nil {
			return err
		}
	}
	return nil
}

// checkKeys refuses a map of more than maxParameters entries or with a key
// that is not a plausible name.
func checkKeys(name string, m contract.Map) error {
	if len(m) > maxParameters {
		return invalid("%s has more than %d entries", name, maxParameters)
	}
	for k := range m {
		if p := idProblem(k); p != "" {
			return invalid("a key of %s %s", name, p)
		}
	}
	return nil
}

// validateCreateSession checks a CreateSession request.
func validateCreateSession(req contract.CreateSessionRequest) error {
	if p := textProblem(req.Name, maxNameLength); p != "" {
		return invalid("name %s", p)
	}
	if p := textProblem(req.WorkingDirectory, 1024); p != "" {
		return invalid("workingDirectory %s", p)
	}
	return checkIDs("agentIds", req.AgentIDs)
}

// validatePlanRequest checks a CreateOrchestrationPlan request.
func validatePlanRequest(req contract.CreatePlanRequest) error {
	if err := checkID("sessionId", req.SessionID); err != nil {
		return err
	}
	if err := checkIDs("availableAgentIds", req.AvailableAgentIDs); err != nil {
		return err
	}
	return checkKeys("constraints", req.Constraints)
}

// validateOrchestrationMessage checks a SendOrchestrationMessage request.
func validateOrchestrationMessage(req contract.OrchestrationMessageRequest) error {
	if err := checkID("sessionId", req.SessionID); err != nil {
		return err
	}
	return checkIDs("agentIds", req.AgentIDs)
}

// validateAgentMessage checks a SendAgentMessage or StreamAgentMessage
// request.
func validateAgentMessage(req contract.AgentMessageRequest) error {
	if err := checkID("agentId", req.AgentID); err != nil {
		return err
	}
	if err := checkID("sessionId", req.SessionID); err != nil {
		return err
	}
	if req.CommandID != nil {
		if err := checkID("commandId", *req.CommandID); err != nil {
			return err
		}
	}
	if len(req.Attachments) > maxAttachments {
		return invalid("attachments has more than %d entries", maxAttachments)
	}
	for _, a := range req.Attachments {
		for _, f := range []struct {
			name, value string
			limit       int
		}{{"attachment id", a.ID, maxIDLength}, {"attachment fileName", a.FileName, maxNameLength},
			{"attachment mimeType", a.MimeType, maxNameLength}, {"attachment url", a.URL, maxURLLength}} {
			if p := textProblem(f.value, f.limit); p != "" {
				return invalid("%s %s", f.name, p)
			}
		}
	}
	return nil
}

// validateToolRequest checks the parts of an ExecuteTool request the
// method does not check itself.
func validateToolRequest(req contract.ToolExecutionRequest) error {
	return checkKeys("parameters", req.Parameters)
}

// validatePlanID checks the planId argument of the plan methods.
func validatePlanID(planID string) error { return checkID("planId", planID) }
