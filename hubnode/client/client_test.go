package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/orchestratorchat/hubfarm/hubnode/protocol"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// dial connects and registers Close as cleanup.
func dial(t *testing.T, url string, opts Options) *Conn {
	t.Helper()
	c, err := Dial(testCtx(t), url, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitDone(t *testing.T, c *Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(waitTimeout):
		t.Fatal("connection did not stop")
	}
}

// recorder collects callback values safely.
type recorder[T any] struct {
	mu   sync.Mutex
	vals []T
}

func (r *recorder[T]) add(v T) {
	r.mu.Lock()
	r.vals = append(r.vals, v)
	r.mu.Unlock()
}

func (r *recorder[T]) get() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.vals)
}

func (r *recorder[T]) len() int { return len(r.get()) }

func TestDialNegotiatesAndInvokes(t *testing.T) {
	s := newFakeServer(t)
	var tokenCalls atomic.Int32
	c := dial(t, s.url, Options{
		Header: http.Header{"X-Custom": {"v"}},
		AccessToken: func() (string, error) {
			tokenCalls.Add(1)
			return "tok123", nil
		},
	})
	fc := s.nextConn(t)

	if got := c.ConnectionID(); got != "cid-1" {
		t.Errorf("ConnectionID = %q, want cid-1", got)
	}
	s.mu.Lock()
	neg, up := s.negotiateReqs[0], s.upgradeReqs[0]
	s.mu.Unlock()
	if neg.Method != http.MethodPost || neg.URL.Path != "/hub/negotiate" || neg.URL.RawQuery != "negotiateVersion=1" {
		t.Errorf("negotiate request = %s %s", neg.Method, neg.URL)
	}
	if neg.ContentLength != 0 {
		t.Errorf("negotiate body length %d, want 0", neg.ContentLength)
	}
	for name, want := range map[string]string{
		"X-Requested-With": "XMLHttpRequest",
		"Authorization":    "Bearer tok123",
		"X-Custom":         "v",
	} {
		if got := neg.Header.Get(name); got != want {
			t.Errorf("negotiate %s = %q, want %q", name, got, want)
		}
	}
	if up.URL.Path != "/hub" || up.URL.RawQuery != "id=tok-1" {
		t.Errorf("upgrade request URL = %s, want /hub?id=tok-1", up.URL)
	}
	if got := up.Header.Get("Authorization"); got != "Bearer tok123" {
		t.Errorf("upgrade Authorization = %q", got)
	}
	if got := up.Header.Get("X-Custom"); got != "v" {
		t.Errorf("upgrade X-Custom = %q", got)
	}
	if n := tokenCalls.Load(); n != 2 {
		t.Errorf("access token factory called %d times, want 2 (negotiate and upgrade)", n)
	}
	if hs := <-fc.frames; hs != "{\"protocol\":\"json\",\"version\":1}\u001e" {
		t.Errorf("handshake = %q", hs)
	}

	ctx := testCtx(t)
	res, err := c.Invoke(ctx, "Add", 40, 2)
	if err != nil || string(res) != "42" {
		t.Fatalf("Invoke(Add, 40, 2) = %s, %v", res, err)
	}
	if f := fc.waitFrame(t, `"Add"`); f != "{\"type\":1,\"invocationId\":\"0\",\"target\":\"Add\",\"arguments\":[40,2]}\u001e" {
		t.Errorf("invocation frame = %q", f)
	}
	var sum int
	if err := c.InvokeInto(ctx, &sum, "Add", 1, 2, 3); err != nil || sum != 6 {
		t.Fatalf("InvokeInto(Add, 1, 2, 3) = %d, %v", sum, err)
	}
	if f := fc.waitFrame(t, `"Add"`); !strings.Contains(f, `"invocationId":"1"`) {
		t.Errorf("second invocation should use id 1: %q", f)
	}
}

func TestURLs(t *testing.T) {
	tests := []struct {
		hub, negotiate, ws string
	}{
		{"http://h/hub", "http://h/hub/negotiate?negotiateVersion=1", "ws://h/hub?id=T"},
		{"http://h/hub/", "http://h/hub/negotiate?negotiateVersion=1", "ws://h/hub/?id=T"},
		{"https://h/hub?tenant=a", "https://h/hub/negotiate?tenant=a&negotiateVersion=1", "wss://h/hub?tenant=a&id=T"},
		{"ws://h:8080/hub", "http://h:8080/hub/negotiate?negotiateVersion=1", "ws://h:8080/hub?id=T"},
		{"wss://h/hub?negotiateVersion=0", "https://h/hub/negotiate?negotiateVersion=0", "wss://h/hub?negotiateVersion=0&id=T"},
	}
	for _, tt := range tests {
		if got, err := negotiateURL(tt.hub, 1); err != nil || got != tt.negotiate {
			t.Errorf("negotiateURL(%q) = %q, %v; want %q", tt.hub, got, err, tt.negotiate)
		}
		if got, err := webSocketURL(tt.hub, "T"); err != nil || got != tt.ws {
			t.Errorf("webSocketURL(%q) = %q, %v; want %q", tt.hub, got, err, tt.ws)
		}
	}
	if got, _ := webSocketURL("http://h/hub", "a+b/c="); got != "ws://h/hub?id=a%2Bb%2Fc%3D" {
		t.Errorf("token not query-escaped: %q", got)
	}
	if _, err := negotiateURL("ftp://h/hub", 1); err == nil {
		t.Error("ftp scheme accepted")
	}
}

