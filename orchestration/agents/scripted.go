package agents

import (
	"context"

	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// scriptedBackend adapts the engine's built-in Scripted agent. Plan steps
// go to Scripted.Run unchanged (its output and failures depend on the plan
// id, step and attempt, which a conversation turn does not have);
// conversation turns answer the last user message.
type scriptedBackend struct{ s *orchestration.Scripted }

// Run implements orchestration.Agent.
func (b *scriptedBackend) Run(ctx context.Context, req orchestration.AgentRequest, emit func(string)) (orchestration.AgentResult, error) {
	return b.s.Run(ctx, req, emit)
}

// Chat implements Backend.
func (b *scriptedBackend) Chat(ctx context.Context, req Request, emit func(Chunk)) (Result, error) {
	task := ""
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == contract.MessageRoleUser {
			task = req.Messages[i].Content
			break
		}
	}
	_, err := b.s.Run(ctx, orchestration.AgentRequest{AgentID: req.AgentID, SessionID: req.SessionID,
		PlanID: req.MessageID, StepOrder: 1, Attempt: 1, Task: task, WorkingDirectory: req.WorkingDirectory},
		func(c string) { emit(Chunk{Content: c}) })
	if err != nil {
		return Result{}, err
	}
	return Result{FinishReason: "stop", Model: KindScripted}, nil
}
