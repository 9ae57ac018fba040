package agents

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

func quietOpts(t *testing.T) Options {
	return Options{SandboxRoot: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		LookupEnv: func(string) (string, bool) { return "", false }}
}

func TestLoadExample(t *testing.T) {
	c, err := Load("testdata/agents.example.yaml", quietOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range c.List() {
		ids = append(ids, a.ID)
	}
	if strings.Join(ids, ",") != "demo,echo-cli,coder,gpt,router,local" {
		t.Fatalf("ids %v", ids)
	}
	var cat orchestration.AgentCatalog = c
	_, info, ok := cat.Lookup("gpt")
	if !ok || info.Type != contract.AgentTypeGPT4 || info.Name != "GPT-4o mini" || info.Status != contract.AgentStatusReady {
		t.Fatalf("gpt %+v", info)
	}
	caps := info.Capabilities
	if !caps.SupportsTools || !caps.SupportsStreaming || caps.MaxTokens != 128000 || caps.MaxConcurrentRequests != 16 ||
		len(caps.AvailableTools) != 5 || caps.SupportedModels[0] != "gpt-4o-mini" {
		t.Fatalf("caps %+v", caps)
	}
	if info.Configuration["apiKeyEnv"] != "OPENAI_API_KEY" || info.Configuration["model"] != "gpt-4o-mini" {
		t.Fatalf("configuration %v", info.Configuration)
	}
	_, coder, _ := cat.Lookup("coder")
	if coder.Type != contract.AgentTypeClaude || coder.Capabilities.MaxConcurrentRequests != 2 ||
		len(coder.Capabilities.AvailableTools) != 3 || !coder.Capabilities.SupportsFileOperations {
		t.Fatalf("coder %+v", coder.Capabilities)
	}
	_, local, _ := cat.Lookup("local")
	if local.Name != "Local Llama" || local.Type != contract.AgentTypeCustom {
		t.Fatalf("local %+v", local)
	}
	if _, _, ok := cat.Lookup("nope"); ok {
		t.Fatal("found an unknown agent")
	}
	// Infos marshal as contract JSON, without nulls.
	b, err := json.Marshal(c.List())
	if err != nil || strings.Contains(string(b), "null") {
		t.Fatalf("%s %v", b, err)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"empty", `agents: []`, "no agents"},
		{"not yaml", "agents: [", "catalogue"},
		{"missing id", "agents:\n- kind: scripted", "agent #1: id: required"},
		{"bad id", "agents:\n- id: 'a b'\n  kind: scripted", "agent a b: id:"},
		{"missing kind", "agents:\n- id: a", "agent a: kind: required"},
		{"bad kind", "agents:\n- id: a\n  kind: magic", `agent a: kind: "magic"`},
		{"duplicate", "agents:\n- id: a\n  kind: scripted\n- id: a\n  kind: scripted", "agent a: id: duplicate"},
		{"bad type", "agents:\n- id: a\n  kind: scripted\n  type: Robot", `agent a: type: "Robot"`},
		{"unknown field", "agents:\n- id: a\n  kind: openai\n  openai:\n    modle: x", "field modle not found"},
		{"kind mismatch", "agents:\n- id: a\n  kind: scripted\n  openai:\n    model: x", "agent a: openai: settings for kind openai"},
		{"openai model", "agents:\n- id: a\n  kind: openai\n  openai:\n    baseURL: http://x", "agent a: openai.model: required"},
		{"openai block", "agents:\n- id: a\n  kind: openai", "agent a: openai: required"},
		{"openai url", "agents:\n- id: a\n  kind: openai\n  openai:\n    model: m\n    baseURL: ftp://x", "agent a: openai.baseURL"},
		{"url credentials", "agents:\n- id: a\n  kind: openai\n  openai:\n    model: m\n    baseURL: https://u:p@x", "credentials"},
		{"temperature", "agents:\n- id: a\n  kind: openai\n  openai:\n    model: m\n    temperature: 3", "agent a: openai.temperature"},
		{"command path", "agents:\n- id: a\n  kind: command\n  command:\n    format: text", "agent a: command.path: required"},
		{"command format", "agents:\n- id: a\n  kind: command\n  command:\n    path: x\n    format: xml", "agent a: command.format"},
		{"failure rate", "agents:\n- id: a\n  kind: scripted\n  scripted:\n    failureRate: 2", "agent a: scripted.failureRate"},
		{"working dir escapes", "agents:\n- id: a\n  kind: scripted\n  workingDirectory: ../x", "agent a: workingDirectory"},
		{"unknown tool", "agents:\n- id: a\n  kind: scripted\n  capabilities:\n    tools: [teleport]", "agent a: capabilities.tools"},
		// Inline secrets, under any name, are refused before anything else.
		{"inline apiKey", "agents:\n- id: a\n  kind: openai\n  openai:\n    model: m\n    apiKey: abc", "agents[0].openai.apiKey (line 6): inline secrets are not allowed"},
		{"inline token", "agents:\n- id: a\n  kind: command\n  command:\n    path: x\n    setEnv:\n      GITHUB_ACCESS_TOKEN: abc", "inline secrets are not allowed"},
		{"authorization header", "agents:\n- id: a\n  kind: openai\n  openai:\n    model: m\n    headers:\n      Authorization: Bearer x", "inline secrets"},
		{"key-like value", "agents:\n- id: a\n  kind: openai\n  description: sk-abcdefghijklmnop1234\n  openai:\n    model: m", "looks like an API key"},
		{"key in apiKeyEnv", "agents:\n- id: a\n  kind: openai\n  openai:\n    model: m\n    apiKeyEnv: sk-abcdefghijklmnopqrst", "looks like an API key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), quietOpts(t))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
	// Several invalid agents: every one is reported.
	_, err := Parse([]byte("agents:\n- id: a\n  kind: x\n- id: b\n  kind: y"), quietOpts(t))
	if err == nil || !strings.Contains(err.Error(), "agent a:") || !strings.Contains(err.Error(), "agent b:") {
		t.Fatalf("error %v", err)
	}
	// Command agents need a sandbox root.
	_, err = Parse([]byte("agents:\n- id: a\n  kind: command\n  command:\n    path: /bin/cat"), Options{})
	if err == nil || !strings.Contains(err.Error(), "sandbox root") {
		t.Fatalf("error %v", err)
	}
}

func TestJSONCatalogue(t *testing.T) {
	c, err := Parse([]byte(`{"agents":[{"id":"s","kind":"scripted","type":"3","scripted":{"chunks":2}}]}`), quietOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	a, info, ok := c.Lookup("s")
	if !ok || info.Type != contract.AgentTypeCustom {
		t.Fatalf("%+v", info)
	}
	var chunks []string
	req := orchestration.AgentRequest{AgentID: "s", PlanID: "p", StepOrder: 1, Attempt: 1, Task: "do it"}
	res, err := a.Run(context.Background(), req, func(s string) { chunks = append(chunks, s) })
	if err != nil || res.Output != orchestration.ScriptedOutput(req) || len(chunks) != 2 || chunks[0]+chunks[1] != res.Output {
		t.Fatalf("%+v %v %q", res, err, chunks)
	}
}