func TestSkipNegotiation(t *testing.T) {
	s := newFakeServer(t)
	wsURL := "ws" + strings.TrimPrefix(s.url, "http")
	c := dial(t, wsURL, Options{SkipNegotiation: true})
	s.nextConn(t)
	if n := s.negotiations(); n != 0 {
		t.Errorf("%d negotiate requests, want none", n)
	}
	s.mu.Lock()
	q := s.upgradeReqs[0].URL.RawQuery
	s.mu.Unlock()
	if q != "" {
		t.Errorf("upgrade query = %q, want none", q)
	}
	if id := c.ConnectionID(); id != "" {
		t.Errorf("ConnectionID = %q, want empty", id)
	}
	if res, err := c.Invoke(testCtx(t), "Echo", "x"); err != nil || string(res) != `"x"` {
		t.Fatalf("Invoke(Echo) = %s, %v", res, err)
	}
}

func TestHandshakeError(t *testing.T) {
	s := newFakeServer(t)
	s.handshakeError = "The protocol 'json' is not supported."
	_, err := Dial(testCtx(t), s.url, Options{})
	var he *HandshakeError
	if !errors.As(err, &he) || he.Message != s.handshakeError {
		t.Fatalf("Dial error = %v, want HandshakeError %q", err, s.handshakeError)
	}
}

func TestInvokeOutcomes(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s.url, Options{})
	ctx := testCtx(t)

	_, err := c.Invoke(ctx, "Fail")
	var ie *InvocationError
	if !errors.As(err, &ie) || ie.Message != "It didn't work!" || ie.Target != "Fail" {
		t.Errorf("Invoke(Fail) error = %v, want InvocationError", err)
	}

	_, err = c.Invoke(ctx, "NoSuchMethod", 1)
	if !errors.As(err, &ie) || ie.Message != "Failed to invoke 'NoSuchMethod' due to an error on the server." {
		t.Errorf("Invoke(NoSuchMethod) error = %v", err)
	}

	res, err := c.Invoke(ctx, "Void")
	if err != nil || res != nil {
		t.Errorf("Invoke(Void) = %q, %v; want nil, nil", res, err)
	}
	out := 7
	if err := c.InvokeInto(ctx, &out, "Void"); err != nil || out != 7 {
		t.Errorf("InvokeInto(Void) = %d, %v; want untouched", out, err)
	}

	res, err = c.Invoke(ctx, "Echo", nil)
	if err != nil || string(res) != "null" {
		t.Errorf("Invoke(Echo, nil) = %q, %v; want null", res, err)
	}

	var s2 struct{ A []int }
	if err := c.InvokeInto(ctx, &s2, "Echo", map[string]any{"A": []int{1, 2}}); err != nil || !slices.Equal(s2.A, []int{1, 2}) {
		t.Errorf("InvokeInto(Echo, struct) = %+v, %v", s2, err)
	}
	var n int
	if err := c.InvokeInto(ctx, &n, "Echo", "str"); err == nil {
		t.Error("InvokeInto decoded a string into an int")
	}

	// Arguments that cannot be encoded fail before anything is written.
	if _, err := c.Invoke(ctx, "Echo", make(chan int)); err == nil {
		t.Error("Invoke with an unencodable argument succeeded")
	}
	if res, err := c.Invoke(ctx, "Add", 1, 1); err != nil || string(res) != "2" {
		t.Errorf("connection unusable after an encoding error: %s, %v", res, err)
	}

	// A context that ends first abandons the call but not the connection.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := c.Invoke(short, "Hang"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Invoke(Hang) with deadline = %v", err)
	}
	c.mu.Lock()
	pending := len(c.calls)
	c.mu.Unlock()
	if pending != 0 {
		t.Errorf("%d calls still registered after the context ended", pending)
	}
}

func TestSendIsNonBlocking(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s.url, Options{})
	fc := s.nextConn(t)
	ctx := testCtx(t)
	if err := c.Send(ctx, "Notify", `<a href="x">&`, 1); err != nil {
		t.Fatal(err)
	}
	// JSON.stringify escapes neither quotes' neighbours nor HTML.
	want := "{\"type\":1,\"target\":\"Notify\",\"arguments\":[\"<a href=\\\"x\\\">&\",1]}\u001e"
	if f := fc.waitFrame(t, "Notify"); f != want {
		t.Errorf("send frame = %q, want %q", f, want)
	}
	if err := c.Send(ctx, "Notify"); err != nil {
		t.Fatal(err)
	}
	if f := fc.waitFrame(t, "Notify"); f != "{\"type\":1,\"target\":\"Notify\",\"arguments\":[]}\u001e" {
		t.Errorf("send without arguments = %q", f)
	}
}

