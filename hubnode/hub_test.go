package hubnode_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode"
	"github.com/orchestratorchat/hubfarm/hubnode/client"
)

// decideMethod is a method whose trailing reason is optional: it answers
// with what it was given, "<nil>" for a reason left out.
func decideMethod(_ *hubnode.Call, id string, ok bool, reason *string) (string, error) {
	r := "<nil>"
	if reason != nil {
		r = *reason
	}
	return fmt.Sprintf("%s/%v/%s", id, ok, r), nil
}

func rawArgs(t *testing.T, s string) []json.RawMessage {
	t.Helper()
	var a []json.RawMessage
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestOptionalArgsBinding: a method registered with OptionalArgs(1) binds
// with or without its last argument and refuses fewer or more, naming the
// range; a method without the option keeps ASP.NET Core's exact count
// error.
func TestOptionalArgsBinding(t *testing.T) {
	node, err := hubnode.New(hubnode.Config{NodeID: "t", TokenSecret: []byte("x"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hub := node.AddHub("Test", "/hub")
	hub.Method("Decide", decideMethod, hubnode.OptionalArgs(1))
	hub.Method("Fixed", decideMethod)
	hub.Method("AllOptional", decideMethod, hubnode.OptionalArgs(3))
	for _, c := range []struct {
		method, args, want string
	}{
		{"Decide", `["a", true]`, ""},
		{"Decide", `["a", true, "why"]`, ""},
		{"Decide", `["a", true, null]`, ""},
		{"Decide", `["a"]`, "Failed to invoke 'Decide' due to an error on the server. InvalidDataException: Invocation provides 1 argument(s) but target expects 2 to 3."},
		{"Decide", `["a", true, "why", 4]`, "Failed to invoke 'Decide' due to an error on the server. InvalidDataException: Invocation provides 4 argument(s) but target expects 2 to 3."},
		{"Decide", `["a", "yes"]`, "Failed to invoke 'Decide' due to an error on the server. InvalidDataException: Error binding argument 2: expected bool, got string."},
		{"Fixed", `["a", true, "why"]`, ""},
		{"Fixed", `["a", true]`, "Failed to invoke 'Fixed' due to an error on the server. InvalidDataException: Invocation provides 2 argument(s) but target expects 3."},
		{"AllOptional", `[]`, ""},
		{"AllOptional", `["a", true, null, 1]`, "Failed to invoke 'AllOptional' due to an error on the server. InvalidDataException: Invocation provides 4 argument(s) but target expects 0 to 3."},
	} {
		if got := hub.BindArguments(c.method, rawArgs(t, c.args)); got != c.want {
			t.Errorf("%s%s: %q, want %q", c.method, c.args, got, c.want)
		}
	}
}

// TestOptionalArgsBeyondParametersPanics: asking for more optional
// arguments than the method has is a programming error, found at
// registration.
func TestOptionalArgsBeyondParametersPanics(t *testing.T) {
	node, err := hubnode.New(hubnode.Config{NodeID: "t", TokenSecret: []byte("x"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hub := node.AddHub("Test", "/hub")
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "OptionalArgs(4)") {
			t.Fatalf("registration did not panic usefully: %v", r)
		}
	}()
	hub.Method("Decide", decideMethod, hubnode.OptionalArgs(4))
}

// TestOptionalArgsOverAConnection: through a real connection, a method
// with an optional last parameter runs with it left out (its zero value),
// sent as null, or sent; a count out of range fails the call without
// running the method.
func TestOptionalArgsOverAConnection(t *testing.T) {
	_, url := startLoneNode(t, hubnode.Config{InvocationRate: 1e6, InvocationBurst: 1e6}, func(_ *hubnode.Node, hub *hubnode.Hub) {
		hub.Method("Decide", decideMethod, hubnode.OptionalArgs(1))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		args []any
		want string
	}{
		{[]any{"a", true}, "a/true/<nil>"},
		{[]any{"a", false, nil}, "a/false/<nil>"},
		{[]any{"a", true, "fine"}, "a/true/fine"},
	} {
		var got string
		if err := c.InvokeInto(ctx, &got, "Decide", tc.args...); err != nil || got != tc.want {
			t.Errorf("Decide%v = %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
	for _, args := range [][]any{{"a"}, {"a", true, "x", 1}} {
		var got string
		err := c.InvokeInto(ctx, &got, "Decide", args...)
		want := fmt.Sprintf("Invocation provides %d argument(s) but target expects 2 to 3.", len(args))
		if err == nil || !strings.Contains(err.Error(), want) || got != "" {
			t.Errorf("Decide%v = %q, %v; want an error %q", args, got, err, want)
		}
	}
}
