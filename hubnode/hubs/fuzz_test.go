package hubs

import (
	"encoding/json"
	"io"
	"log/slog"
	"testing"

	"github.com/orchestratorchat/hubfarm/hubnode"
	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/tools"
)

// hubMethod is one method of one hub.
type hubMethod struct {
	hub  *hubnode.Hub
	name string
}

// everyMethod registers both hubs with every optional part (engine, tools,
// development diagnostics) and lists all their methods. The engine and the
// tools are never called: only argument binding runs on them.
func everyMethod(tb testing.TB) []hubMethod {
	tb.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	node, err := hubnode.New(hubnode.Config{NodeID: "fuzz", TokenSecret: []byte("x"), Logger: quiet}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	h := Register(node, Deps{Engine: new(orchestration.Engine), Tools: new(tools.Executor), Approvals: new(tools.Approvals),
		Dev: true, Logger: quiet})
	var methods []hubMethod
	for _, hub := range []*hubnode.Hub{h.Orchestrator, h.Agent} {
		for _, name := range hub.MethodNames() {
			methods = append(methods, hubMethod{hub, name})
		}
	}
	return methods
}

// FuzzHubArguments feeds arbitrary argument lists to the binder of every
// method of both hubs: binding must answer with a clear error or succeed,
// never panic.
func FuzzHubArguments(f *testing.F) {
	methods := everyMethod(f)
	seeds := []string{
		`["s1"]`, `[{"name":"n","type":1,"agentIds":[],"workingDirectory":""}]`, `["s1","hello"]`,
		`["s1",null,100]`, `[{"sessionId":"s","goal":"g","strategy":"Parallel","availableAgentIds":["a"],"maxSteps":3}]`,
		`[{"agentId":"a","sessionId":"s","content":"c","attachments":[{"content":"AAEC"}],"commandId":null}]`,
		`[{"timeout":"00:00:01.5000000","strategy":99}]`, `[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
		`[1,2,3]`, `[]`, `[{"createdAt":"2025-13-45T99:99:99Z"}]`,
	}
	for i, s := range seeds {
		for j := range methods {
			f.Add(uint16(i*len(methods)+j), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, pick uint16, data []byte) {
		var args []json.RawMessage
		if json.Unmarshal(data, &args) != nil {
			return
		}
		m := methods[int(pick)%len(methods)]
		_ = m.hub.BindArguments(m.name, args)
	})
}

func TestBindArgumentsGivesClearErrors(t *testing.T) {
	node, _ := hubnode.New(hubnode.Config{NodeID: "t", TokenSecret: []byte("x"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil)
	h := Register(node, Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	cases := map[string][]json.RawMessage{
		"count": {},
		"type":  {json.RawMessage(`{"a":1}`)},
		"depth": {json.RawMessage(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`)},
	}
	for name, args := range cases {
		if msg := h.Orchestrator.BindArguments("JoinSession", args); msg == "" {
			t.Errorf("%s: JoinSession bound %s", name, args)
		}
	}
	if msg := h.Orchestrator.BindArguments("JoinSession", []json.RawMessage{json.RawMessage(`"s1"`)}); msg != "" {
		t.Errorf("valid arguments refused: %s", msg)
	}
	if msg := h.Orchestrator.BindArguments("CreateSession", []json.RawMessage{json.RawMessage(`{"type":"MultiAgent"}`)}); msg != "" {
		t.Errorf("enum by name refused: %s", msg)
	}
}
