package farm_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode/client"
	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/internal/testredis"
	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/agents"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/orchestratorchat/hubfarm/orchestration/tools"
)

const agentHub = "/hubs/agent"

// repeater streams its answer in two pieces and then, like Claude's CLI,
// the whole text again (CONTRACT M2).
type repeater struct{}

func (repeater) Run(_ context.Context, req orchestration.AgentRequest, emit func(string)) (orchestration.AgentResult, error) {
	emit("echo: ")
	emit(req.Task)
	emit("echo: " + req.Task)
	return orchestration.AgentResult{}, nil
}

// testAgents is the catalogue of the agent tests.
func testAgents() *orchestration.MemoryCatalog {
	c := orchestration.NewMemoryCatalog()
	add := func(id string, a orchestration.Agent) {
		c.Add(contract.AgentInfo{ID: id, Name: id, Type: contract.AgentTypeCustom, Status: contract.AgentStatusReady}, a)
	}
	add("chunky", &orchestration.Scripted{Chunks: 4})
	add("flaky", &orchestration.Scripted{Chunks: 2, FailAttempts: 1})
	add("slow", &orchestration.Scripted{Chunks: 8, ChunkDelay: 150 * time.Millisecond})
	add("repeater", repeater{})
	return c
}

// agentFarm starts three nodes with the test agents and short job
// intervals; tune may adjust each node further.
func agentFarm(t *testing.T, b testredis.Backend, tune func(i int, c *farm.NodeConfig)) *testFarm {
	i := 0
	return startFarm(t, b, 3, func(c *farm.NodeConfig) {
		c.Agents = testAgents()
		c.Engine = orchestration.Config{VisibilityTimeout: 3 * time.Second, PollInterval: 50 * time.Millisecond,
			BlockTimeout: 100 * time.Millisecond, SchedulerInterval: 20 * time.Millisecond,
			RetryBackoff: 20 * time.Millisecond, RetryBackoffMax: 100 * time.Millisecond}
		if tune != nil {
			tune(i, c)
		}
		i++
	})
}

// agentResponse is a decoded AgentResponseDto.
type agentResponse struct {
	EventID   string `json:"eventId"`
	AgentID   string `json:"agentId"`
	SessionID string `json:"sessionId"`
	Response  struct {
		MessageID  string         `json:"messageId"`
		Content    string         `json:"content"`
		Type       int            `json:"type"`
		IsComplete bool           `json:"isComplete"`
		Metadata   map[string]any `json:"metadata"`
	} `json:"response"`
}

func decodeResponses(t *testing.T, raw []json.RawMessage) []agentResponse {
	t.Helper()
	out := make([]agentResponse, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal(r, &out[i]); err != nil {
			t.Fatalf("decode %s: %v", r, err)
		}
	}
	return out
}

// answerFor returns the chunks and finals of one message (by messageId).
func answerFor(t *testing.T, chunks, finals *recorder, messageID string) (cs, fs []agentResponse) {
	t.Helper()
	for _, c := range decodeResponses(t, chunks.snapshot()) {
		if c.Response.MessageID == messageID {
			cs = append(cs, c)
		}
	}
	for _, f := range decodeResponses(t, finals.snapshot()) {
		if f.Response.MessageID == messageID {
			fs = append(fs, f)
		}
	}
	return cs, fs
}

// watcher records what one connection receives of agent answers.
type watcher struct {
	name                          string
	conn                          *client.Conn
	chunks, finals, errs, status  *recorder
	userMsgs, approvals, complete *recorder
	resolved                      *recorder // ToolApprovalResolved
}

func watch(c *client.Conn, name string) *watcher {
	return &watcher{name: name, conn: c,
		chunks: record(c, contract.TargetReceiveStreamingUpdate), finals: record(c, contract.TargetReceiveAgentResponse),
		errs: record(c, contract.TargetReceiveError), status: record(c, contract.TargetAgentStatusUpdate),
		userMsgs: record(c, contract.TargetAgentMessage), approvals: record(c, contract.TargetToolApprovalRequired),
		complete: record(c, contract.TargetToolExecutionCompleted), resolved: record(c, contract.TargetToolApprovalResolved)}
}

