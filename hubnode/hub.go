package hubnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/orchestratorchat/hubfarm/hubnode/protocol"
)

// Hub is a named set of methods served at one path. Methods are registered
// before the node starts serving and looked up case-insensitively, as ASP.NET
// Core does.
type Hub struct {
	name           string
	path           string
	node           *Node
	methods        map[string]*method
	onConnected    []func(*Conn)
	onDisconnected []func(*Conn)
}

// Name is the hub's name (a metric label).
func (h *Hub) Name() string { return h.name }

// Path is the URL path the hub is served at.
func (h *Hub) Path() string { return h.path }

// Node is the node serving the hub.
func (h *Hub) Node() *Node { return h.node }

type method struct {
	name       string
	fn         reflect.Value
	args       []reflect.Type
	optional   int // how many of the last args an invocation may leave out (OptionalArgs)
	stream     bool
	hasResult  bool
	concurrent bool // runs beside the connection's other invocations (ConcurrentMethod)
}

var (
	callType   = reflect.TypeFor[*Call]()
	streamType = reflect.TypeFor[*Stream]()
	errorType  = reflect.TypeFor[error]()
)

// Method registers a hub method. fn must have one of the forms
//
//	func(*Call, A1, A2, ...) error
//	func(*Call, A1, A2, ...) (R, error)
//
// Arguments are decoded from JSON into the parameter types; a count or type
// mismatch is answered with an error Completion without calling fn. A
// malformed fn or option panics at registration (a programming error,
// found at start).
func (h *Hub) Method(name string, fn any, opts ...MethodOption) {
	m := h.build(name, fn, false, opts)
	h.methods[strings.ToLower(name)] = m
}

// MethodOption adjusts how a method registered by Method,
// ConcurrentMethod or StreamMethod binds its invocations.
type MethodOption func(*method)

// OptionalArgs makes the last n parameters of a method optional: an
// invocation may leave out up to n arguments from the end, and every
// parameter left out takes its type's zero value (nil for a pointer, so a
// method can tell an absent argument from a sent one). This lets a method
// accept both a contract's shorter form and a longer one that adds
// parameters at the end (ApproveTool with or without its reason). An
// invocation with too few or too many arguments is refused, as for any
// method, with an error giving the range expected. n must not exceed the
// method's argument count.
func OptionalArgs(n int) MethodOption {
	return func(m *method) {
		if n < 0 || n > len(m.args) {
			panic(fmt.Sprintf("hubnode: method %s: OptionalArgs(%d) with %d argument(s)", m.name, n, len(m.args)))
		}
		m.optional = n
	}
}

// ConcurrentMethod registers a hub method like Method, but one that runs
// on its own goroutine as soon as it arrives instead of waiting its turn in
// the connection's queue, so that the connection keeps serving its other
// invocations while it runs: for methods that may wait long (a tool call
// waiting for a human's approval, which may come from the same
// connection). Its Completion may therefore overtake those of invocations
// sent before it. At most Config.MaxStreamsPerConnection concurrent
// methods run per connection; beyond that a call is refused with a
// RATE_LIMITED error. The Call's context is cancelled when the connection
// closes.
func (h *Hub) ConcurrentMethod(name string, fn any, opts ...MethodOption) {
	m := h.build(name, fn, false, opts)
	m.concurrent = true
	h.methods[strings.ToLower(name)] = m
}

// concurrent reports whether target names a ConcurrentMethod.
func (h *Hub) concurrent(target string) bool {
	m := h.methods[strings.ToLower(target)]
	return m != nil && m.concurrent
}

// StreamMethod registers a server-to-client streaming method of the form
//
//	func(*Call, *Stream, A1, A2, ...) error
//
// Items sent with Stream.Send reach the client as StreamItems; the method's
// return ends the stream with a Completion (carrying the error, if any). The
// Call's context is cancelled when the client sends CancelInvocation or
// disconnects.
func (h *Hub) StreamMethod(name string, fn any, opts ...MethodOption) {
	m := h.build(name, fn, true, opts)
	h.methods[strings.ToLower(name)] = m
}