func TestCallbacksInOrder(t *testing.T) {
	s := newFakeServer(t)
	c := New(s.url, Options{})
	var got recorder[int]
	var second atomic.Int32
	// Registration and dispatch are case-insensitive.
	c.On("receive", func(args []json.RawMessage) {
		var n int
		if len(args) != 1 || json.Unmarshal(args[0], &n) != nil {
			t.Errorf("bad args %q", args)
		}
		got.add(n)
	})
	c.On("RECEIVE", func([]json.RawMessage) { second.Add(1) })
	c.On("Unused", func([]json.RawMessage) { t.Error("wrong handler called") })
	if err := c.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := testCtx(t)
	if _, err := c.Invoke(ctx, "Push", "Receive", 50, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Invoke(ctx, "Push", "rEcEiVe", 50, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "100 callbacks", func() bool { return got.len() == 100 && second.Load() == 100 })
	vals := got.get()
	for i, v := range vals {
		if v != i%50 {
			t.Fatalf("callback %d got %d; order lost: %v", i, v, vals)
		}
	}

	// A callback may call Invoke: callbacks do not run on the reader.
	res := make(chan string, 1)
	c.On("Nested", func([]json.RawMessage) {
		r, err := c.Invoke(ctx, "Add", 2, 3)
		if err != nil {
			res <- err.Error()
			return
		}
		res <- string(r)
	})
	if _, err := c.Invoke(ctx, "Push", "Nested", 1, false); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if r != "5" {
			t.Errorf("nested Invoke = %s", r)
		}
	case <-time.After(waitTimeout):
		t.Fatal("nested Invoke deadlocked")
	}

	c.Off("receive")
	if _, err := c.Invoke(ctx, "Push", "Receive", 3, true); err != nil {
		t.Fatal(err)
	}
	// Callbacks run in order, so once a later callback ran, any for the
	// removed target would have run too.
	c.On("marker", func([]json.RawMessage) { res <- "marker" })
	if _, err := c.Invoke(ctx, "Push", "Marker", 1, false); err != nil {
		t.Fatal(err)
	}
	<-res
	if n := got.len(); n != 100 {
		t.Errorf("handler removed by Off still ran: %d calls", n)
	}
}

func TestBatchedFrames(t *testing.T) {
	s := newFakeServer(t)
	// Hub messages may share the WebSocket message of the handshake reply.
	s.afterHandshake = "{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"hi\"]}\u001e{\"type\":6}\u001e"
	c := New(s.url, Options{})
	var got recorder[string]
	c.On("ReceiveMessage", func(args []json.RawMessage) { got.add(string(args[0])) })
	if err := c.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	fc := s.nextConn(t)
	waitFor(t, "callback from the handshake frame", func() bool { return got.len() == 1 })

	// One frame: a callback, a ping, an unknown type, an Ack and another callback.
	fc.send("{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"a\"]}\u001e{\"type\":6}\u001e{\"type\":99}\u001e{\"type\":8,\"sequenceId\":1}\u001e{\"target\":\"ReceiveMessage\",\"arguments\":[\"b\"],\"type\":1}\u001e")
	waitFor(t, "batched callbacks", func() bool { return got.len() == 3 })
	if g := got.get(); !slices.Equal(g, []string{`"hi"`, `"a"`, `"b"`}) {
		t.Errorf("callbacks = %q", g)
	}
	if res, err := c.Invoke(testCtx(t), "Add", 1); err != nil || string(res) != "1" {
		t.Errorf("Invoke after batched frames = %s, %v", res, err)
	}
}

func TestIncompleteFrameRejected(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s.url, Options{Reconnect: nil})
	fc := s.nextConn(t)
	fc.send(`{"type":6}`)
	waitDone(t, c)
	if err := c.Err(); !errors.Is(err, protocol.ErrProtocol) {
		t.Errorf("Err = %v, want a protocol error", err)
	}
}