// lastUserMessageID is the id of the last AgentMessage the watcher got.
func (w *watcher) lastUserMessageID(t *testing.T) string {
	t.Helper()
	// Callbacks run on the client's dispatcher, so the AgentMessage sent
	// before the Completion may still be on its way to the handler when
	// Invoke returns.
	waitFor(t, 10*time.Second, w.name+" receives an AgentMessage", func() bool { return len(w.userMsgs.snapshot()) > 0 })
	msgs := w.userMsgs.snapshot()
	var m struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(msgs[len(msgs)-1], &m)
	return m.ID
}

// checkAnswer asserts that w received the answer to messageID exactly
// once: its chunks in order (one attempt), then one final whose content is
// want and equals the chunks joined.
func checkAnswer(t *testing.T, w *watcher, messageID, want string, wantChunks int) agentResponse {
	t.Helper()
	waitFor(t, 20*time.Second, w.name+" receives the final answer", func() bool {
		_, fs := answerFor(t, w.chunks, w.finals, messageID)
		return len(fs) > 0
	})
	cs, fs := answerFor(t, w.chunks, w.finals, messageID)
	if len(fs) != 1 {
		t.Fatalf("%s: %d final answers, want 1", w.name, len(fs))
	}
	f := fs[0]
	if !f.Response.IsComplete || f.Response.Content != want || f.Response.Type != 0 {
		t.Fatalf("%s: final %+v, want complete %q", w.name, f.Response, want)
	}
	if len(cs) != wantChunks {
		t.Fatalf("%s: %d chunks, want %d", w.name, len(cs), wantChunks)
	}
	var joined strings.Builder
	for i, c := range cs {
		if c.Response.IsComplete || c.Response.Type != 0 || c.AgentID == "" || c.SessionID == "" {
			t.Fatalf("%s: chunk %d %+v", w.name, i, c)
		}
		if seq, _ := c.Response.Metadata["sequence"].(float64); int(seq) != i {
			t.Fatalf("%s: chunk %d has sequence %v (out of order or repeated)", w.name, i, c.Response.Metadata["sequence"])
		}
		joined.WriteString(c.Response.Content)
	}
	if wantChunks > 0 && joined.String() != want {
		t.Fatalf("%s: chunks join to %q, want %q", w.name, joined.String(), want)
	}
	return f
}

