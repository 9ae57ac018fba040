package orchestration

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// Scripted is the built-in deterministic agent kind (DESIGN decision 9),
// for demos, tests and load tests. Its output depends only on the request
// (see ScriptedOutput), so runs are repeatable.
type Scripted struct {
	// Delay is how long a call takes (0 = none); it ends early, with the
	// context's error, when ctx is done.
	Delay time.Duration
	// Chunks is how many pieces the output is streamed in (default 1).
	Chunks int
	// ChunkDelay is a pause before each chunk after the first (0 = none),
	// so streaming is visible in demos and can be cancelled mid-answer in
	// tests; it ends early, with the context's error, when ctx is done.
	ChunkDelay time.Duration
	// FailureRate in [0,1] is the share of attempts that fail. Whether an
	// attempt fails is a pure function of plan id, step, attempt and agent
	// id, so a run can be repeated exactly.
	FailureRate float64
	// FailAttempts makes the first N attempts of every step fail (retry
	// tests).
	FailAttempts int
	// AdaptivePlan, when set, is returned verbatim as the output of
	// Adaptive's analysis step (step 1 of an Adaptive plan): a JSON plan
	// that replaces the template, or any text to exercise the fallback.
	AdaptivePlan string
}

// ErrScriptedFailure is the error of an attempt Scripted chose to fail.
var ErrScriptedFailure = errors.New("scripted failure")

// Run implements Agent.
func (s *Scripted) Run(ctx context.Context, req AgentRequest, emit func(chunk string)) (AgentResult, error) {
	if s.Delay > 0 && !sleep(ctx, s.Delay) {
		return AgentResult{}, ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		return AgentResult{}, err
	}
	if req.Attempt <= s.FailAttempts || (s.FailureRate > 0 && scriptedRoll(req) < s.FailureRate) {
		if req.MessageID != "" {
			return AgentResult{}, fmt.Errorf("%w (agent %s, message %s, attempt %d)", ErrScriptedFailure, req.AgentID, req.MessageID, req.Attempt)
		}
		return AgentResult{}, fmt.Errorf("%w (agent %s, step %d, attempt %d)", ErrScriptedFailure, req.AgentID, req.StepOrder, req.Attempt)
	}
	out := ScriptedOutput(req)
	if s.AdaptivePlan != "" && req.Strategy == contract.StrategyAdaptive && req.StepOrder == 1 {
		out = s.AdaptivePlan
	}
	n := max(s.Chunks, 1)
	size := (len(out) + n - 1) / n
	for i := 0; i < n && size > 0; i++ {
		lo := min(i*size, len(out))
		hi := min(lo+size, len(out))
		if lo >= hi {
			break
		}
		if i > 0 && s.ChunkDelay > 0 && !sleep(ctx, s.ChunkDelay) {
			return AgentResult{}, ctx.Err()
		}
		emit(out[lo:hi])
	}
	return AgentResult{Output: out, OutputData: contract.Map{"kind": "scripted"}}, nil
}

// ScriptedOutput is the output Scripted gives for req: the agent, its task
// and a digest of each previous output, in dependency order, so tests can
// check that outputs fed the dependants. A conversation turn that carries
// earlier messages says how many, so tests can check that the job carried
// the conversation.
func ScriptedOutput(req AgentRequest) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", req.AgentID, req.Task)
	if req.MessageID != "" && len(req.Messages) > 1 {
		fmt.Fprintf(&b, " [after %d messages]", len(req.Messages)-1)
	}
	orders := make([]string, 0, len(req.PreviousOutputs))
	for o := range req.PreviousOutputs {
		orders = append(orders, o)
	}
	slices.SortFunc(orders, func(a, b string) int {
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return x - y
	})
	for _, o := range orders {
		fmt.Fprintf(&b, " [after step %s: %s]", o, Digest(req.PreviousOutputs[o]))
	}
	return b.String()
}

// Digest is a short stable fingerprint of a text.
func Digest(s string) string {
	h := fnv.New64a()
	h.Write([]byte(s))
	return strconv.FormatUint(h.Sum64(), 16)
}

// scriptedRoll maps a request to a deterministic number in [0,1): a plan
// step is keyed by its plan id, a conversation turn by its message id.
func scriptedRoll(req AgentRequest) float64 {
	h := fnv.New64a()
	key := req.PlanID
	if key == "" {
		key = req.MessageID
	}
	fmt.Fprintf(h, "%s|%d|%d|%s", key, req.StepOrder, req.Attempt, req.AgentID)
	return float64(h.Sum64()>>11) / float64(1<<53)
}