func TestStream(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s.url, Options{})
	fc := s.nextConn(t)
	ctx := testCtx(t)

	st, err := c.Stream(ctx, "Counter", 3)
	if err != nil {
		t.Fatal(err)
	}
	if f := fc.waitFrame(t, "Counter"); f != "{\"type\":4,\"invocationId\":\"0\",\"target\":\"Counter\",\"arguments\":[3]}\u001e" {
		t.Errorf("stream invocation frame = %q", f)
	}
	var items []string
	for {
		it, err := st.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, string(it))
	}
	if !slices.Equal(items, []string{"0", "1", "2"}) {
		t.Errorf("items = %q", items)
	}
	if _, err := st.Next(ctx); err != io.EOF {
		t.Errorf("Next after the end = %v, want io.EOF", err)
	}
	if err := st.Cancel(); err != nil {
		t.Errorf("Cancel of a finished stream = %v", err)
	}

	st, err = c.Stream(ctx, "FailStream")
	if err != nil {
		t.Fatal(err)
	}
	if it, err := st.Next(ctx); err != nil || string(it) != `"x"` {
		t.Fatalf("first item = %s, %v", it, err)
	}
	_, err = st.Next(ctx)
	var ie *InvocationError
	if !errors.As(err, &ie) || ie.Message != "An error occurred on the server while streaming results." {
		t.Errorf("stream error = %v", err)
	}

	// Next's own context bounds only the wait.
	st, err = c.Stream(ctx, "Forever")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Next(ctx); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := st.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Next with a short context = %v", err)
	}
	if err := st.Cancel(); err != nil {
		t.Fatal(err)
	}
}

func TestStreamCancel(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s.url, Options{})
	fc := s.nextConn(t)
	ctx := testCtx(t)

	st, err := c.Stream(ctx, "Forever")
	if err != nil {
		t.Fatal(err)
	}
	inv := fc.waitMsg(t, "the stream invocation", isType(protocol.TypeStreamInvocation))
	if it, err := st.Next(ctx); err != nil || string(it) != "0" {
		t.Fatalf("Next = %s, %v", it, err)
	}
	if err := st.Cancel(); err != nil {
		t.Fatal(err)
	}
	cm := fc.waitMsg(t, "CancelInvocation", isType(protocol.TypeCancelInvocation))
	if cm.InvocationID != inv.InvocationID {
		t.Errorf("cancelled id %q, stream id %q", cm.InvocationID, inv.InvocationID)
	}
	if _, err := st.Next(ctx); !errors.Is(err, ErrStreamCanceled) {
		t.Errorf("Next after Cancel = %v", err)
	}

	// Cancelling the stream's context cancels it too.
	sctx, scancel := context.WithCancel(ctx)
	st, err = c.Stream(sctx, "Forever")
	if err != nil {
		t.Fatal(err)
	}
	inv = fc.waitMsg(t, "the second stream invocation", isType(protocol.TypeStreamInvocation))
	if _, err := st.Next(ctx); err != nil {
		t.Fatal(err)
	}
	scancel()
	cm = fc.waitMsg(t, "CancelInvocation", isType(protocol.TypeCancelInvocation))
	if cm.InvocationID != inv.InvocationID {
		t.Errorf("cancelled id %q, stream id %q", cm.InvocationID, inv.InvocationID)
	}
	if _, err := st.Next(ctx); !errors.Is(err, ErrStreamCanceled) || !errors.Is(err, context.Canceled) {
		t.Errorf("Next after context cancel = %v", err)
	}

	// The server's Completion for the cancelled streams is ignored and the
	// connection keeps working.
	if res, err := c.Invoke(ctx, "Add", 2); err != nil || string(res) != "2" {
		t.Errorf("Invoke after cancel = %s, %v", res, err)
	}
}

func TestClientResults(t *testing.T) {
	s := newFakeServer(t)
	c := New(s.url, Options{})
	c.OnResult("getanswer", func(args []json.RawMessage) (any, error) { return 42, nil })
	c.OnResult("Broken", func([]json.RawMessage) (any, error) { return nil, errors.New("no luck") })
	if err := c.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	fc := s.nextConn(t)

	cases := []struct{ request, reply string }{
		{"{\"type\":1,\"invocationId\":\"srv-1\",\"target\":\"GetAnswer\",\"arguments\":[]}\u001e",
			"{\"type\":3,\"invocationId\":\"srv-1\",\"result\":42}\u001e"},
		{"{\"type\":1,\"invocationId\":\"srv-2\",\"target\":\"Unhandled\",\"arguments\":[]}\u001e",
			"{\"type\":3,\"invocationId\":\"srv-2\",\"error\":\"Client didn't provide a result.\"}\u001e"},
		{"{\"type\":1,\"invocationId\":\"srv-3\",\"target\":\"Broken\",\"arguments\":[1]}\u001e",
			"{\"type\":3,\"invocationId\":\"srv-3\",\"error\":\"no luck\"}\u001e"},
	}
	for _, tc := range cases {
		fc.send(tc.request)
		if f := fc.waitFrame(t, `"type":3`); f != tc.reply {
			t.Errorf("reply to %q = %q, want %q", tc.request, f, tc.reply)
		}
	}
}

func TestKeepAlivePings(t *testing.T) {
	s := newFakeServer(t)
	dial(t, s.url, Options{KeepAliveInterval: 20 * time.Millisecond})
	fc := s.nextConn(t)
	for range 3 {
		if f := fc.waitFrame(t, `"type":6`); f != "{\"type\":6}\u001e" {
			t.Errorf("ping frame = %q", f)
		}
	}
}

