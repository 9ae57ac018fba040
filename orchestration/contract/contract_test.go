package contract

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestTimeSpanFormat(t *testing.T) {
	cases := []struct {
		d    time.Duration
		want string
	}{
		{0, "00:00:00"},
		{1500 * time.Millisecond, "00:00:01.5000000"},
		{5 * time.Minute, "00:05:00"},
		{26*time.Hour + 3*time.Minute + 4*time.Second + 500*time.Millisecond, "1.02:03:04.5000000"},
		{30 * time.Minute, "00:30:00"},
		{100 * time.Nanosecond, "00:00:00.0000001"},
		{199 * time.Nanosecond, "00:00:00.0000001"}, // truncated to ticks
		{-(26*time.Hour + 3*time.Minute + 4*time.Second + 500*time.Millisecond), "-1.02:03:04.5000000"},
		{-1500 * time.Millisecond, "-00:00:01.5000000"},
		{23*time.Hour + 59*time.Minute + 59*time.Second, "23:59:59"},
		{240 * time.Hour, "10.00:00:00"},
	}
	for _, c := range cases {
		b, err := json.Marshal(TimeSpan(c.d))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(b); got != `"`+c.want+`"` {
			t.Errorf("marshal %v = %s, want %q", c.d, got, c.want)
		}
		var back TimeSpan
		if err := json.Unmarshal(b, &back); err != nil {
			t.Errorf("unmarshal %s: %v", b, err)
		} else if want := c.d / 100 * 100; time.Duration(back) != want {
			t.Errorf("round trip %s = %v, want %v", b, time.Duration(back), want)
		}
	}
}

func TestTimeSpanParse(t *testing.T) {
	good := map[string]time.Duration{
		"00:00:00":                 0,
		"00:00:01.5":               1500 * time.Millisecond,
		"00:00:01.5000000":         1500 * time.Millisecond,
		"1.02:03:04.5000000":       26*time.Hour + 3*time.Minute + 4*time.Second + 500*time.Millisecond,
		"-00:05:00":                -5 * time.Minute,
		"0:05:00.1":                5*time.Minute + 100*time.Millisecond,
		"106751.23:47:16.8547758":  time.Duration(1<<63 - 1).Truncate(100),
		"-106751.23:47:16.8547758": -time.Duration(1<<63 - 1).Truncate(100),
	}
	for in, want := range good {
		got, err := ParseTimeSpan(in)
		if err != nil {
			t.Errorf("ParseTimeSpan(%q): %v", in, err)
		} else if time.Duration(got) != want {
			t.Errorf("ParseTimeSpan(%q) = %v, want %v", in, time.Duration(got), want)
		}
	}
	bad := []string{"", "00:05", "1:2:3", "00:60:00", "24:00:00", "00:00:60", "00:00:00.12345678",
		"abcdefgh", "00:00:00x", "1.2.03:04:05", "00-00-00", "123456789012345678901234567", "106751.23:47:16.8547759", "10675199.02:48:05.4775807"}
	for _, in := range bad {
		if _, err := ParseTimeSpan(in); err == nil {
			t.Errorf("ParseTimeSpan(%q) succeeded, want error", in)
		}
	}
	var ts TimeSpan
	if err := json.Unmarshal([]byte(`300`), &ts); err == nil {
		t.Error("a number was accepted as a TimeSpan")
	}
	ts = 7
	if err := json.Unmarshal([]byte(`null`), &ts); err != nil || ts != 7 {
		t.Errorf("null: %v %v", err, ts)
	}
}

func TestDateTimeFormat(t *testing.T) {
	cases := []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, "0001-01-01T00:00:00"},
		{time.Date(2025, 9, 1, 10, 20, 30, 120_000_000, time.UTC), "2025-09-01T10:20:30.12Z"},
		{time.Date(2025, 9, 1, 10, 20, 30, 0, time.UTC), "2025-09-01T10:20:30Z"},
		{time.Date(2025, 9, 1, 10, 20, 30, 123_456_789, time.UTC), "2025-09-01T10:20:30.1234567Z"},
		{time.Date(2025, 9, 1, 12, 20, 30, 0, time.FixedZone("", 2*3600)), "2025-09-01T10:20:30Z"},
	}
	for _, c := range cases {
		b, err := json.Marshal(DateTime(c.t))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(b); got != `"`+c.want+`"` {
			t.Errorf("marshal %v = %s, want %q", c.t, got, c.want)
		}
	}
}

