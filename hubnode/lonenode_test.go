package hubnode_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"

	"github.com/orchestratorchat/hubfarm/hubnode"
)

// startLoneNode starts a node without peers (loneBackplane) serving one hub
// "Test" at /hub, whose methods register adds, on a test HTTP server; it
// returns the node and the hub's http URL. Both stop when tb ends.
func startLoneNode(tb testing.TB, cfg hubnode.Config, register func(*hubnode.Node, *hubnode.Hub)) (*hubnode.Node, string) {
	tb.Helper()
	gin.SetMode(gin.ReleaseMode)
	cfg.NodeID, cfg.TokenSecret = "t", []byte("x")
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	node, err := hubnode.New(cfg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	node.SetBackplane(loneBackplane{})
	register(node, node.AddHub("Test", "/hub"))
	if err := node.Start(); err != nil {
		tb.Fatal(err)
	}
	r := gin.New()
	node.Routes(r)
	srv := httptest.NewServer(r)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = node.Shutdown(ctx)
		srv.Close()
	})
	return node, srv.URL + "/hub"
}

// joinGroupMethod registers "Join", which puts the caller in group "g".
func joinGroupMethod(node *hubnode.Node, hub *hubnode.Hub) {
	hub.Method("Join", func(call *hubnode.Call) error {
		return node.AddToGroup(call.Context(), call.ConnectionID(), "g")
	})
}

// dialJoined opens a bare WebSocket to url (skipping negotiate), does the
// JSON handshake and invokes Join, and returns once Join completed, with
// whatever records came after its Completion in the same message.
func dialJoined(tb testing.TB, url string) (*websocket.Conn, []byte) {
	tb.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(url, "http"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ws.Close() })
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte("{\"protocol\":\"json\",\"version\":1}\x1e")); err != nil {
		tb.Fatal(err)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("{\"type\":1,\"invocationId\":\"1\",\"target\":\"Join\",\"arguments\":[]}\x1e")); err != nil {
		tb.Fatal(err)
	}
	var pending []byte
	for {
		if i := bytes.Index(pending, []byte(`"type":3`)); i >= 0 {
			rest := pending[i:]
			if j := bytes.IndexByte(rest, 0x1e); j >= 0 {
				_ = ws.SetReadDeadline(time.Time{})
				return ws, rest[j+1:]
			}
		}
		_, msg, err := ws.ReadMessage()
		if err != nil {
			tb.Fatal(err)
		}
		pending = append(pending, msg...)
	}
}