func TestServerTimeout(t *testing.T) {
	s := newFakeServer(t)
	var closed recorder[error]
	c := New(s.url, Options{ServerTimeout: 150 * time.Millisecond})
	c.OnClose(closed.add)
	if err := c.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	waitDone(t, c)
	if err := c.Err(); !errors.Is(err, ErrServerTimeout) {
		t.Errorf("Err = %v, want ErrServerTimeout", err)
	}
	waitFor(t, "OnClose", func() bool { return closed.len() == 1 })
	if err := closed.get()[0]; !errors.Is(err, ErrServerTimeout) {
		t.Errorf("OnClose error = %v", err)
	}
}

func TestServerTimeoutResetByMessages(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s.url, Options{ServerTimeout: 300 * time.Millisecond})
	fc := s.nextConn(t)
	// Pings every 50ms keep the connection alive for well over the timeout.
	for range 20 {
		fc.send("{\"type\":6}\u001e")
		select {
		case <-c.Done():
			t.Fatalf("connection closed despite server pings: %v", c.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestDropFailsPending(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s.url, Options{})
	fc := s.nextConn(t)
	ctx := testCtx(t)

	st, err := c.Stream(ctx, "Forever")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Invoke(ctx, "Hang")
		errc <- err
	}()
	fc.waitMsg(t, "the pending invocation", func(m protocol.Message) bool { return m.Target == "Hang" })
	fc.drop()

	select {
	case err := <-errc:
		if !errors.Is(err, ErrConnectionClosed) {
			t.Errorf("pending Invoke error = %v, want ErrConnectionClosed", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("pending invocation not failed after the connection dropped")
	}
	for {
		_, err := st.Next(ctx)
		if err == nil {
			continue // the item sent before the drop
		}
		if !errors.Is(err, ErrConnectionClosed) {
			t.Errorf("stream error = %v, want ErrConnectionClosed", err)
		}
		break
	}
	waitDone(t, c)
	if c.Err() == nil {
		t.Error("Err is nil after an unexpected drop")
	}
	if _, err := c.Invoke(ctx, "Add"); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Invoke after the drop = %v, want ErrNotConnected", err)
	}
	if err := c.Send(ctx, "Add"); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Send after the drop = %v, want ErrNotConnected", err)
	}
	if _, err := c.Stream(ctx, "Counter", 1); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Stream after the drop = %v, want ErrNotConnected", err)
	}
}

func TestServerCloseAllowReconnect(t *testing.T) {
	s := newFakeServer(t)
	c := New(s.url, Options{Reconnect: []time.Duration{0}})
	var reconnecting recorder[error]
	var reconnected recorder[string]
	c.OnReconnecting(reconnecting.add)
	c.OnReconnected(reconnected.add)
	var closed recorder[error]
	c.OnClose(closed.add)
	if err := c.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	s.nextConn(t)

	pending := make(chan error, 1)
	go func() {
		_, err := c.Invoke(ctx, "Hang")
		pending <- err
	}()
	waitFor(t, "the pending invocation", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.calls) == 1
	})
	// The vector of the notes: the server drains a node.
	go func() { _, _ = c.Invoke(ctx, "CloseMe", "Server is shutting down", true) }()

	if err := <-pending; !errors.Is(err, ErrConnectionClosed) {
		t.Errorf("pending invocation = %v, want ErrConnectionClosed", err)
	}
	s.nextConn(t)
	waitFor(t, "OnReconnected", func() bool { return reconnected.len() == 1 })
	if got := reconnected.get()[0]; got != "cid-2" {
		t.Errorf("OnReconnected(%q), want cid-2", got)
	}
	r := reconnecting.get()
	if len(r) != 1 || !errors.Is(r[0], ErrServerClosed) || !strings.Contains(r[0].Error(), "server returned an error on close: Server is shutting down") {
		t.Errorf("OnReconnecting errors = %v", r)
	}
	if id := c.ConnectionID(); id != "cid-2" {
		t.Errorf("ConnectionID = %q, want cid-2", id)
	}
	if n := s.negotiations(); n != 2 {
		t.Errorf("%d negotiations, want 2: a reconnect is a new connection", n)
	}
	if text, allow := c.CloseMessage(); text != "Server is shutting down" || !allow {
		t.Errorf("CloseMessage = %q, %v", text, allow)
	}
	if res, err := c.Invoke(ctx, "Add", 20, 22); err != nil || string(res) != "42" {
		t.Errorf("Invoke after reconnect = %s, %v", res, err)
	}
	select {
	case <-c.Done():
		t.Fatal("connection stopped")
	default:
	}
	if n := closed.len(); n != 0 {
		t.Errorf("OnClose ran %d times during a reconnect", n)
	}
	if err := c.Close(); err != nil || c.Err() != nil {
		t.Errorf("Close = %v, Err = %v", err, c.Err())
	}
}

