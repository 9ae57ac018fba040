package hubnode_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/backplane"
	"github.com/orchestratorchat/hubfarm/hubnode"
	"github.com/orchestratorchat/hubfarm/hubnode/client"
)

// loneBackplane is the backplane of a node without peers: nothing to
// publish to, every registry call succeeds.
type loneBackplane struct{}

func (loneBackplane) Publish(context.Context, backplane.Scope, string, []byte, string) error {
	return nil
}
func (loneBackplane) Post(context.Context, backplane.Scope, string, []byte, string) error {
	return nil
}
func (loneBackplane) PublishConnection(context.Context, string, []byte) error { return nil }
func (loneBackplane) PublishUserMembership(context.Context, string, string, bool) error {
	return nil
}
func (loneBackplane) CloseConnection(context.Context, string, string) error        { return nil }
func (loneBackplane) RegisterConnection(context.Context, backplane.ConnInfo) error { return nil }
func (loneBackplane) UnregisterConnection(context.Context, backplane.ConnInfo, []string) error {
	return nil
}
func (loneBackplane) JoinGroup(context.Context, string, string) error           { return nil }
func (loneBackplane) LeaveGroup(context.Context, string, string) error          { return nil }
func (loneBackplane) UserConnections(context.Context, string) ([]string, error) { return nil, nil }
func (loneBackplane) ClaimConnection(context.Context, string, time.Duration) (bool, error) {
	return true, nil
}

// TestConcurrentMethodDoesNotBlockTheConnection: a ConcurrentMethod that
// waits for something the same connection sends later (an approval) does
// not hold up that later invocation, and the per-connection bound refuses
// calls beyond it.
func TestConcurrentMethodDoesNotBlockTheConnection(t *testing.T) {
	release := make(chan string, 4)
	started := make(chan struct{}, 4)
	_, url := startLoneNode(t, hubnode.Config{MaxStreamsPerConnection: 2, InvocationRate: 1e6, InvocationBurst: 1e6},
		func(_ *hubnode.Node, hub *hubnode.Hub) {
			hub.ConcurrentMethod("Wait", func(call *hubnode.Call) (string, error) {
				started <- struct{}{}
				select {
				case v := <-release:
					return v, nil
				case <-call.Context().Done():
					return "", call.Context().Err()
				}
			})
			hub.Method("Release", func(_ *hubnode.Call, v string) error {
				release <- v
				return nil
			})
		})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	type answer struct {
		v   string
		err error
	}
	waiting := make(chan answer, 1)
	go func() {
		var v string
		err := c.InvokeInto(ctx, &v, "Wait")
		waiting <- answer{v, err}
	}()
	awaitStart := func() {
		t.Helper()
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatal("Wait never started")
		}
	}
	// Release is sent after Wait on the same connection; with one
	// invocation at a time it would wait behind Wait forever.
	awaitStart()
	if err := c.InvokeInto(ctx, nil, "Release", "go"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	select {
	case a := <-waiting:
		if a.err != nil || a.v != "go" {
			t.Fatalf("Wait = %q, %v", a.v, a.err)
		}
	case <-ctx.Done():
		t.Fatal("Wait never returned")
	}

	// Two may wait at once; a third is refused. The first Wait's slot is
	// free once its Completion has arrived, so both start.
	results := make(chan answer, 3)
	for range 2 {
		go func() {
			var v string
			err := c.InvokeInto(ctx, &v, "Wait")
			results <- answer{v, err}
		}()
	}
	awaitStart()
	awaitStart()
	var v string
	refused := c.InvokeInto(ctx, &v, "Wait")
	if refused == nil {
		t.Fatal("a third concurrent call ran")
	}
	if !strings.Contains(refused.Error(), "RATE_LIMITED") {
		t.Fatalf("third concurrent call: %v, want RATE_LIMITED", refused)
	}
	for range 2 {
		release <- "x"
	}
	for range 2 {
		if a := <-results; a.err != nil {
			t.Fatalf("Wait: %v", a.err)
		}
	}
}