// TestAgentMessagesAcrossNodes: a message sent through node 1 is answered
// by some worker; session members on all three nodes get every chunk in
// order and the final answer once; an agent subscriber outside the session
// gets them too, a member that also subscribed gets each once, a
// connection in neither group gets nothing; the answer is in the history;
// the next message carries the conversation; a repeated last chunk is
// dropped; a failing first attempt is retried; an unknown agent is
// refused with AGENT_NOT_FOUND.
func TestAgentMessagesAcrossNodes(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := agentFarm(t, b, nil)
		alice := watch(dial(t, f.nodes[0].URL(), agentHub, "alice"), "alice")
		bob := watch(dial(t, f.nodes[1].URL(), agentHub, "bob"), "bob")
		carol := watch(dial(t, f.nodes[2].URL(), agentHub, "carol"), "carol")
		dave := watch(dial(t, f.nodes[1].URL(), agentHub, "dave"), "dave") // subscriber only
		eve := watch(dial(t, f.nodes[2].URL(), agentHub, "eve"), "eve")    // in neither group

		sid := createSession(t, alice.conn, "agents")
		invoke(t, bob.conn, nil, "JoinSession", sid)
		invoke(t, carol.conn, nil, "JoinSession", sid)
		for _, w := range []*watcher{bob, dave} {
			invoke(t, w.conn, nil, "SubscribeToAgent", "chunky")
			waitFor(t, 10*time.Second, w.name+" gets the agent's status", func() bool { return len(w.status.snapshot()) == 1 })
		}
		var st contract.AgentStatusDto
		_ = json.Unmarshal(dave.status.snapshot()[0], &st)
		if st.AgentID != "chunky" || st.Status != contract.AgentStatusReady {
			t.Fatalf("status on subscribe: %+v", st)
		}

		var agents []contract.AgentInfo
		invoke(t, carol.conn, &agents, "GetAgents")
		if len(agents) != 4 || agents[0].ID != "chunky" {
			t.Fatalf("GetAgents: %+v", agents)
		}

		cmd := "cmd-1"
		invoke(t, alice.conn, nil, "SendAgentMessage", contract.AgentMessageRequest{
			AgentID: "chunky", SessionID: sid, Content: "hello", CommandID: &cmd})
		mid := alice.lastUserMessageID(t)
		for _, w := range []*watcher{alice, bob, carol, dave} {
			fin := checkAnswer(t, w, mid, "chunky: hello", 4)
			if fin.Response.Metadata["CommandId"] != cmd {
				t.Fatalf("%s: final metadata %v lacks CommandId", w.name, fin.Response.Metadata)
			}
			cs, _ := answerFor(t, w.chunks, w.finals, mid)
			for _, c := range cs {
				if c.Response.Metadata["CommandId"] != cmd || c.Response.Metadata["attempt"] != 1.0 {
					t.Fatalf("%s: chunk metadata %v", w.name, c.Response.Metadata)
				}
			}
		}
		// The subscriber sees the agent busy, then ready.
		waitFor(t, 10*time.Second, "dave sees Busy then Ready", func() bool { return len(dave.status.snapshot()) >= 3 })
		var seq []contract.AgentStatus
		for _, raw := range dave.status.snapshot() {
			_ = json.Unmarshal(raw, &st)
			seq = append(seq, st.Status)
		}
		if seq[1] != contract.AgentStatusBusy || seq[len(seq)-1] != contract.AgentStatusReady {
			t.Fatalf("status sequence %v", seq)
		}

		// The user message and the whole answer are in the history.
		var hist []contract.HistoryEvent
		invoke(t, carol.conn, &hist, "GetSessionHistory", sid, nil, nil)
		var gotUser, gotAnswer bool
		for _, ev := range hist {
			switch ev.Target {
			case contract.TargetAgentMessage:
				gotUser = gotUser || strings.Contains(string(ev.Payload), `"content":"hello"`)
			case contract.TargetReceiveAgentResponse:
				var r agentResponse
				_ = json.Unmarshal(ev.Payload, &r)
				gotAnswer = gotAnswer || (r.Response.MessageID == mid && r.Response.Content == "chunky: hello" && r.Response.IsComplete)
			case contract.TargetReceiveStreamingUpdate:
				t.Fatal("a chunk was recorded in the history")
			}
		}
		if !gotUser || !gotAnswer {
			t.Fatalf("history lacks the message (%v) or the answer (%v): %d events", gotUser, gotAnswer, len(hist))
		}

		// The next message carries the conversation (the agent is stateless).
		invoke(t, bob.conn, nil, "SendAgentMessage", contract.AgentMessageRequest{AgentID: "chunky", SessionID: sid, Content: "again"})
		waitFor(t, 10*time.Second, "the second user message", func() bool { return len(carol.userMsgs.snapshot()) == 2 })
		mid2 := carol.lastUserMessageID(t)
		checkAnswer(t, carol, mid2, "chunky: again [after 2 messages]", 4)

		// A last chunk that repeats the whole text is dropped.
		invoke(t, alice.conn, nil, "SendAgentMessage", contract.AgentMessageRequest{AgentID: "repeater", SessionID: sid, Content: "hi"})
		waitFor(t, 10*time.Second, "the third user message", func() bool { return len(carol.userMsgs.snapshot()) == 3 })
		checkAnswer(t, carol, carol.lastUserMessageID(t), "echo: hi", 2)

		// A failed first attempt is retried; the answer comes once, from
		// attempt 2, with no error.
		invoke(t, carol.conn, nil, "SendAgentMessage", contract.AgentMessageRequest{AgentID: "flaky", SessionID: sid, Content: "try"})
		waitFor(t, 10*time.Second, "the fourth user message", func() bool { return len(bob.userMsgs.snapshot()) == 4 })
		fin := checkAnswer(t, bob, bob.lastUserMessageID(t), "flaky: try [after 6 messages]", 2)
		if fin.Response.Metadata["attempt"] != 2.0 {
			t.Fatalf("retried answer metadata %v", fin.Response.Metadata)
		}

		// Unknown agent: ReceiveError AGENT_NOT_FOUND to the caller; the
		// call itself completes.
		invoke(t, alice.conn, nil, "SendAgentMessage", contract.AgentMessageRequest{AgentID: "ghost", SessionID: sid, Content: "boo"})
		waitFor(t, 10*time.Second, "ReceiveError", func() bool { return len(alice.errs.snapshot()) == 1 })
		var er contract.ErrorResponse
		_ = json.Unmarshal(alice.errs.snapshot()[0], &er)
		if er.Code != contract.CodeAgentNotFound || er.AgentID == nil || *er.AgentID != "ghost" {
			t.Fatalf("ReceiveError %+v", er)
		}
		for _, w := range []*watcher{alice, bob, carol} {
			if n := len(w.errs.snapshot()); n > 1 || (w != alice && n != 0) {
				t.Fatalf("%s received %d errors", w.name, n)
			}
		}
		// Dave watches chunky only; eve nothing at all.
		if n := len(dave.finals.snapshot()); n != 2 {
			t.Fatalf("dave received %d answers, want chunky's 2", n)
		}
		for _, r := range []*recorder{eve.chunks, eve.finals, eve.errs, eve.userMsgs} {
			if n := len(r.snapshot()); n != 0 {
				t.Fatalf("eve, in neither group, received %d callbacks", n)
			}
		}
	}, testredis.WithCluster())
}