func TestServerCloseWithoutAllowReconnect(t *testing.T) {
	for _, text := range []string{"bye", ""} {
		t.Run("error="+text, func(t *testing.T) {
			s := newFakeServer(t)
			c := New(s.url, Options{Reconnect: []time.Duration{0, 0}})
			var events recorder[string]
			c.OnReconnecting(func(error) { events.add("reconnecting") })
			c.OnClose(func(err error) { events.add("close: " + err.Error()) })
			if err := c.Start(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			go func() { _, _ = c.Invoke(context.Background(), "CloseMe", text, false) }()
			waitDone(t, c)
			err := c.Err()
			if !errors.Is(err, ErrServerClosed) || (text != "" && !strings.Contains(err.Error(), "server returned an error on close: bye")) {
				t.Errorf("Err = %v", err)
			}
			waitFor(t, "OnClose", func() bool { return events.len() == 1 })
			if ev := events.get(); ev[0] != "close: "+err.Error() {
				t.Errorf("events = %q, want only close", ev)
			}
			if n := s.negotiations(); n != 1 {
				t.Errorf("%d negotiations: the client reconnected", n)
			}
			if gotText, allow := c.CloseMessage(); gotText != text || allow {
				t.Errorf("CloseMessage = %q, %v", gotText, allow)
			}
		})
	}
}

func TestDropReconnects(t *testing.T) {
	s := newFakeServer(t)
	c := New(s.url, Options{Reconnect: []time.Duration{0, 10 * time.Millisecond}})
	var reconnecting recorder[error]
	var reconnected recorder[string]
	c.OnReconnecting(reconnecting.add)
	c.OnReconnected(reconnected.add)
	if err := c.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	fc := s.nextConn(t)

	s.mu.Lock()
	s.refuseNegotiate = 1 // the first attempt fails, the second succeeds
	s.mu.Unlock()
	fc.drop()
	s.nextConn(t)
	waitFor(t, "OnReconnected", func() bool { return reconnected.len() == 1 })
	if r := reconnecting.get(); len(r) != 1 || r[0] == nil || errors.Is(r[0], ErrServerClosed) {
		t.Errorf("OnReconnecting errors = %v", r)
	}
	if id := c.ConnectionID(); id != "cid-3" || reconnected.get()[0] != id {
		t.Errorf("ConnectionID = %q, OnReconnected = %q; want cid-3 (cid-2 was refused)", id, reconnected.get())
	}
	if res, err := c.Invoke(testCtx(t), "Add", 1, 1); err != nil || string(res) != "2" {
		t.Errorf("Invoke after reconnect = %s, %v", res, err)
	}
}

func TestReconnectDelayJittered(t *testing.T) {
	// Each listed delay is the top of a random wait in [d/2, d]: the
	// random part is drawn over the upper half, and with a draw of 0 the
	// client waits exactly d/2 (never less).
	const delay = 300 * time.Millisecond
	s := newFakeServer(t)
	c := New(s.url, Options{Reconnect: []time.Duration{delay}})
	drawn := make(chan int64, 1)
	c.jitter = func(n int64) int64 {
		drawn <- n
		return 0
	}
	var reconnected recorder[string]
	c.OnReconnected(reconnected.add)
	if err := c.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	dropped := time.Now()
	s.nextConn(t).drop()
	waitFor(t, "OnReconnected", func() bool { return reconnected.len() == 1 })
	if took := time.Since(dropped); took < delay/2 {
		t.Errorf("reconnected %v after the drop; the wait must be at least %v", took, delay/2)
	}
	select {
	case n := <-drawn:
		if want := int64(delay/2) + 1; n != want {
			t.Errorf("jitter drawn from [0, %d), want [0, %d)", n, want)
		}
	default:
		t.Error("the reconnect delay was not jittered")
	}
}

func TestReconnectGivesUp(t *testing.T) {
	s := newFakeServer(t)
	c := New(s.url, Options{Reconnect: []time.Duration{time.Millisecond, time.Millisecond}})
	var closed recorder[error]
	c.OnClose(closed.add)
	if err := c.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	fc := s.nextConn(t)
	s.mu.Lock()
	s.refuseNegotiate = 100
	s.mu.Unlock()
	fc.drop()
	waitDone(t, c)
	err := c.Err()
	var se *StatusError
	if !strings.Contains(fmt.Sprint(err), "reconnect failed after 2 attempts") || !errors.As(err, &se) || se.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("Err = %v", err)
	}
	waitFor(t, "OnClose", func() bool { return closed.len() == 1 })
	if n := s.negotiations(); n != 3 {
		t.Errorf("%d negotiations, want 3", n)
	}
}

