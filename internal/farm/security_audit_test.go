package farm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode/client"
	"github.com/orchestratorchat/hubfarm/hubnode/hubs"
	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/orchestratorchat/hubfarm/orchestration/tools"
)

// logBuffer collects a node's JSON log lines; handlers write from many
// goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines decodes every line; a line that is not a JSON object fails the
// test (serve logs JSON only).
func (b *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

// auditLine waits for an audit line with message msg whose fields include
// want, and returns it.
func auditLine(t *testing.T, logs *logBuffer, msg string, want map[string]any) map[string]any {
	t.Helper()
	var found map[string]any
	waitFor(t, 10*time.Second, "audit line "+msg, func() bool {
	lines:
		for _, l := range logs.lines(t) {
			if l["msg"] != msg || l["audit"] != true {
				continue
			}
			for k, v := range want {
				if l[k] != v {
					continue lines
				}
			}
			found = l
			return true
		}
		return false
	})
	return found
}

// TestAuditLog: authentication failures, session create, join, leave,
// invite and remove, refused access, plan execution and cancellation, and
// tool approvals and denials each write a JSON audit line saying who did
// what, when and from where; and no line at info level carries a token,
// the JWT secret, or what users wrote.
func TestAuditLog(t *testing.T) {
	logs := &logBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	f := securedFarm(t, oneRedis(t), 1, func(c *farm.NodeConfig) {
		c.Logger = logger
		c.ToolsRoot = t.TempDir()
		c.ToolPolicy.ApprovalTimeout = 20 * time.Second
		c.Agents = farm.ScriptedAgents(100, 100*time.Millisecond) // a step runs 10s: long enough to cancel
	})
	n := f.nodes[0]
	orch, agent := n.URL()+hubs.OrchestratorPath, n.URL()+hubs.AgentPath
	aliceTok, bobTok, malloryTok := token(t, "alice", time.Hour, nil), token(t, "bob", time.Hour, nil), token(t, "mallory", time.Hour, nil)
	const (
		secretText  = "TOP-SECRET-CHAT-7f3a"
		secretGoal  = "TOP-SECRET-GOAL-91bc"
		secretFile  = "TOP-SECRET-FILE-c4d2"
		forgedToken = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJldmUifQ.forged-signature-0e8f"
	)

	// Authentication failure, at negotiate.
	if _, err := dialAs(t, orch, forgedToken); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("forged token: %v", err)
	}
	l := auditLine(t, logs, "negotiate refused: authentication failed", nil)
	if l["remote"] == nil || l["remote"] == "" {
		t.Errorf("authentication failure without the remote address: %v", l)
	}

	alice := mustDialAs(t, orch, aliceTok)
	aliceTools := mustDialAs(t, agent, aliceTok)
	bob := mustDialAs(t, orch, bobTok)
	mallory := mustDialAs(t, orch, malloryTok)
	approvalsAsked := record(aliceTools, "ToolApprovalRequired")
	var created contract.SessionCreatedResponse
	invoke(t, alice, &created, "CreateSession", contract.CreateSessionRequest{Name: "audited", WorkingDirectory: "proj"})
	sid := created.SessionID
	invoke(t, alice, nil, "InviteToSession", sid, "bob")
	invoke(t, bob, nil, "JoinSession", sid)
	invoke(t, alice, nil, "SendSessionMessage", sid, secretText)
	invoke(t, bob, nil, "LeaveSession", sid)
	invoke(t, alice, nil, "RemoveFromSession", sid, "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := mallory.Invoke(ctx, "JoinSession", sid); err == nil {
		t.Fatal("mallory joined alice's session")
	}

	// A plan, started and cancelled.
	var plan contract.OrchestrationPlan
	invoke(t, alice, &plan, "CreateOrchestrationPlan", contract.CreatePlanRequest{SessionID: sid, Goal: secretGoal,
		Strategy: contract.StrategySequential, AvailableAgentIDs: []string{"scripted-writer"}, MaxSteps: 3})
	if _, err := mallory.Invoke(ctx, "GetPlan", plan.ID); err == nil {
		t.Fatal("mallory read alice's plan")
	}
	invoke(t, alice, nil, "ExecutePlan", plan.ID)
	invoke(t, alice, nil, "CancelExecution", plan.ID)

	// Two tool calls that need approval: one denied, one approved; an
	// outsider's decision is refused.
	before := scrape(t, n)
	approvalIDs := []string{}
	for i, approve := range []bool{false, true} {
		done := make(chan error, 1)
		go func() {
			var r contract.ToolExecutionResponse
			done <- aliceTools.InvokeInto(ctx, &r, "ExecuteTool", contract.ToolExecutionRequest{AgentID: "scripted-writer", SessionID: sid,
				ToolName: tools.ToolWriteFile, Parameters: contract.Map{"file_path": "a.txt", "content": secretFile}})
		}()
		waitFor(t, 10*time.Second, "ToolApprovalRequired", func() bool { return len(approvalsAsked.snapshot()) == i+1 })
		var req contract.ToolApprovalRequest
		if err := json.Unmarshal(approvalsAsked.snapshot()[i], &req); err != nil {
			t.Fatal(err)
		}
		approvalIDs = append(approvalIDs, req.ID)
		if i == 0 {
			_, err := mallory.Invoke(ctx, "ApproveTool", req.ID, true, nil)
			var ie *client.InvocationError
			if !errors.As(err, &ie) || !strings.Contains(ie.Message, "FORBIDDEN") {
				t.Fatalf("mallory's ApproveTool: %v", err)
			}
		}
		invoke(t, alice, nil, "ApproveTool", req.ID, approve, "reviewed")
		if err := <-done; err != nil {
			t.Fatalf("ExecuteTool: %v", err)
		}
	}
	wantDelta(t, []*farm.Node{n}, []metricSet{before}, 1, "hubfarm_approvals_total", "outcome", "denied")
	wantDelta(t, []*farm.Node{n}, []metricSet{before}, 1, "hubfarm_approvals_total", "outcome", "approved")

	// Who, what, when, from where.
	for _, c := range []struct {
		msg  string
		want map[string]any
	}{
		{"session created", map[string]any{"user": "alice", "session": sid}},
		{"session invite", map[string]any{"user": "alice", "invited": "bob", "session": sid}},
		{"session joined", map[string]any{"user": "bob", "session": sid}},
		{"session left", map[string]any{"user": "bob", "session": sid}},
		{"session member removed", map[string]any{"user": "alice", "removed": "bob", "session": sid}},
		{"session access denied", map[string]any{"user": "mallory", "session": sid, "op": "join"}},
		{"session access denied", map[string]any{"user": "mallory", "plan": plan.ID, "op": "GetPlan"}},
		{"plan execution started", map[string]any{"user": "alice", "plan": plan.ID}},
		{"plan cancelled", map[string]any{"user": "alice", "plan": plan.ID}},
		{"tool approval refused", map[string]any{"user": "mallory", "approval": approvalIDs[0], "session": sid}},
		{"tool approval decision", map[string]any{"user": "alice", "approval": approvalIDs[0], "approved": false}},
		{"tool approval decision", map[string]any{"user": "alice", "approval": approvalIDs[1], "approved": true}},
		{"tool executed", map[string]any{"user": "alice", "session": sid, "tool": tools.ToolWriteFile, "success": true}},
	} {
		l := auditLine(t, logs, c.msg, c.want)
		if remote, _ := l["remote"].(string); !strings.HasPrefix(remote, "127.0.0.1:") {
			t.Errorf("%s: remote %q, want the client's address", c.msg, l["remote"])
		}
		if ts, _ := l["time"].(string); ts == "" {
			t.Errorf("%s: no time", c.msg)
		} else if at, err := time.Parse(time.RFC3339Nano, ts); err != nil || time.Since(at) > time.Minute {
			t.Errorf("%s: time %q", c.msg, ts)
		}
		if l["conn"] == nil {
			t.Errorf("%s: no connection id: %v", c.msg, l)
		}
	}

	// Nothing secret or written by users is logged at info level.
	all := logs.String()
	for what, s := range map[string]string{
		"alice's JWT": aliceTok, "bob's JWT": bobTok, "mallory's JWT": malloryTok, "the forged token": forgedToken,
		"the JWT secret": string(jwtSecret), "a chat message": secretText, "a plan goal": secretGoal, "a file's content": secretFile,
	} {
		if strings.Contains(all, s) {
			t.Errorf("the log contains %s", what)
		}
	}
}