// TestStreamAgentMessage: StreamAgentMessage returns the chunks and then
// the complete answer as stream items and completes; session members on
// other nodes get the usual callbacks. Cancelling the stream stops the
// agent: the session gets the partial answer marked cancelled, and no
// further chunks.
func TestStreamAgentMessage(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := agentFarm(t, b, nil)
		alice := watch(dial(t, f.nodes[0].URL(), agentHub, "alice"), "alice")
		bob := watch(dial(t, f.nodes[1].URL(), agentHub, "bob"), "bob")
		sid := createSession(t, alice.conn, "stream")
		invoke(t, bob.conn, nil, "JoinSession", sid)

		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		s, err := alice.conn.Stream(ctx, "StreamAgentMessage", contract.AgentMessageRequest{AgentID: "chunky", SessionID: sid, Content: "stream me"})
		if err != nil {
			t.Fatal(err)
		}
		var items []contract.AgentResponse
		for {
			raw, err := s.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			var r contract.AgentResponse
			_ = json.Unmarshal(raw, &r)
			items = append(items, r)
		}
		if len(items) != 5 || !items[4].IsComplete || items[4].Content != "chunky: stream me" {
			t.Fatalf("stream items %+v", items)
		}
		var joined string
		for _, it := range items[:4] {
			if it.IsComplete || it.MessageID != items[4].MessageID {
				t.Fatalf("stream chunk %+v", it)
			}
			joined += it.Content
		}
		if joined != items[4].Content {
			t.Fatalf("stream chunks join to %q", joined)
		}
		checkAnswer(t, bob, items[4].MessageID, "chunky: stream me", 4)
		// The caller has the stream: no chunk callbacks for it.
		if cs, _ := answerFor(t, alice.chunks, alice.finals, items[4].MessageID); len(cs) != 0 {
			t.Fatalf("the streaming caller also got %d chunk callbacks", len(cs))
		}

		// Cancel after the first item of a slow answer.
		s, err = alice.conn.Stream(ctx, "StreamAgentMessage", contract.AgentMessageRequest{AgentID: "slow", SessionID: sid, Content: "take your time"})
		if err != nil {
			t.Fatal(err)
		}
		raw, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("first item: %v", err)
		}
		var first contract.AgentResponse
		_ = json.Unmarshal(raw, &first)
		if err := s.Cancel(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Next(ctx); !errors.Is(err, client.ErrStreamCanceled) {
			t.Fatalf("Next after Cancel: %v", err)
		}
		waitFor(t, 10*time.Second, "the cancelled answer reaches bob", func() bool {
			_, fs := answerFor(t, bob.chunks, bob.finals, first.MessageID)
			return len(fs) == 1
		})
		cs, fs := answerFor(t, bob.chunks, bob.finals, first.MessageID)
		if fs[0].Response.Metadata["cancelled"] != true || len(cs) >= 8 {
			t.Fatalf("cancelled answer: %d chunks, final %+v", len(cs), fs[0].Response)
		}
		// Its status returns to Ready.
		waitFor(t, 10*time.Second, "slow is Ready again", func() bool {
			var agents []contract.AgentInfo
			invoke(t, bob.conn, &agents, "GetAgents")
			for _, a := range agents {
				if a.ID == "slow" {
					return a.Status == contract.AgentStatusReady
				}
			}
			return false
		})
	})
}