func TestCloseDuringReconnect(t *testing.T) {
	s := newFakeServer(t)
	c := New(s.url, Options{Reconnect: []time.Duration{time.Hour}})
	var reconnecting recorder[error]
	c.OnReconnecting(reconnecting.add)
	if err := c.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	s.nextConn(t).drop()
	waitFor(t, "OnReconnecting", func() bool { return reconnecting.len() == 1 })
	closed := make(chan struct{})
	go func() { _ = c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(waitTimeout):
		t.Fatal("Close blocked during the reconnect delay")
	}
	if err := c.Err(); err != nil {
		t.Errorf("Err after Close = %v", err)
	}
}

func TestClose(t *testing.T) {
	s := newFakeServer(t)
	c := New(s.url, Options{})
	var closed recorder[error]
	c.OnClose(closed.add)
	if err := c.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	fc := s.nextConn(t)
	ctx := testCtx(t)
	pending := make(chan error, 1)
	go func() {
		_, err := c.Invoke(ctx, "Hang")
		pending <- err
	}()
	fc.waitMsg(t, "the pending invocation", func(m protocol.Message) bool { return m.Target == "Hang" })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if f := fc.waitFrame(t, `"type":7`); f != "{\"type\":7}\u001e" {
		t.Errorf("close frame = %q", f)
	}
	select {
	case <-fc.gone:
	case <-time.After(waitTimeout):
		t.Fatal("the server side never saw the connection end")
	}
	if err := <-pending; !errors.Is(err, ErrConnectionClosed) {
		t.Errorf("pending Invoke = %v", err)
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done not closed after Close returned")
	}
	if err := c.Err(); err != nil {
		t.Errorf("Err = %v after Close", err)
	}
	waitFor(t, "OnClose", func() bool { return closed.len() == 1 })
	if err := closed.get()[0]; err != nil {
		t.Errorf("OnClose(%v), want nil", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := c.Invoke(ctx, "Add"); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Invoke after Close = %v", err)
	}
	if err := c.Start(ctx); err == nil {
		t.Error("Start after Close succeeded")
	}

	// Close of a connection that never started.
	c2 := New(s.url, Options{})
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, c2)
}

func TestNegotiateHelpers(t *testing.T) {
	s := newFakeServer(t)
	ctx := testCtx(t)
	opts := Options{AccessToken: func() (string, error) { return "t0", nil }}

	nr, err := Negotiate(ctx, s.url, opts)
	if err != nil {
		t.Fatal(err)
	}
	if nr.NegotiateVersion != 1 || nr.ConnectionID != "cid-1" || nr.ConnectionToken != "tok-1" || !nr.supportsWebSocketText() {
		t.Errorf("Negotiate = %+v", nr)
	}
	c, err := DialToken(ctx, s.url, nr.ConnectionToken, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if res, err := c.Invoke(ctx, "Add", 3); err != nil || string(res) != "3" {
		t.Errorf("Invoke = %s, %v", res, err)
	}
	if n := s.negotiations(); n != 1 {
		t.Errorf("DialToken negotiated: %d negotiations", n)
	}

	// An unknown token: the sticky-session failure of a farm.
	_, err = DialToken(ctx, s.url, "bogus", opts)
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusNotFound || se.Op != "websocket upgrade" || se.Body != "No Connection with that ID" {
		t.Errorf("DialToken(bogus) = %v", err)
	}

	// An error payload.
	s.mu.Lock()
	s.negotiateBody = func(int) string { return `{"error":"This connection is not allowed."}` }
	s.mu.Unlock()
	if _, err := Dial(ctx, s.url, opts); err == nil || !strings.Contains(err.Error(), "This connection is not allowed.") {
		t.Errorf("Dial with a negotiate error = %v", err)
	}
	// Version 0: the id is the token.
	s.mu.Lock()
	s.negotiateBody = func(n int) string {
		return `{"connectionId":"tok-` + strconv.Itoa(n) + `","availableTransports":[{"transport":"WebSockets","transferFormats":["Text"]}]}`
	}
	s.mu.Unlock()
	if nr, err := Negotiate(ctx, s.url, opts); err != nil || nr.ConnectionToken != nr.ConnectionID {
		t.Errorf("v0 Negotiate = %+v, %v", nr, err)
	}
	// No usable transport.
	s.mu.Lock()
	s.negotiateBody = func(int) string {
		return `{"negotiateVersion":1,"connectionId":"a","connectionToken":"b","availableTransports":[{"transport":"LongPolling","transferFormats":["Text"]}]}`
	}
	s.mu.Unlock()
	if _, err := Dial(ctx, s.url, opts); err == nil || !strings.Contains(err.Error(), "WebSockets") {
		t.Errorf("Dial without WebSockets = %v", err)
	}
	// Classic ASP.NET SignalR.
	s.mu.Lock()
	s.negotiateBody = func(int) string { return `{"ProtocolVersion":"1.5","ConnectionId":"x"}` }
	s.mu.Unlock()
	if _, err := Negotiate(ctx, s.url, opts); err == nil {
		t.Error("classic ASP.NET SignalR response accepted")
	}
	// A 404 from negotiate.
	if _, err := Negotiate(ctx, s.srv.URL+"/nothing", opts); !errors.As(err, &se) || se.StatusCode != http.StatusNotFound || se.Op != "negotiate" {
		t.Errorf("Negotiate on a wrong URL = %v", err)
	}
}

func TestNegotiateRedirect(t *testing.T) {
	target := newFakeServer(t)
	front := newFakeServer(t)
	front.negotiateBody = func(int) string {
		return `{"url":"` + target.url + `","accessToken":"fixed"}`
	}
	var factory atomic.Int32
	c := dial(t, front.url, Options{AccessToken: func() (string, error) {
		factory.Add(1)
		return "mine", nil
	}})
	target.nextConn(t)
	if got := c.ConnectionID(); got != "cid-1" {
		t.Errorf("ConnectionID = %q", got)
	}
	target.mu.Lock()
	neg, up := target.negotiateReqs[0], target.upgradeReqs[0]
	target.mu.Unlock()
	if a := neg.Header.Get("Authorization"); a != "Bearer fixed" {
		t.Errorf("negotiate after redirect: Authorization %q", a)
	}
	if a := up.Header.Get("Authorization"); a != "Bearer fixed" {
		t.Errorf("upgrade after redirect: Authorization %q", a)
	}
	if n := factory.Load(); n != 1 {
		t.Errorf("token factory called %d times, want once (before the redirect)", n)
	}
	front.mu.Lock()
	front.negotiateBody = func(int) string { return `{"url":"` + front.url + `"}` }
	front.mu.Unlock()
	if _, err := Dial(testCtx(t), front.url, Options{}); err == nil || !strings.Contains(err.Error(), "redirection limit") {
		t.Errorf("redirect loop = %v", err)
	}
}

func TestStartAbortedByClose(t *testing.T) {
	// A server that accepts the upgrade but never answers the handshake.
	upgraded := make(chan struct{}, 1)
	hung := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		upgraded <- struct{}{}
		<-hung
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(hung) })

	c := New(srv.URL+"/hub", Options{SkipNegotiation: true})
	started := make(chan error, 1)
	go func() { started <- c.Start(context.Background()) }()
	select {
	case <-upgraded:
	case <-time.After(waitTimeout):
		t.Fatal("no upgrade")
	}
	// Close must abort the handshake rather than wait for its timeout.
	closeDone := make(chan struct{})
	go func() {
		_ = c.Close()
		close(closeDone)
	}()
	select {
	case <-closeDone:
	case <-time.After(waitTimeout):
		t.Fatal("Close blocked behind a hung handshake")
	}
	select {
	case err := <-started:
		if err == nil {
			t.Error("Start succeeded after Close")
		}
	case <-time.After(waitTimeout):
		t.Fatal("Start did not return")
	}
	waitDone(t, c)
}