func TestDateTimeParse(t *testing.T) {
	ref := time.Date(2025, 9, 1, 10, 20, 30, 120_000_000, time.UTC)
	good := map[string]time.Time{
		"2025-09-01T10:20:30.12Z":               ref,
		"2025-09-01T10:20:30.1200000Z":          ref,
		"2025-09-01T10:20:30.12":                ref,
		"2025-09-01T12:20:30.12+02:00":          ref,
		"2025-09-01T05:20:30.12-05:00":          ref,
		"2025-09-01T10:20:30.1200000000000000Z": ref,
		"2025-09-01T10:20:30Z":                  ref.Truncate(time.Second),
		"2025-09-01T10:20Z":                     ref.Truncate(time.Minute),
		"2025-09-01":                            time.Date(2025, 9, 1, 0, 0, 0, 0, time.UTC),
		"0001-01-01T00:00:00":                   {},
	}
	for in, want := range good {
		got, err := ParseDateTime(in)
		if err != nil {
			t.Errorf("ParseDateTime(%q): %v", in, err)
		} else if !got.Time().Equal(want) {
			t.Errorf("ParseDateTime(%q) = %v, want %v", in, got.Time(), want)
		}
	}
	bad := []string{"", "2025-9-1", "2025-09-01T", "2025-09-01 10:20:30", "2025-13-01", "2025-02-30",
		"2025-09-01T10:20:30.12345678901234567Z", "2025-09-01T10:20:30+2", "2025-09-01T10:20:30ZZ", "0000-01-01"}
	for _, in := range bad {
		if _, err := ParseDateTime(in); err == nil {
			t.Errorf("ParseDateTime(%q) succeeded, want error", in)
		}
	}
	var zero DateTime
	b, _ := json.Marshal(zero)
	var back DateTime
	if err := json.Unmarshal(b, &back); err != nil || !back.IsZero() {
		t.Errorf("zero round trip: %v %v", err, back)
	}
}

func TestEnums(t *testing.T) {
	var req OrchestrationMessageRequest
	if err := json.Unmarshal([]byte(`{"Strategy":"roundrobin","SESSIONID":"s"}`), &req); err != nil {
		t.Fatal(err)
	}
	if req.Strategy != StrategyRoundRobin || req.SessionID != "s" {
		t.Fatalf("got %+v", req)
	}
	if err := json.Unmarshal([]byte(`{"strategy":2}`), &req); err != nil || req.Strategy != StrategyAdaptive {
		t.Fatalf("integer: %v %v", err, req.Strategy)
	}
	if err := json.Unmarshal([]byte(`{"strategy":"Nope"}`), &req); err == nil {
		t.Fatal("unknown name accepted")
	}
	if err := json.Unmarshal([]byte(`{"strategy":1.5}`), &req); err == nil {
		t.Fatal("fraction accepted")
	}
	names := map[string]func() (int, error){
		"uninitialized": func() (int, error) {
			var v AgentStatus
			err := json.Unmarshal([]byte(`"uninitialized"`), &v)
			return int(v), err
		},
		"UNKNOWN": func() (int, error) {
			var v AgentStatus
			err := json.Unmarshal([]byte(`"UNKNOWN"`), &v)
			return int(v) - 7, err
		},
		"gpt4": func() (int, error) {
			var v AgentType
			err := json.Unmarshal([]byte(`"gpt4"`), &v)
			return int(v) - 2, err
		},
		"tool": func() (int, error) {
			var v MessageRole
			err := json.Unmarshal([]byte(`"tool"`), &v)
			return int(v) - 3, err
		},
		"Success": func() (int, error) {
			var v ResponseType
			err := json.Unmarshal([]byte(`"Success"`), &v)
			return int(v) - 5, err
		},
		"orchestrated": func() (int, error) {
			var v SessionType
			err := json.Unmarshal([]byte(`"orchestrated"`), &v)
			return int(v) - 2, err
		},
		"cancelled": func() (int, error) {
			var v SessionStatus
			err := json.Unmarshal([]byte(`"cancelled"`), &v)
			return int(v) - 4, err
		},
	}
	for n, f := range names {
		if d, err := f(); err != nil || d != 0 {
			t.Errorf("%s: off by %d, %v", n, d, err)
		}
	}
	b, _ := json.Marshal(AgentStatusDto{Status: AgentStatusBusy})
	if !strings.Contains(string(b), `"status":3`) {
		t.Errorf("enum not written as integer: %s", b)
	}
	if StrategyRoundRobin.String() != "RoundRobin" || OrchestrationStrategy(9).String() != "9" {
		t.Error("String")
	}
}