// toolResult is what an ExecuteTool call ended with.
type toolResult struct {
	resp contract.ToolExecutionResponse
	err  error
}

func executeTool(c *client.Conn, req contract.ToolExecutionRequest) <-chan toolResult {
	ch := make(chan toolResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var r contract.ToolExecutionResponse
		err := c.InvokeInto(ctx, &r, "ExecuteTool", req)
		ch <- toolResult{r, err}
	}()
	return ch
}

// TestToolApprovalAcrossNodes: a write_file call waits for approval; the
// request reaches a session member on another node; an approval given
// through a third node releases it and the file is written. A denial and
// a timeout each end with success false and a reason, and write nothing.
// Each ending (approved, denied, timed out) reaches every member on every
// node, either hub, as one ToolApprovalResolved with the approval id, and
// is in the history. An outsider may not decide. The caller's connection
// keeps serving while its call waits.
func TestToolApprovalAcrossNodes(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		root := t.TempDir()
		f := agentFarm(t, b, func(i int, c *farm.NodeConfig) {
			c.ToolsRoot = root
			c.ToolPolicy.ApprovalTimeout = 20 * time.Second
			if i == 1 {
				c.ToolPolicy.ApprovalTimeout = time.Second // the timeout case calls through node 2
			}
		})
		alice := watch(dial(t, f.nodes[0].URL(), agentHub, "alice"), "alice")
		bob := watch(dial(t, f.nodes[1].URL(), agentHub, "bob"), "bob")
		carol := dial(t, f.nodes[2].URL(), "/hubs/orchestrator", "carol")
		carolResolved := record(carol, contract.TargetToolApprovalResolved)
		eve := dial(t, f.nodes[2].URL(), agentHub, "eve")
		eveResolved := record(eve, contract.TargetToolApprovalResolved)
		var created contract.SessionCreatedResponse
		invoke(t, alice.conn, &created, "CreateSession", contract.CreateSessionRequest{Name: "tools", WorkingDirectory: "proj"})
		sid := created.SessionID
		invoke(t, bob.conn, nil, "JoinSession", sid)
		invoke(t, carol, nil, "JoinSession", sid)
		path := func(name string) string { return filepath.Join(root, "proj", name) }
		exists := func(name string) bool { _, err := os.Stat(path(name)); return err == nil }
		write := func(name string) contract.ToolExecutionRequest {
			return contract.ToolExecutionRequest{AgentID: "chunky", SessionID: sid, ToolName: tools.ToolWriteFile,
				Parameters: contract.Map{"file_path": name, "content": "approved content"}}
		}
		// resolution waits for the n-th ToolApprovalResolved at each member
		// and checks that all got the same one, for approval id.
		resolution := func(n int, id string) contract.ToolApprovalResolution {
			t.Helper()
			var first contract.ToolApprovalResolution
			for i, r := range []*recorder{alice.resolved, bob.resolved, carolResolved} {
				waitFor(t, 10*time.Second, "ToolApprovalResolved", func() bool { return len(r.snapshot()) >= n })
				if got := len(r.snapshot()); got != n {
					t.Fatalf("member %d: %d ToolApprovalResolved, want %d", i, got, n)
				}
				var res contract.ToolApprovalResolution
				if err := json.Unmarshal(r.snapshot()[n-1], &res); err != nil {
					t.Fatal(err)
				}
				if res.ID != id || res.SessionID != sid || res.ToolName != tools.ToolWriteFile || res.AgentID != "chunky" {
					t.Fatalf("member %d: ToolApprovalResolved %+v for approval %s", i, res, id)
				}
				if i == 0 {
					first = res
				} else if res != first {
					t.Fatalf("members got different resolutions: %+v, %+v", first, res)
				}
			}
			return first
		}
		pending := func(w *watcher, n int) contract.ToolApprovalRequest {
			t.Helper()
			waitFor(t, 10*time.Second, w.name+" receives ToolApprovalRequired", func() bool { return len(w.approvals.snapshot()) >= n })
			var req contract.ToolApprovalRequest
			_ = json.Unmarshal(w.approvals.snapshot()[n-1], &req)
			return req
		}

		// Approved through node 3 by a member who holds an
		// OrchestratorHub connection.
		done := executeTool(alice.conn, write("a.txt"))
		req := pending(bob, 1)
		if req.ToolName != "write_file" || req.SessionID != sid || req.AgentID != "chunky" || !req.IsDangerous {
			t.Fatalf("ToolApprovalRequired %+v", req)
		}
		if got := pending(alice, 1); got.ID != req.ID {
			t.Fatalf("caller got approval %s, member %s", got.ID, req.ID)
		}
		if exists("a.txt") {
			t.Fatal("the file was written before the approval")
		}
		var agents []contract.AgentInfo
		invoke(t, alice.conn, &agents, "GetAgents") // the waiting connection still serves
		invoke(t, carol, &agents, "GetAgents")      // on the OrchestratorHub too
		if len(agents) != 4 {
			t.Fatalf("GetAgents on the OrchestratorHub: %+v", agents)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := eve.InvokeInto(ctx, nil, "ApproveTool", req.ID, true, nil); err == nil || !strings.Contains(err.Error(), "FORBIDDEN") {
			t.Fatalf("an outsider's ApproveTool: %v", err)
		}
		// The contract's two-argument form: without a reason the store
		// records a default one; the denial below gives its own.
		invoke(t, carol, nil, "ApproveTool", req.ID, true)
		if res := resolution(1, req.ID); !res.Approved || res.Outcome != "approved" || res.DecidedBy != "carol" || res.Reason != "approved by carol" {
			t.Fatalf("approved resolution %+v", res)
		}
		r := <-done
		if r.err != nil || !r.resp.Success {
			t.Fatalf("approved ExecuteTool: %+v %v", r.resp, r.err)
		}
		if b, err := os.ReadFile(path("a.txt")); err != nil || string(b) != "approved content" {
			t.Fatalf("approved write: %q %v", b, err)
		}
		waitFor(t, 10*time.Second, "ToolExecutionCompleted", func() bool { return len(alice.complete.snapshot()) == 1 })
		if err := carol.InvokeInto(ctx, nil, "ApproveTool", req.ID, false, nil); err == nil || !strings.Contains(err.Error(), "CONFLICT") {
			t.Fatalf("a second decision: %v", err)
		}

		// Denied.
		done = executeTool(alice.conn, write("b.txt"))
		req = pending(bob, 2)
		invoke(t, bob.conn, nil, "ApproveTool", req.ID, false, "not today")
		if res := resolution(2, req.ID); res.Approved || res.Outcome != "denied" || res.DecidedBy != "bob" || res.Reason != "not today" {
			t.Fatalf("denied resolution %+v", res)
		}
		r = <-done
		if r.err != nil || r.resp.Success || r.resp.Error == nil || !strings.Contains(*r.resp.Error, "not today") {
			t.Fatalf("denied ExecuteTool: %+v %v", r.resp, r.err)
		}
		if exists("b.txt") {
			t.Fatal("a denied write ran")
		}

		// Nobody decides: the call times out (node 2's policy) and denies.
		done = executeTool(bob.conn, write("c.txt"))
		req = pending(alice, 3)
		if res := resolution(3, req.ID); res.Approved || res.Outcome != "timed_out" || res.DecidedBy != "timeout" {
			t.Fatalf("timed-out resolution %+v", res)
		}
		r = <-done
		if r.err != nil || r.resp.Success || r.resp.Error == nil || !strings.Contains(*r.resp.Error, "timed out") {
			t.Fatalf("timed-out ExecuteTool: %+v %v", r.resp, r.err)
		}
		if exists("c.txt") {
			t.Fatal("a write nobody approved ran")
		}

		// The caller leaves while its call waits: the others learn that
		// the approval is over.
		leaver := dial(t, f.nodes[0].URL(), agentHub, "alice")
		executeTool(leaver, write("d.txt"))
		req = pending(bob, 4)
		if err := leaver.Close(); err != nil {
			t.Fatal(err)
		}
		if res := resolution(4, req.ID); res.Approved || res.Outcome != "cancelled" || res.DecidedBy != "cancelled" {
			t.Fatalf("resolution after the caller left %+v", res)
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel2()
		if err := bob.conn.InvokeInto(ctx2, nil, "ApproveTool", req.ID, true, nil); err == nil || !strings.Contains(err.Error(), "CONFLICT") {
			t.Fatalf("approving a cancelled approval: %v", err)
		}
		if exists("d.txt") {
			t.Fatal("the write of a caller that left ran")
		}

		// A read needs no approval.
		r = <-executeTool(bob.conn, contract.ToolExecutionRequest{AgentID: "chunky", SessionID: sid, ToolName: "read_file",
			Parameters: contract.Map{"file_path": "a.txt"}})
		if r.err != nil || !r.resp.Success || r.resp.Output == nil || *r.resp.Output != "approved content" {
			t.Fatalf("read_file: %+v %v", r.resp, r.err)
		}
		if n := len(bob.approvals.snapshot()); n != 4 {
			t.Fatalf("%d approval requests, want 4 (none for the read)", n)
		}
		if n := len(bob.resolved.snapshot()); n != 4 {
			t.Fatalf("%d resolutions, want 4 (none for the read)", n)
		}
		if n := len(eveResolved.snapshot()); n != 0 {
			t.Fatalf("an outsider received %d resolutions", n)
		}
		// The history holds each request followed by its resolution.
		var hist []contract.HistoryEvent
		invoke(t, carol, &hist, "GetSessionHistory", sid, nil, nil)
		var seq []string
		for _, ev := range hist {
			var x struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(ev.Payload, &x)
			switch ev.Target {
			case contract.TargetToolApprovalRequired:
				seq = append(seq, "asked:"+x.ID)
			case contract.TargetToolApprovalResolved:
				seq = append(seq, "resolved:"+x.ID)
			}
		}
		if len(seq) != 8 {
			t.Fatalf("history of approvals: %v", seq)
		}
		for i := 0; i < len(seq); i += 2 {
			if id := strings.TrimPrefix(seq[i], "asked:"); seq[i+1] != "resolved:"+id {
				t.Fatalf("history of approvals: %v", seq)
			}
		}
	}, testredis.WithCluster())
}

