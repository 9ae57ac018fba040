package hubs

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/orchestratorchat/hubfarm/hubnode"
	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/tools"
)

func TestAgentMethodsRegistered(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	register := func(d Deps) *Hubs {
		node, err := hubnode.New(hubnode.Config{NodeID: "t", TokenSecret: []byte("x"), Logger: quiet}, nil)
		if err != nil {
			t.Fatal(err)
		}
		d.Logger = quiet
		return Register(node, d)
	}
	has := func(h *hubnode.Hub, names ...string) bool {
		got := h.MethodNames()
		for _, n := range names {
			if !slices.Contains(got, n) {
				return false
			}
		}
		return true
	}
	// The engine is never called: only registration and binding run.
	h := register(Deps{Engine: new(orchestration.Engine)})
	if !has(h.Agent, "GetAgents", "SubscribeToAgent", "UnsubscribeFromAgent", "SendAgentMessage", "StreamAgentMessage") ||
		!has(h.Orchestrator, "GetAgents") {
		t.Fatalf("agent methods missing: %v / %v", h.Agent.MethodNames(), h.Orchestrator.MethodNames())
	}
	if has(h.Agent, "ExecuteTool") || has(h.Agent, "ApproveTool") {
		t.Fatal("tool methods offered without a tool executor")
	}
	h = register(Deps{Engine: new(orchestration.Engine), Tools: new(tools.Executor), Approvals: new(tools.Approvals)})
	if !has(h.Agent, "ExecuteTool", "ApproveTool") || !has(h.Orchestrator, "ApproveTool") || has(h.Orchestrator, "ExecuteTool") {
		t.Fatalf("tool methods: %v / %v", h.Agent.MethodNames(), h.Orchestrator.MethodNames())
	}
	args := func(s string) []json.RawMessage {
		var a []json.RawMessage
		_ = json.Unmarshal([]byte(s), &a)
		return a
	}
	for s, ok := range map[string]bool{
		`["0b6e91a0-0000-4000-8000-000000000000", true, null]`:     true,
		`["0b6e91a0-0000-4000-8000-000000000000", false, "why"]`:   true,
		`["0b6e91a0-0000-4000-8000-000000000000", true]`:           true, // the contract's form
		`["0b6e91a0-0000-4000-8000-000000000000"]`:                 false,
		`["0b6e91a0-0000-4000-8000-000000000000", true, "r", 1]`:   false,
		`[{"agentId":"a","sessionId":"s","toolName":"read_file"}]`: false, // wrong method's argument
	} {
		if got := h.Agent.BindArguments("ApproveTool", args(s)) == ""; got != ok {
			t.Errorf("ApproveTool%s binds = %v, want %v", s, got, ok)
		}
	}
	if msg := h.Orchestrator.BindArguments("ApproveTool", args(`["0b6e91a0-0000-4000-8000-000000000000"]`)); !strings.Contains(msg, "Invocation provides 1 argument(s) but target expects 2 to 3.") {
		t.Errorf("ApproveTool with one argument: %q", msg)
	}
	if msg := h.Agent.BindArguments("ExecuteTool", args(`[{"agentId":"a","sessionId":"s","toolName":"read_file","parameters":{"file_path":"x"}}]`)); msg != "" {
		t.Errorf("ExecuteTool binding: %s", msg)
	}
}

func TestWatchersOnAnOpenFarm(t *testing.T) {
	groups := map[string][]string{
		orchestration.SessionGroup("s"): {"m1", "m2", "both"},
		orchestration.AgentGroup("a"):   {"both", "w1", "w2"},
	}
	r := EngineRouter{OpenSessions: true, Members: func(_ context.Context, g string) ([]string, error) { return groups[g], nil }}
	for caller, want := range map[string][]string{
		"":     {"w1", "w2"},
		"m1":   {"w1", "w2"},         // a member gets it through the group
		"w1":   {"w1", "w2"},         // a subscriber once
		"lone": {"w1", "w2", "lone"}, // a caller in neither group directly
	} {
		got, err := r.Watchers(context.Background(), "s", "a", caller)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("caller %q: %v %v, want %v", caller, got, err, want)
		}
	}
}