// TestNoGoroutineLeaks runs every lifecycle path and checks the client's
// goroutines (reader, dispatcher, timers, context watchers) all exit.
func TestNoGoroutineLeaks(t *testing.T) {
	s := newFakeServer(t)
	// Idle keep-alive HTTP connections would hold goroutines of their own.
	opts := Options{HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, KeepAliveInterval: 5 * time.Millisecond}
	baseline := runtime.NumGoroutine()
	ctx := testCtx(t)

	// Callbacks, invocations, streams, then Close.
	c := New(s.url, opts)
	c.On("Receive", func([]json.RawMessage) {})
	c.OnClose(func(error) {})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Invoke(ctx, "Push", "Receive", 5, true); err != nil {
		t.Fatal(err)
	}
	st, err := c.Stream(ctx, "Counter", 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := st.Next(ctx); err == nil; _, err = st.Next(ctx) {
	}
	sctx, scancel := context.WithCancel(ctx)
	st, err = c.Stream(sctx, "Forever")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Next(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stream(ctx, "Forever"); err != nil { // left open on purpose
		t.Fatal(err)
	}
	scancel()
	_ = c.Close()

	// Reconnect after a server Close, then a server Close for good.
	opts.Reconnect = []time.Duration{0}
	c = New(s.url, opts)
	c.OnReconnected(func(string) {})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	_, _ = c.Invoke(ctx, "CloseMe", "", true)
	waitFor(t, "reconnect", func() bool { return c.ConnectionID() != "" && c.ConnectionID() != "cid-2" })
	_, _ = c.Invoke(ctx, "CloseMe", "", false)
	waitDone(t, c)

	// Server timeout.
	opts.Reconnect, opts.ServerTimeout = nil, 50*time.Millisecond
	c = dial(t, s.url, opts)
	waitDone(t, c)

	// Wait for the server's side of every connection to be gone, too.
	s.mu.Lock()
	conns := slices.Clone(s.conns)
	s.mu.Unlock()
	for _, fc := range conns {
		fc.drop()
		<-fc.gone
	}

	deadline := time.Now().Add(waitTimeout)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), baseline, buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