func (h *Hub) build(name string, fn any, stream bool, opts []MethodOption) *method {
	v := reflect.ValueOf(fn)
	t := v.Type()
	if t.Kind() != reflect.Func || t.NumIn() < 1 || t.In(0) != callType {
		panic(fmt.Sprintf("hubnode: method %s: first parameter must be *hubnode.Call", name))
	}
	first := 1
	if stream {
		if t.NumIn() < 2 || t.In(1) != streamType {
			panic(fmt.Sprintf("hubnode: stream method %s: second parameter must be *hubnode.Stream", name))
		}
		first = 2
	}
	m := &method{name: name, fn: v, stream: stream}
	for i := first; i < t.NumIn(); i++ {
		m.args = append(m.args, t.In(i))
	}
	switch {
	case t.NumOut() == 1 && t.Out(0) == errorType:
	case !stream && t.NumOut() == 2 && t.Out(1) == errorType:
		m.hasResult = true
	default:
		panic(fmt.Sprintf("hubnode: method %s: must return error or (R, error)", name))
	}
	for _, o := range opts {
		o(m)
	}
	return m
}

// arityError is the binding error for an invocation with n arguments that
// m does not accept, or "" when it does: ASP.NET Core's text for a method
// with a fixed count, the range for one with optional arguments.
func (m *method) arityError(n int) string {
	most := len(m.args)
	least := most - m.optional
	if n >= least && n <= most {
		return ""
	}
	expects := fmt.Sprint(most)
	if least != most {
		expects = fmt.Sprintf("%d to %d", least, most)
	}
	return fmt.Sprintf("InvalidDataException: Invocation provides %d argument(s) but target expects %s.", n, expects)
}

// OnConnected registers fn to run when a connection to this hub is
// established (after the handshake and farm registration). It runs on the
// connection's goroutine before any invocation of that connection.
func (h *Hub) OnConnected(fn func(*Conn)) { h.onConnected = append(h.onConnected, fn) }

// OnDisconnected registers fn to run after a connection ended and was
// removed from its groups.
func (h *Hub) OnDisconnected(fn func(*Conn)) { h.onDisconnected = append(h.onDisconnected, fn) }

// HubError is an error whose message is safe to show to the caller. Hub
// methods return it (or wrap it) for failures the client should understand;
// any other error is answered with a generic text and logged.
type HubError struct {
	Message string
	Err     error
}

func (e *HubError) Error() string { return e.Message }

// Unwrap exposes the underlying error.
func (e *HubError) Unwrap() error { return e.Err }

// Errorf returns a HubError with a formatted, caller-safe message.
func Errorf(format string, args ...any) error {
	return &HubError{Message: fmt.Sprintf(format, args...)}
}

// Call is the context of one hub method invocation.
type Call struct {
	ctx          context.Context
	conn         *Conn
	invocationID string
	target       string
}

// Context is cancelled when the connection closes (and, for streams, when the
// client cancels the stream).
func (c *Call) Context() context.Context { return c.ctx }

// Conn is the calling connection.
func (c *Call) Conn() *Conn { return c.conn }

// ConnectionID is the caller's connection id.
func (c *Call) ConnectionID() string { return c.conn.id }

// User is the caller's user id.
func (c *Call) User() string { return c.conn.ident.User }

// Node is the node serving the call (its Clients and Groups API).
func (c *Call) Node() *Node { return c.conn.node }

// Target is the invoked method's name as the client sent it.
func (c *Call) Target() string { return c.target }

// SendCaller sends a callback to the calling connection.
func (c *Call) SendCaller(target string, args ...any) error {
	frame, err := EncodeInvocation(target, args...)
	if err != nil {
		return err
	}
	c.conn.sendFrame(frame)
	return nil
}

// Stream is the sending side of a server-to-client stream.
type Stream struct {
	conn         *Conn
	invocationID string
}

// Send queues one stream item. It fails once the client cancelled the stream
// or disconnected.
func (s *Stream) Send(ctx context.Context, item any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := json.Marshal(item)
	if err != nil {
		return fmt.Errorf("hubnode: stream item: %w", err)
	}
	if !s.conn.sendFrame(protocol.AppendStreamItem(nil, s.invocationID, b)) {
		return errors.New("hubnode: stream: connection closed")
	}
	return nil
}

