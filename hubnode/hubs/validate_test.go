package hubs

import (
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// TestFuzzCoversEveryDocumentedMethod: the methods FuzzHubArguments binds
// are exactly the hub methods the README documents (plus the development
// diagnostic DebugClose), so a new method cannot escape the fuzzer.
func TestFuzzCoversEveryDocumentedMethod(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Hub methods")
	if !ok {
		t.Fatal("README.md has no ## Hub methods section")
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Z][A-Za-z]*)\\(|` / `([A-Z][A-Za-z]*)\\(").FindAllStringSubmatch(section, -1) {
		documented[m[1]+m[2]] = true
	}
	fuzzed := map[string]bool{}
	for _, m := range everyMethod(t) {
		fuzzed[m.name] = true
	}
	for name := range documented {
		if !fuzzed[name] {
			t.Errorf("README documents %s, which the fuzzer does not bind", name)
		}
	}
	for name := range fuzzed {
		if !documented[name] && name != "DebugClose" {
			t.Errorf("hub method %s is fuzzed but not documented in the README", name)
		}
	}
	if len(documented) < 20 {
		t.Fatalf("found only %d documented methods: %v", len(documented), documented)
	}
}

// TestRequestValidation: every validator accepts an ordinary request and
// refuses oversized or malformed ids, lists, keys and texts with
// VALIDATION_FAILED.
func TestRequestValidation(t *testing.T) {
	long := strings.Repeat("x", maxIDLength+1)
	many := make([]string, maxListedAgents+1)
	for i := range many {
		many[i] = "a"
	}
	bigMap := contract.Map{}
	for i := range maxParameters + 1 {
		bigMap[strings.Repeat("k", i+1)] = i
	}
	cmd := "c\u0007"
	cases := []struct {
		name string
		err  error
		ok   bool
	}{
		{"plan ok", validatePlanRequest(contract.CreatePlanRequest{SessionID: "s1", AvailableAgentIDs: []string{"a", ""},
			Constraints: contract.Map{"timeout": 3}}), true},
		{"plan long session", validatePlanRequest(contract.CreatePlanRequest{SessionID: long}), false},
		{"plan many agents", validatePlanRequest(contract.CreatePlanRequest{SessionID: "s", AvailableAgentIDs: many}), false},
		{"plan long agent", validatePlanRequest(contract.CreatePlanRequest{SessionID: "s", AvailableAgentIDs: []string{long}}), false},
		{"plan many constraints", validatePlanRequest(contract.CreatePlanRequest{SessionID: "s", Constraints: bigMap}), false},
		{"orchestration ok", validateOrchestrationMessage(contract.OrchestrationMessageRequest{SessionID: "s", AgentIDs: []string{"a"}}), true},
		{"orchestration control chars", validateOrchestrationMessage(contract.OrchestrationMessageRequest{SessionID: "s\nINFO forged"}), false},
		{"agent message ok", validateAgentMessage(contract.AgentMessageRequest{AgentID: "a", SessionID: "s",
			Attachments: []contract.Attachment{{FileName: "f.txt", MimeType: "text/plain", Content: []byte("hi")}}}), true},
		{"agent message invalid UTF-8", validateAgentMessage(contract.AgentMessageRequest{AgentID: "a\xff", SessionID: "s"}), false},
		{"agent message command id", validateAgentMessage(contract.AgentMessageRequest{AgentID: "a", SessionID: "s", CommandID: &cmd}), false},
		{"agent message attachments", validateAgentMessage(contract.AgentMessageRequest{AgentID: "a", SessionID: "s",
			Attachments: make([]contract.Attachment, maxAttachments+1)}), false},
		{"agent message attachment url", validateAgentMessage(contract.AgentMessageRequest{AgentID: "a", SessionID: "s",
			Attachments: []contract.Attachment{{URL: strings.Repeat("u", maxURLLength+1)}}}), false},
		{"tool ok", validateToolRequest(contract.ToolExecutionRequest{Parameters: contract.Map{"file_path": "a"}}), true},
		{"tool many parameters", validateToolRequest(contract.ToolExecutionRequest{Parameters: bigMap}), false},
		{"tool long key", validateToolRequest(contract.ToolExecutionRequest{Parameters: contract.Map{long: 1}}), false},
		{"session ok", validateCreateSession(contract.CreateSessionRequest{Name: "n", AgentIDs: []string{"a"}, WorkingDirectory: "p/q"}), true},
		{"session long name", validateCreateSession(contract.CreateSessionRequest{Name: strings.Repeat("n", maxNameLength+1)}), false},
		{"session long agent", validateCreateSession(contract.CreateSessionRequest{AgentIDs: []string{long}}), false},
		{"plan id ok", validatePlanID("p-1"), true},
		{"plan id long", validatePlanID(long), false},
	}
	for _, c := range cases {
		switch {
		case c.ok && c.err != nil:
			t.Errorf("%s: refused: %v", c.name, c.err)
		case !c.ok && orchestration.CodeOf(c.err) != contract.CodeValidationFailed:
			t.Errorf("%s: %v, want VALIDATION_FAILED", c.name, c.err)
		}
	}
	// Refusals say what is wrong, and the hub methods show it.
	err := engineError(validatePlanID(long))
	if err == nil || !strings.Contains(err.Error(), "VALIDATION_FAILED: planId is too long") {
		t.Errorf("engineError(validatePlanID(long)) = %v", err)
	}
	if err := validID("sessionId", "s\r\nforged"); err == nil || !strings.Contains(err.Error(), "control characters") {
		t.Errorf("validID with CR LF: %v", err)
	}
}

// sane reports whether an id that passed validation is one: bounded,
// UTF-8, no control characters.
func sane(id string) bool {
	return len(id) <= maxIDLength && !strings.ContainsFunc(id, unicode.IsControl) && idProblem(id) == ""
}

// FuzzRequestValidation decodes arbitrary JSON into each request DTO as a
// hub method would and runs its validator: it must never panic, and what
// it lets through must have bounded, printable ids and bounded lists.
func FuzzRequestValidation(f *testing.F) {
	for _, s := range []string{
		`{"sessionId":"s","goal":"g","strategy":"Parallel","availableAgentIds":["a"],"maxSteps":3,"constraints":{"timeout":"00:00:01"}}`,
		`{"sessionId":"s","message":"m","agentIds":["a","b"],"strategy":1}`,
		`{"agentId":"a","sessionId":"s","content":"c","attachments":[{"fileName":"f","content":"AAEC","url":"u"}],"commandId":"x"}`,
		`{"agentId":"a","sessionId":"s","toolName":"read_file","parameters":{"file_path":"a.txt"}}`,
		`{"name":"n","type":1,"agentIds":["\u0000"],"workingDirectory":"w"}`,
		`"plan-1"`, `"\u001b[31m"`, `{}`, `null`,
	} {
		for pick := range 6 {
			f.Add(uint8(pick), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, pick uint8, data []byte) {
		var ids []string
		var lists [][]string
		var err error
		switch pick % 6 {
		case 0:
			var r contract.CreatePlanRequest
			if json.Unmarshal(data, &r) != nil {
				return
			}
			err = validatePlanRequest(r)
			ids, lists = append([]string{r.SessionID}, r.AvailableAgentIDs...), [][]string{r.AvailableAgentIDs}
			for k := range r.Constraints {
				ids = append(ids, k)
			}
		case 1:
			var r contract.OrchestrationMessageRequest
			if json.Unmarshal(data, &r) != nil {
				return
			}
			err = validateOrchestrationMessage(r)
			ids, lists = append([]string{r.SessionID}, r.AgentIDs...), [][]string{r.AgentIDs}
		case 2:
			var r contract.AgentMessageRequest
			if json.Unmarshal(data, &r) != nil {
				return
			}
			err = validateAgentMessage(r)
			ids = []string{r.AgentID, r.SessionID}
			if r.CommandID != nil {
				ids = append(ids, *r.CommandID)
			}
			if len(r.Attachments) > maxAttachments && err == nil {
				t.Fatalf("%d attachments passed", len(r.Attachments))
			}
		case 3:
			var r contract.ToolExecutionRequest
			if json.Unmarshal(data, &r) != nil {
				return
			}
			err = validateToolRequest(r)
			for k := range r.Parameters {
				ids = append(ids, k)
			}
			if len(r.Parameters) > maxParameters && err == nil {
				t.Fatalf("%d parameters passed", len(r.Parameters))
			}
		case 4:
			var r contract.CreateSessionRequest
			if json.Unmarshal(data, &r) != nil {
				return
			}
			err = validateCreateSession(r)
			ids, lists = r.AgentIDs, [][]string{r.AgentIDs}
			if err == nil && (len(r.Name) > maxNameLength || len(r.WorkingDirectory) > 1024) {
				t.Fatalf("a %d-byte name or %d-byte directory passed", len(r.Name), len(r.WorkingDirectory))
			}
		case 5:
			var id string
			if json.Unmarshal(data, &id) != nil {
				return
			}
			err = validatePlanID(id)
			ids = []string{id}
		}
		var oe *orchestration.Error
		if err != nil {
			if !errors.As(err, &oe) || oe.Code != contract.CodeValidationFailed || oe.Message == "" {
				t.Fatalf("refusal %v is not a VALIDATION_FAILED error", err)
			}
			return
		}
		if i := slices.IndexFunc(ids, func(id string) bool { return !sane(id) }); i >= 0 {
			t.Fatalf("id %q passed validation", ids[i])
		}
		for _, l := range lists {
			if len(l) > maxListedAgents {
				t.Fatalf("a list of %d ids passed validation", len(l))
			}
		}
	})
}
