// Package agents provides the agent kinds of DESIGN decision 9 and the
// agent catalogue loaded from a file at start.
//
// Kinds:
//
//   - scripted: the engine's built-in deterministic agent
//     (orchestration.Scripted), for demos, tests and load tests.
//   - command: runs a configured program per message, with the
//     conversation on stdin as JSON lines and its answer streamed from
//     stdout (plain lines, or JSON lines with usage and tool calls), in the
//     session's directory under the sandbox root, in its own process group
//     (a timeout or cancellation kills the whole group).
//   - openai: an OpenAI-compatible /v1/chat/completions endpoint with
//     stream: true, parsed as server-sent events, with retries on 429 and
//     5xx before any output, usage, and tool calls mapped onto the
//     sandbox tools' names (returned, not executed).
//
// Every agent is an [*Agent]: it implements orchestration.Agent for plan
// steps (the step becomes one user message, see [StepPrompt]) and offers
// [Agent.Chat] for conversation turns. Both de-duplicate a final chunk
// that repeats the whole answer (DESIGN decision 3).
//
// Secrets never appear in the catalogue: API keys are named by
// environment variable (apiKeyEnv), read per call, and never logged or put
// in errors; a command inherits only the variables it names.
package agents