// noNulls fails if the JSON text contains a null anywhere.
func noNulls(t *testing.T, what string, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if strings.Contains(string(b), "null") {
		t.Errorf("%s contains null: %s", what, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return m
}

func TestZeroSessionHasNoNulls(t *testing.T) {
	m := noNulls(t, "Session", Session{})
	want := map[string]string{
		"id": `""`, "name": `""`, "type": `0`, "status": `0`,
		"createdAt": `"0001-01-01T00:00:00"`, "lastActivityAt": `"0001-01-01T00:00:00"`, "lastActivity": `"0001-01-01T00:00:00"`,
		"participantAgentIds": `[]`, "participantAgents": `[]`, "messages": `[]`, "context": `{}`,
		"workingDirectory": `""`, "projectId": `""`,
	}
	for k, w := range want {
		v, ok := m[k]
		if !ok {
			t.Errorf("field %s missing", k)
			continue
		}
		b, _ := json.Marshal(v)
		if string(b) != w {
			t.Errorf("%s = %s, want %s", k, b, w)
		}
	}
	if len(m) != len(want) {
		t.Errorf("got %d fields, want %d: %v", len(m), len(want), m)
	}
}

func TestZeroDTOsHaveNoNulls(t *testing.T) {
	for name, v := range map[string]any{
		"CreateSessionRequest": CreateSessionRequest{}, "AgentMessageRequest": AgentMessageRequest{},
		"OrchestrationMessageRequest": OrchestrationMessageRequest{}, "ToolExecutionRequest": ToolExecutionRequest{},
		"CreatePlanRequest": CreatePlanRequest{}, "ConnectionInfo": ConnectionInfo{},
		"SessionCreatedResponse": SessionCreatedResponse{}, "AgentResponseDto": AgentResponseDto{},
		"AgentStatusDto": AgentStatusDto{}, "ErrorResponse": ErrorResponse{},
		"ToolExecutionResponse": ToolExecutionResponse{}, "ToolExecutionUpdate": ToolExecutionUpdate{},
		"ToolApprovalRequest": ToolApprovalRequest{}, "AgentMessage": AgentMessage{}, "Attachment": Attachment{},
		"AgentResponse": AgentResponse{}, "ToolCall": ToolCall{}, "ToolExecutionResult": ToolExecutionResult{},
		"AgentInfo":            AgentInfo{Capabilities: &AgentCapabilities{AvailableTools: List[ToolDefinition]{{}}}},
		"OrchestrationRequest": OrchestrationRequest{}, "OrchestrationPlan": OrchestrationPlan{Steps: []OrchestrationStep{{}}},
		"OrchestrationProgress": OrchestrationProgress{}, "OrchestrationResult": OrchestrationResult{StepResults: []StepResult{{}}},
		"StepCompletedEvent": StepCompletedEvent{}, "ToolApprovalResolution": ToolApprovalResolution{},
	} {
		noNulls(t, name, v)
	}
}

func TestAliasesAndDefaults(t *testing.T) {
	m := noNulls(t, "caps", AgentCapabilities{SupportsTools: true})
	if m["supportsToolExecution"] != true {
		t.Errorf("supportsToolExecution: %v", m)
	}
	m = noNulls(t, "step result", StepResult{ExecutionTime: TimeSpan(1500 * time.Millisecond)})
	if m["duration"] != "00:00:01.5000000" || m["executionTime"] != "00:00:01.5000000" {
		t.Errorf("duration alias: %v", m)
	}
	m = noNulls(t, "request", OrchestrationRequest{Timeout: DefaultPlanTimeout})
	if m["timeoutMinutes"] != 30.0 || m["timeout"] != "00:30:00" {
		t.Errorf("timeoutMinutes alias: %v", m)
	}
	var r OrchestrationRequest
	if err := json.Unmarshal([]byte(`{"goal":"g"}`), &r); err != nil || r.MaxSteps != 10 || r.Timeout != DefaultPlanTimeout {
		t.Errorf("request defaults: %+v %v", r, err)
	}
	if err := json.Unmarshal([]byte(`{"timeoutMinutes":2}`), &r); err != nil || r.Timeout != TimeSpan(2*time.Minute) {
		t.Errorf("timeoutMinutes input: %+v %v", r, err)
	}
	var p CreatePlanRequest
	if err := json.Unmarshal([]byte(`{"goal":"g"}`), &p); err != nil || p.MaxSteps != 10 {
		t.Errorf("maxSteps default: %+v %v", p, err)
	}
	var resp AgentResponse
	if err := json.Unmarshal([]byte(`{}`), &resp); err != nil || resp.Role != MessageRoleAssistant {
		t.Errorf("role default: %+v", resp)
	}
	var caps AgentCapabilities
	if err := json.Unmarshal([]byte(`{}`), &caps); err != nil || caps.MaxConcurrentRequests != 1 {
		t.Errorf("maxConcurrentRequests default: %+v", caps)
	}
	m = noNulls(t, "tool", ToolDefinition{})
	if s := m["schema"].(map[string]any); s["type"] != "object" {
		t.Errorf("schema type default: %v", s)
	}
	m = noNulls(t, "session", Session{LastActivityAt: DateTime(time.Date(2025, 9, 1, 0, 0, 0, 0, time.UTC))})
	if m["lastActivity"] != "2025-09-01T00:00:00Z" {
		t.Errorf("lastActivity alias: %v", m)
	}
}

func TestStepCompletedEventShape(t *testing.T) {
	m := noNulls(t, "event", StepCompletedEvent{
		OrchestrationStep: OrchestrationStep{Order: 2, AgentID: "a", DependsOn: []string{"1"}},
		Result:            StepResult{StepOrder: 2, Success: true, Output: "x"},
	})
	if m["order"] != 2.0 || m["agentId"] != "a" || m["result"].(map[string]any)["output"] != "x" {
		t.Errorf("event: %v", m)
	}
}

func TestSecretsNotWritten(t *testing.T) {
	m := noNulls(t, "agent", AgentInfo{Configuration: Map{"ApiKey": "k", "api_key": "k", "Model": "m", "maxTokens": 5}})
	cfg := m["configuration"].(map[string]any)
	if _, ok := cfg["ApiKey"]; ok || cfg["api_key"] != nil || cfg["Model"] != "m" || cfg["maxTokens"] != 5.0 {
		t.Errorf("configuration: %v", cfg)
	}
}

func TestMapKeysVerbatimAndNullables(t *testing.T) {
	b, _ := json.Marshal(AgentMessage{Metadata: Map{"CommandId": "c"}})
	if !strings.Contains(string(b), `"CommandId":"c"`) {
		t.Errorf("metadata key re-cased: %s", b)
	}
	b, _ = json.Marshal(SessionCreatedResponse{Error: Ptr("boom")})
	if string(b) != `{"success":false,"sessionId":"","error":"boom"}` {
		t.Errorf("nullable: %s", b)
	}
	var req AgentMessageRequest
	if err := json.Unmarshal([]byte(`{"attachments":[],"commandId":null,"unknown":1}`), &req); err != nil || req.CommandID != nil {
		t.Errorf("UI request: %v %+v", err, req)
	}
	var att Attachment
	if err := json.Unmarshal([]byte(`{"content":"aGk="}`), &att); err != nil || string(att.Content) != "hi" {
		t.Errorf("base64: %v %q", err, att.Content)
	}
}