// EncodeInvocation serialises a non-blocking Invocation record (the form of
// every server callback) once, so it can be queued to many connections.
//
// A single json.RawMessage argument is taken as already-encoded JSON and
// copied as is (the session store hands over payloads it has just encoded),
// which saves re-validating it.
func EncodeInvocation(target string, args ...any) ([]byte, error) {
	if len(args) == 1 {
		if raw, ok := args[0].(json.RawMessage); ok && len(raw) > 0 {
			arr := make([]byte, 0, len(raw)+2)
			arr = append(append(append(arr, '['), raw...), ']')
			return protocol.AppendInvocation(make([]byte, 0, len(arr)+len(target)+40), "", target, arr), nil
		}
	}
	if args == nil {
		args = []any{}
	}
	b, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("hubnode: encode %s arguments: %w", target, err)
	}
	return protocol.AppendInvocation(make([]byte, 0, len(b)+len(target)+40), "", target, b), nil
}

func bindFailure(target, detail string) string {
	return fmt.Sprintf("Failed to invoke '%s' due to an error on the server. %s", target, detail)
}

func (h *Hub) lookup(c *Conn, m protocol.Message) (*method, []reflect.Value, string) {
	meth := h.methods[strings.ToLower(m.Target)]
	if meth == nil {
		return nil, nil, bindFailure(m.Target, "HubException: Method does not exist.")
	}
	if len(m.StreamIDs) > 0 {
		return nil, nil, bindFailure(m.Target, "HubException: Client-to-server streaming is not supported.")
	}
	if e := meth.arityError(len(m.Arguments)); e != "" {
		return nil, nil, bindFailure(m.Target, e)
	}
	vals := make([]reflect.Value, len(meth.args))
	for i, t := range meth.args {
		if i >= len(m.Arguments) {
			vals[i] = reflect.Zero(t) // an optional argument left out
			continue
		}
		if jsonDepth(m.Arguments[i]) > h.node.cfg.MaxArgumentDepth {
			return nil, nil, bindFailure(m.Target, fmt.Sprintf("InvalidDataException: argument %d is nested too deeply.", i+1))
		}
		p := reflect.New(t)
		if err := json.Unmarshal(m.Arguments[i], p.Interface()); err != nil {
			h.node.log.Info("argument binding failed", "conn", c.id, "hub", h.name, "method", meth.name, "arg", i, "err", err)
			return nil, nil, bindFailure(m.Target, fmt.Sprintf("InvalidDataException: Error binding argument %d: %s", i+1, describeJSONError(err)))
		}
		vals[i] = p.Elem()
	}
	return meth, vals, ""
}

func describeJSONError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("field '%s' expects %s, got %s.", te.Field, te.Type, te.Value)
		}
		return fmt.Sprintf("expected %s, got %s.", te.Type, te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return "malformed JSON."
	}
	// Custom unmarshalers (enums, time formats) return caller-safe texts.
	return err.Error()
}

// invoke runs a plain Invocation and returns its Completion record (nil for
// a non-blocking call). The caller sends it after releasing the
// invocation's slot, so a client that has seen the Completion may start
// another call at once without being refused for one that has ended.
func (h *Hub) invoke(c *Conn, m protocol.Message) []byte {
	start := h.node.cfg.Now()
	meth, vals, bindErr := h.lookup(c, m)
	outcome := "ok"
	defer func() {
		h.node.metrics.invocation(h.name, methodLabel(meth), outcome, h.node.cfg.Now().Sub(start))
	}()
	if bindErr == "" && meth.stream {
		bindErr = fmt.Sprintf("The client attempted to invoke the streaming '%s' method with a non-streaming invocation.", meth.name)
	}
	if bindErr != "" {
		outcome = "bind_error"
		if m.InvocationID == "" {
			return nil
		}
		return protocol.AppendCompletionError(nil, m.InvocationID, bindErr)
	}
	call := &Call{ctx: c.ctx, conn: c, invocationID: m.InvocationID, target: m.Target}
	result, err := h.call(meth, call, nil, vals)
	if err != nil {
		outcome = "error"
		if m.InvocationID == "" {
			return nil
		}
		return protocol.AppendCompletionError(nil, m.InvocationID, h.errorText(c, meth, err))
	}
	if m.InvocationID == "" {
		return nil
	}
	var payload []byte
	if meth.hasResult {
		payload, err = json.Marshal(result)
		if err != nil {
			outcome = "error"
			h.node.log.Error("encode result", "hub", h.name, "method", meth.name, "err", err)
			return protocol.AppendCompletionError(nil, m.InvocationID, fmt.Sprintf("An unexpected error occurred invoking '%s' on the server.", meth.name))
		}
	}
	return protocol.AppendCompletion(nil, m.InvocationID, payload)
}