// TestAgentAnswersOnSecuredFarm: with authentication, an agent subscriber
// gets the answers of the sessions its user belongs to and no other's; an
// outsider may not send to a session, nor stream from it.
func TestAgentAnswersOnSecuredFarm(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := securedFarm(t, b, 2, func(c *farm.NodeConfig) { c.Agents = testAgents() })
		url := func(i int) string { return f.nodes[i].URL() + agentHub }
		alice := watch(mustDialAs(t, url(0), token(t, "alice", time.Hour, nil)), "alice")
		bob := watch(mustDialAs(t, url(1), token(t, "bob", time.Hour, nil)), "bob")
		mallory := watch(mustDialAs(t, url(1), token(t, "mallory", time.Hour, nil)), "mallory")
		sid := createSession(t, alice.conn, "private")
		invoke(t, alice.conn, nil, "InviteToSession", sid, "bob")
		invoke(t, bob.conn, nil, "JoinSession", sid)
		for _, w := range []*watcher{bob, mallory} {
			invoke(t, w.conn, nil, "SubscribeToAgent", "chunky")
		}

		invoke(t, alice.conn, nil, "SendAgentMessage", contract.AgentMessageRequest{AgentID: "chunky", SessionID: sid, Content: "secret"})
		mid := alice.lastUserMessageID(t)
		checkAnswer(t, alice, mid, "chunky: secret", 4)
		checkAnswer(t, bob, mid, "chunky: secret", 4)
		// A round trip on mallory's connection: anything queued for it
		// before bob's answer would have arrived by now.
		var agents []contract.AgentInfo
		invoke(t, mallory.conn, &agents, "GetAgents")
		if n, m := len(mallory.chunks.snapshot()), len(mallory.finals.snapshot()); n != 0 || m != 0 {
			t.Fatalf("a subscriber outside the session received %d chunks and %d answers", n, m)
		}
		if len(mallory.status.snapshot()) == 0 {
			t.Fatal("the subscriber got no status update")
		}

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req := contract.AgentMessageRequest{AgentID: "chunky", SessionID: sid, Content: "let me in"}
		if err := mallory.conn.InvokeInto(ctx, nil, "SendAgentMessage", req); err == nil || !strings.Contains(err.Error(), "FORBIDDEN") {
			t.Fatalf("an outsider's SendAgentMessage: %v", err)
		}
		s, err := mallory.conn.Stream(ctx, "StreamAgentMessage", req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Next(ctx); err == nil || !strings.Contains(err.Error(), "FORBIDDEN") {
			t.Fatalf("an outsider's StreamAgentMessage: %v", err)
		}
		if n := len(alice.userMsgs.snapshot()); n != 1 {
			t.Fatalf("the session got %d user messages, want 1", n)
		}
	})
}

// TestCommandAgentWorksInTheSessionDirectory: a command agent (a real
// process printing its working directory) answers a message and runs a
// plan step in the session's working directory under the sandbox root,
// whichever node's worker runs it; a session whose directory escapes the
// root gets PROCESSING_ERROR ("access denied") and nothing runs.
func TestCommandAgentWorksInTheSessionDirectory(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		root := t.TempDir()
		catalog, err := agents.Parse([]byte(`agents:
  - id: where
    kind: command
    command:
      path: /bin/sh
      args: ["-c", "cat >/dev/null; pwd; touch ran"]
`), agents.Options{SandboxRoot: root})
		if err != nil {
			t.Fatal(err)
		}
		f := agentFarm(t, b, func(i int, c *farm.NodeConfig) {
			c.Agents = catalog
			c.ToolsRoot = root
			c.NoWorkers = i == 0 // the answers and steps run on nodes 2 and 3
		})
		real, err := filepath.EvalSymlinks(root)
		if err != nil {
			t.Fatal(err)
		}
		want := filepath.Join(real, "proj", "alpha") + "\n"
		alice := watch(dial(t, f.nodes[0].URL(), agentHub, "alice"), "alice")
		bob := watch(dial(t, f.nodes[1].URL(), agentHub, "bob"), "bob")
		plans := dial(t, f.nodes[0].URL(), "/hubs/orchestrator", "alice")
		completed := record(plans, contract.TargetOrchestrationCompleted)
		var created contract.SessionCreatedResponse
		invoke(t, alice.conn, &created, "CreateSession", contract.CreateSessionRequest{Name: "cli", WorkingDirectory: "proj/alpha"})
		sid := created.SessionID
		invoke(t, bob.conn, nil, "JoinSession", sid)

		invoke(t, alice.conn, nil, "SendAgentMessage", contract.AgentMessageRequest{AgentID: "where", SessionID: sid, Content: "pwd?"})
		checkAnswer(t, bob, alice.lastUserMessageID(t), want, 1)
		if _, err := os.Stat(filepath.Join(root, "proj", "alpha", "ran")); err != nil {
			t.Fatalf("the agent left nothing in the session directory: %v", err)
		}

		var plan contract.OrchestrationPlan
		invoke(t, plans, &plan, "CreateOrchestrationPlan", contract.CreatePlanRequest{SessionID: sid, Goal: "say where",
			Strategy: contract.StrategySequential, AvailableAgentIDs: []string{"where"}, MaxSteps: 1})
		invoke(t, plans, nil, "ExecutePlan", plan.ID)
		waitFor(t, 20*time.Second, "OrchestrationCompleted", func() bool { return len(completed.snapshot()) == 1 })
		var res contract.OrchestrationResult
		_ = json.Unmarshal(completed.snapshot()[0], &res)
		if !res.Success || len(res.StepResults) != 1 || res.StepResults[0].Output != want {
			t.Fatalf("plan step: %+v, want output %q", res, want)
		}

		// A session directory outside the root is refused.
		invoke(t, alice.conn, &created, "CreateSession", contract.CreateSessionRequest{Name: "escape", WorkingDirectory: "../outside"})
		invoke(t, alice.conn, nil, "SendAgentMessage", contract.AgentMessageRequest{AgentID: "where", SessionID: created.SessionID, Content: "pwd?"})
		waitFor(t, 20*time.Second, "ReceiveError", func() bool { return len(alice.errs.snapshot()) == 1 })
		var er contract.ErrorResponse
		_ = json.Unmarshal(alice.errs.snapshot()[0], &er)
		if er.Code != contract.CodeProcessingError || !strings.Contains(er.Error, "access denied") {
			t.Fatalf("escaping session: %+v", er)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(real), "outside")); err == nil {
			t.Fatal("a directory was created outside the root")
		}
	})
}