func methodLabel(m *method) string {
	if m == nil {
		return "unknown"
	}
	return m.name
}

// invokeStream runs a StreamInvocation: it sends the items and returns the
// Completion record, for the caller to send after releasing the stream's slot.
func (h *Hub) invokeStream(ctx context.Context, c *Conn, m protocol.Message) []byte {
	start := h.node.cfg.Now()
	meth, vals, bindErr := h.lookup(c, m)
	outcome := "ok"
	defer func() {
		h.node.metrics.invocation(h.name, methodLabel(meth), outcome, h.node.cfg.Now().Sub(start))
	}()
	if bindErr == "" && !meth.stream {
		bindErr = fmt.Sprintf("The client attempted to invoke the non-streaming '%s' method with a streaming invocation.", meth.name)
	}
	if bindErr != "" {
		outcome = "bind_error"
		return protocol.AppendCompletionError(nil, m.InvocationID, bindErr)
	}
	call := &Call{ctx: ctx, conn: c, invocationID: m.InvocationID, target: m.Target}
	stream := &Stream{conn: c, invocationID: m.InvocationID}
	_, err := h.call(meth, call, stream, vals)
	if err != nil && ctx.Err() == nil {
		outcome = "error"
		return protocol.AppendCompletionError(nil, m.InvocationID, h.errorText(c, meth, err))
	}
	if ctx.Err() != nil {
		outcome = "cancelled"
	}
	// After a cancellation the client ignores it, but the protocol still
	// ends every invocation with a Completion.
	return protocol.AppendCompletion(nil, m.InvocationID, nil)
}

// call runs the method, turning a panic into an error so one bad handler
// never takes the node down.
func (h *Hub) call(meth *method, call *Call, stream *Stream, vals []reflect.Value) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			h.node.log.Error("hub method panicked", "hub", h.name, "method", meth.name, "conn", call.conn.id, "panic", r)
			err = fmt.Errorf("hubnode: method %s panicked: %v", meth.name, r)
		}
	}()
	in := make([]reflect.Value, 0, len(vals)+2)
	in = append(in, reflect.ValueOf(call))
	if stream != nil {
		in = append(in, reflect.ValueOf(stream))
	}
	in = append(in, vals...)
	out := meth.fn.Call(in)
	if e := out[len(out)-1]; !e.IsNil() {
		return nil, e.Interface().(error)
	}
	if meth.hasResult {
		return out[0].Interface(), nil
	}
	return nil, nil
}

// errorText is the Completion error for a failed method: ASP.NET Core's text,
// with the message of a HubError appended; other errors are logged, never
// shown (they may carry internals).
func (h *Hub) errorText(c *Conn, meth *method, err error) string {
	var he *HubError
	if errors.As(err, &he) {
		return fmt.Sprintf("An unexpected error occurred invoking '%s' on the server. HubException: %s", meth.name, he.Message)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("An unexpected error occurred invoking '%s' on the server. HubException: the operation was cancelled or timed out.", meth.name)
	}
	h.node.log.Error("hub method failed", "hub", h.name, "method", meth.name, "conn", c.id, "err", err)
	return fmt.Sprintf("An unexpected error occurred invoking '%s' on the server.", meth.name)
}

// MethodNames lists the hub's methods (for tools, docs and fuzzers).
func (h *Hub) MethodNames() []string {
	out := make([]string, 0, len(h.methods))
	for _, m := range h.methods {
		out = append(out, m.name)
	}
	slices.Sort(out)
	return out
}

// BindArguments decodes args against target's parameters exactly as an
// invocation would, without calling the method, and returns the binding
// error text the caller would get ("" when the arguments bind).
func (h *Hub) BindArguments(target string, args []json.RawMessage) string {
	_, _, errText := h.lookup(&Conn{id: "bind-check", node: h.node}, protocol.Message{Type: protocol.TypeInvocation, Target: target, Arguments: args})
	return errText
}
